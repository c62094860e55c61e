"""resnet_jax/config.py (every field once, validate) and configs/cifar10.py (the recipes, CLI
overrides)."""

import dataclasses
import os
import re

import pytest
from absl import flags
from ml_collections import config_flags

from configs import cifar10, degradation, imagenet, imagenet_v1_5
from resnet_jax import config as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCUMENTS = ('README.md', 'docs/ARCHITECTURE.md', 'configs/cifar10.py', 'configs/imagenet.py',
             'configs/imagenet_v1_5.py', 'configs/degradation.py')
NOT_FIELDS = {'json', 'py', 'validate', 'FIELD'}  # config.json, config.py, config.validate


@pytest.mark.parametrize('get_config, pipeline', [
    (cifar10.get_config, 'in_memory'), (lambda: cifar10.get_config('resnet20,keras'), 'in_memory'),
    (lambda: degradation.get_config('plain56'), 'in_memory'),
    (imagenet.get_config, 'streaming'), (imagenet_v1_5.get_config, 'streaming'),
])
def test_each_config_file_has_exactly_the_fields_of_its_pipeline(get_config, pipeline):
  config = get_config()
  assert set(config) == set(config_lib.fields_of(pipeline))
  config_lib.validate(config)


def test_every_field_has_a_section_and_a_meaning():
  sections = {'model', 'data', 'optim', 'loop', *config_lib.PIPELINES}
  for name, field in config_lib.FIELDS.items():
    assert field.section in sections and field.doc, name


def test_identity_and_result_fields_derive_from_the_schema():
  assert config_lib.IDENTITY_FIELDS == ('model', 'dataset', 'val_split', 'seed')
  assert set(config_lib.IDENTITY_FIELDS) < set(config_lib.RESULT_FIELDS)
  assert {'batch_size', 'num_train_steps', 'learning_rate', 'lr_boundaries', 'warmup_steps',
          'weight_decay', 'train_subset', 'test_subset'} <= set(config_lib.RESULT_FIELDS)
  assert 'log_every_steps' not in config_lib.RESULT_FIELDS  # logging does not change the numbers


def test_documents_name_only_real_fields():
  """Every config.FIELD and --config.FIELD in the README, docs and config docstrings exists."""
  named = set()
  for document in DOCUMENTS:
    with open(os.path.join(ROOT, document)) as f:
      named |= set(re.findall(r'\bconfig\.([A-Za-z_]+)', f.read()))
  assert named - NOT_FIELDS, 'the documents name no field: the pattern is broken'
  assert sorted(named - NOT_FIELDS - set(config_lib.FIELDS)) == []


def test_new_config_refuses_unknown_and_missing_fields():
  with pytest.raises(ValueError,
                     match=r"fields \['scale_range'\] are not fields of the in_memory pipeline"):
    config_lib.new_config('in_memory', **cifar10._paper_recipe('resnet20'), scale_range=(1, 2))
  with pytest.raises(ValueError, match=r"the config file must choose \['model'"):
    config_lib.new_config('in_memory')


def _config(**overrides):
  config = cifar10.get_config('resnet8')
  config.update(overrides)
  return config


@pytest.mark.parametrize('overrides, message', [
    (dict(batch_size=0), r'^batch_size=0 must be > 0$'),
    (dict(steps_per_call=0), r'^steps_per_call=0 must be > 0$'),
    (dict(weight_decay=-1.0), r'^weight_decay=-1.0 must be >= 0$'),
    (dict(train_subset=-5), r'^train_subset=-5 must be >= 0$'),
    (dict(steps_per_call=3), r'^num_train_steps=64000 is not a multiple of steps_per_call=3'),
    (dict(dataset='mnist'), r"^dataset='mnist' is unknown; choose one of"),
    (dict(dataset='imagenet2012'), r"^dataset='imagenet2012' needs the streaming fields "
                                   r"\['augmentation'.*; start from configs/imagenet.py$"),
    (dict(normalization='zca'), r"^normalization='zca' is unknown"),
    (dict(normalization_std=(0.2, 0.0, 0.2)), r'^normalization_mean=.* the std ones > 0$'),
    (dict(normalization_mean=(0.5,)), r'^normalization_mean=\(0.5,\) .* must have 3 values'),
    (dict(lr_boundaries=(300, 200)), r'^lr_boundaries=\(300, 200\) must increase strictly'),
    (dict(warmup_steps=400, lr_boundaries=(300,)), r'start after warmup_steps=400$'),
])
def test_validate_names_the_field_and_the_fix(overrides, message):
  with pytest.raises(ValueError, match=message):
    config_lib.validate(_config(**overrides))


def test_validate_refuses_a_field_the_schema_lacks():
  config = _config()
  config.batch_sise = 32
  with pytest.raises(ValueError, match=r"unknown config fields \['batch_sise'\]"):
    config_lib.validate(config)


def test_validate_refuses_the_other_pipelines_fields():
  config = imagenet.get_config()
  config.test_subset = 100
  with pytest.raises(ValueError, match=r"^\['test_subset'\] are not fields of the streaming "
                                       r"pipeline \(dataset='imagenet2012'\); remove them$"):
    config_lib.validate(config)


@pytest.mark.parametrize('get_config, pipeline', [
    (cifar10.get_config, config_lib.InMemory), (imagenet.get_config, config_lib.Streaming)])
def test_run_splits_a_config_into_typed_sections_of_every_field(get_config, pipeline):
  config = get_config()
  run = config_lib.Run.of(config)
  assert isinstance(run.pipeline, pipeline)
  values = {}
  for part in (run.model, run.data, run.pipeline, run.optim, run.loop):
    values.update(dataclasses.asdict(part))
  assert values == {name: tuple(v) if isinstance(v, list) else v for name, v in config.items()}
  assert run.optim.lr_boundaries == tuple(config.lr_boundaries)


def test_a_section_names_the_field_it_lacks():
  with pytest.raises(ValueError, match=r"^the config lacks the Optim fields \['learning_rate'\]"):
    config_lib.section({'optimizer': 'sgd', 'weight_decay': 0.0, 'schedule': 'constant'},
                       config_lib.Optim)


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
