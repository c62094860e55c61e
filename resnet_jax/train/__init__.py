"""Training: state, optimisers, jitted steps, checkpoints, metrics and the loop.

Entry point: resnet_jax.train.loop.train_and_evaluate(config, workdir).
"""
