"""The tiny run the training tests start from: resnet8 on 64 synthetic 8x8 images (a few
milliseconds a step on a CPU), 12 steps with the lr drop at 6, logged, evaluated and saved every 4.
Tests override the fields they are about, in the config or as --config.FIELD=VALUE flags."""

import ml_collections

from configs import cifar10
from resnet_jax.config import Optim, section
from resnet_jax.train import optim

MODEL = 'resnet8'
TINY = {'dataset': 'synthetic', 'synthetic_size': 64, 'image_size': 8, 'batch_size': 8,
        'eval_batch_size': 16, 'num_train_steps': 12, 'log_every_steps': 4, 'eval_every_steps': 4,
        'checkpoint_every_steps': 4, 'lr_boundaries': (6,)}


def tiny_config(**overrides) -> ml_collections.ConfigDict:
  """configs/cifar10.py's recipe for MODEL with TINY, then `overrides`."""
  config = cifar10.get_config(MODEL)
  config.update({**TINY, **overrides})
  return config


def optimizer_of(config) -> optim.Optimizer:
  """The optimizer of a flat config, as the loop makes it: its Optim section and step count."""
  return optim.create_optimizer(section(config, Optim), config.num_train_steps)
