"""The signals that ask a resnet_jax process to stop: a training run checkpoints and exits
(resnet_jax.train.loop), a study runner stops its runs, each to resume on the next call."""

import signal

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
