"""configs/cifar10.py: the fields of docs/ARCHITECTURE.md, the recipes and CLI overrides."""

import os

import pytest
from absl import flags
from ml_collections import config_flags

from configs import cifar10

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The config fields listed in docs/ARCHITECTURE.md ("plateau_* fields" aside), plus
# tfds_manual_dir and num_classes (read by resnet_jax/data/sources.py).
ARCHITECTURE_FIELDS = {
    'model', 'dataset', 'data_dir', 'val_split', 'train_subset', 'test_subset', 'normalization',
    'augment', 'batch_size', 'eval_batch_size', 'num_train_steps', 'eval_every_steps',
    'checkpoint_every_steps', 'log_every_steps', 'keep_checkpoints', 'seed', 'half_precision',
    'optimizer', 'learning_rate', 'momentum', 'nesterov', 'weight_decay', 'schedule',
    'lr_boundaries', 'lr_decay_factor', 'warmup_steps', 'warmup_learning_rate', 'label_smoothing',
    'zero_init_residual', 'steps_per_call', 'log_grad_norms', 'distributed', 'synthetic_size',
    'image_size', 'tfds_manual_dir', 'num_classes'}


def test_fields_are_those_of_the_architecture_document():
  fields = set(cifar10.get_config())
  assert ARCHITECTURE_FIELDS <= fields
  assert all(name.startswith('plateau_') for name in fields - ARCHITECTURE_FIELDS)
  assert set(cifar10.get_config('resnet20,keras')) == fields


def test_default_is_the_paper_recipe():
  """He 2015 sec. 4.2."""
  config = cifar10.get_config()
  assert (config.model, config.batch_size, config.num_train_steps) == ('resnet20', 128, 64_000)
  assert (config.optimizer, config.learning_rate, config.momentum) == ('sgd', 0.1, 0.9)
  assert (config.weight_decay, config.schedule) == (1e-4, 'piecewise')
  assert (tuple(config.lr_boundaries), config.lr_decay_factor) == ((32_000, 48_000), 0.1)
  assert (config.normalization, config.augment, config.warmup_steps) == (
      'per_pixel_mean', True, 0)


def test_argument_selects_model_and_recipe():
  assert cifar10.get_config('resnet56').model == 'resnet56'
  assert cifar10.get_config('resnet56').warmup_steps == 0
  assert (cifar10.get_config('resnet110').warmup_steps,
          cifar10.get_config('resnet110').warmup_learning_rate) == (400, 0.01)
  cosine = cifar10.get_config('resnet32,cosine')
  assert (cosine.model, cosine.schedule) == ('resnet32', 'cosine')
  keras = cifar10.get_config('resnet20_b,keras')
  assert (keras.optimizer, keras.learning_rate, keras.schedule, keras.batch_size) == (
      'adam', 1e-3, 'plateau', 32)
  assert keras.plateau_factor == pytest.approx(0.1 ** 0.5)
  assert (keras.plateau_patience, keras.plateau_min_lr) == (5, 0.5e-6)
  with pytest.raises(ValueError, match="recipe 'sgdr' is unknown"):
    cifar10.get_config('resnet20,sgdr')


def test_command_line_overrides(monkeypatch):
  monkeypatch.chdir(ROOT)
  argv = ['main', '--config=configs/cifar10.py:resnet56', '--config.batch_size=64',
          '--config.lr_boundaries=(100,200)', '--config.half_precision=True']
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', flag_values=flag_values, sys_argv=argv)
  flag_values(argv)
  config = flag_values.config
  assert (config.model, config.batch_size, config.half_precision) == ('resnet56', 64, True)
  assert tuple(config.lr_boundaries) == (100, 200)
