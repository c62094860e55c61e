"""Data for training and evaluation.

sources.py (load_dataset, Dataset, Split): in-memory CIFAR-sized data;
order.py: example order as a pure function of (seed, epoch), eval batches with masks;
augment.py: jittable pad-crop-flip and normalisation; streaming.py: tf.data for ImageNet.
Import from the modules (the function `augment` would shadow its module here).
"""
