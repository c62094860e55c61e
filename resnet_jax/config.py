"""Every config field once, in its section: its meaning, default and checks.

The sections are frozen dataclasses (Model, Data, InMemory or Streaming, Optim, Loop); FIELDS,
IDENTITY_FIELDS (checked against a workdir's config.json) and RESULT_FIELDS (checked against a
study folder's runs) are derived from them. configs/*.py choose values with
new_config(pipeline, **values), a flat ConfigDict, so that every field is a --config.FIELD flag.
validate(config) holds the checks that need neither jax nor data; main (through the loop), the
study runner and the tests call it. Run.of(config) splits a config into its sections at one
place, resnet_jax.train.loop, and each module takes the sections it reads.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

import ml_collections

from resnet_jax.data.names import DATASETS, STREAMING_DATASETS

REQUIRED = object()  # a value every config file must choose
PIPELINES = ('in_memory', 'streaming')
NORMALIZATIONS = ('per_pixel_mean', 'per_channel', 'given')
LAYOUTS = ('unrolled', 'stacked')  # of a network's variables (resnet_jax.models.layout)
SCAN_CHOICES = ('auto', *LAYOUTS)  # scan_blocks
# ImageNet's per-channel statistics of RGB in 0..1 (torchvision's, fb.resnet.torch's): the streamed
# pipeline's mean, and the inputs released PyTorch weights (CIFAR ones too) were trained on.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class Field:
  """One config field as FIELDS lists it: its section and the metadata of `field()`."""

  section: str
  doc: str
  default: Any = REQUIRED
  # 'positive', 'non_negative' or 'interval' (positive, a multiple of steps_per_call)
  check: str = ''
  identity: bool = False  # names the run: a workdir holds one value (train.checkpoint)
  result: bool = False  # changes the run's numbers: a study folder holds one value (study.runner)


def field(doc: str, default: Any = REQUIRED, check: str = '', identity: bool = False,
          result: bool = False) -> Any:
  """A section's field with its meaning and checks; without a default every config file must
  choose it."""
  meta = {'doc': doc, 'check': check, 'identity': identity, 'result': result}
  if default is REQUIRED:
    return dataclasses.field(metadata=meta)
  return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Model:
  """The network and its numerics (resnet_jax.models, train.state)."""

  model: str = field('network name (resnet_jax.models.get_model)', identity=True)
  half_precision: bool = field('bfloat16 activations (float32 parameters)', False)
  zero_init_residual: bool = field("zero scale of each residual branch's last BN", False)
  scan_blocks: str = field("variables' layout: 'auto' (stacked for resnet1202 and resnet1001_*), "
                           "'stacked' (blocks 2..n of a stage scanned) or 'unrolled' "
                           '(resnet_jax.models.layout)', 'auto')
  remat_blocks: bool = field("rematerialise each block's activations in the backward pass (less "
                             'memory, about one more forward pass)', False)
  init_from: str = field('a workdir (its best, else latest checkpoint) or a PyTorch .pt/.th file: '
                         'initial params and BN statistics, for fine-tuning', '')


def eval_splits(val_split: int) -> tuple[str, ...]:
  """('val', 'test') where val_split holds training examples out for validation, else ('test',).
  """
  return ('val', 'test') if val_split else ('test',)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Data:
  """What every pipeline reads: the data set, its splits, batches and normalisation."""

  dataset: str = field(f'one of {DATASETS}', identity=True)
  data_dir: str = field('folder of the data (tfds data_dir, or the image folder)', '')
  tfds_manual_dir: str = field('folder with the official archive, for tfds offline', '')
  val_split: int = field('train examples held out for validation (0: none)', 0, 'non_negative',
                         identity=True)
  normalization: str = field(f"one of {NORMALIZATIONS}; 'given': normalization_mean and _std "
                             '(e.g. for imported PyTorch weights)', 'per_pixel_mean')
  normalization_mean: tuple[float, ...] = field(
      "normalization='given': per-channel mean, RGB in 0..1", IMAGENET_MEAN)
  normalization_std: tuple[float, ...] = field(
      "normalization='given': per-channel std, RGB in 0..1", IMAGENET_STD)
  augment: bool = field('train-time augmentation', True)
  image_size: int = field("image side: synthetic data's, the streamed crop's", 32)
  batch_size: int = field('global train batch', check='positive', result=True)
  eval_batch_size: int = field('global eval batch (padded and masked)', check='positive')

  @property
  def eval_splits(self) -> tuple[str, ...]:
    """The splits a run evaluates; the first ranks its checkpoints and drives the plateau
    schedule."""
    return eval_splits(self.val_split)


@dataclasses.dataclass(frozen=True, kw_only=True)
class InMemory:
  """CIFAR-sized data held in host memory (resnet_jax.data.sources)."""

  train_subset: int = field('0 = all; N = a fixed random N of the train split', 0, 'non_negative',
                            result=True)
  test_subset: int = field('0 = all; N = a fixed random N of the test split', 0, 'non_negative',
                           result=True)
  synthetic_size: int = field("examples of dataset='synthetic'", 1024, 'positive')
  num_classes: int = field("classes of dataset='synthetic' (real data bring theirs)", 10,
                           'positive')


@dataclasses.dataclass(frozen=True, kw_only=True)
class Streaming:
  """ImageNet-sized data streamed by tf.data (resnet_jax.data.streaming)."""

  augmentation: str = field("'paper' (He 2015 sec. 3.4) or 'inception'", 'paper')
  scale_range: tuple[int, int] = field("shorter side range of 'paper' scale augmentation",
                                       (256, 480))
  eval_resize_size: int = field('shorter side before the centre crop', 256, 'positive')
  pca_lighting_std: float = field('AlexNet colour augmentation std (0: off)', 0.1, 'non_negative')
  shuffle_buffer_size: int = field('tf.data shuffle buffer', 16_384, 'positive')


@dataclasses.dataclass(frozen=True, kw_only=True)
class Optim:
  """The optimizer, its schedule and the loss (resnet_jax.train.optim, train.steps)."""

  optimizer: str = field("'sgd' or 'adam'")
  learning_rate: float = field('peak learning rate', check='positive', result=True)
  momentum: float = field('SGD momentum', 0.9, 'non_negative')
  nesterov: bool = field('Nesterov momentum', False)
  weight_decay: float = field('L2 gradient term on every parameter', check='non_negative',
                              result=True)
  schedule: str = field("'piecewise', 'cosine' or 'plateau'")
  lr_boundaries: tuple[int, ...] = field('steps of the piecewise drops', (), result=True)
  lr_decay_factor: float | tuple[float, ...] = field(
      'factor at each boundary (or one per boundary)', 0.1)
  warmup_steps: int = field('steps at warmup_learning_rate first', 0, 'non_negative', result=True)
  warmup_learning_rate: float = field('learning rate of the warm-up', 0.0, 'non_negative')
  plateau_factor: float = field("'plateau': factor on a plateau of the eval loss", 0.1)
  plateau_patience: int = field("'plateau': evaluations without improvement", 5)
  plateau_min_lr: float = field("'plateau': lowest learning rate", 0.0)
  plateau_min_delta: float = field("'plateau': least improvement that counts", 1e-4)
  plateau_cooldown: int = field("'plateau': evaluations to wait after a drop", 0)
  label_smoothing: float = field('label smoothing of the cross-entropy', 0.0, 'non_negative')


@dataclasses.dataclass(frozen=True, kw_only=True)
class Loop:
  """Steps, intervals, seed and processes (resnet_jax.train.loop)."""

  num_train_steps: int = field('train steps in all', check='interval', result=True)
  eval_every_steps: int = field('steps between evaluations', check='interval')
  checkpoint_every_steps: int = field('steps between checkpoints', check='interval')
  log_every_steps: int = field('steps between metrics rows', check='interval')
  keep_checkpoints: int = field('checkpoints kept', 2, 'positive')
  seed: int = field('initialisation, data order and augmentation', 0, 'non_negative',
                    identity=True)
  steps_per_call: int = field('train steps fused in one compiled call', 1, 'positive')
  log_grad_norms: bool = field('per-layer gradient norms in the metrics', False)
  distributed: bool = field('jax.distributed.initialize() first (several hosts)', False)


SECTIONS = {'model': Model, 'data': Data, 'in_memory': InMemory, 'streaming': Streaming,
            'optim': Optim, 'loop': Loop}


def _listed(section: str, spec: dataclasses.Field) -> Field:
  default = REQUIRED if spec.default is dataclasses.MISSING else spec.default
  return Field(section, default=default, **spec.metadata)


FIELDS = {spec.name: _listed(section, spec)
          for section, kind in SECTIONS.items() for spec in dataclasses.fields(kind)}
IDENTITY_FIELDS = tuple(name for name, field in FIELDS.items() if field.identity)
RESULT_FIELDS = tuple(name for name, field in FIELDS.items() if field.identity or field.result)


@dataclasses.dataclass(frozen=True)
class Run:
  """A config split into its sections, once (Run.of): each part of the code takes the sections
  it reads. `pipeline` is the in_memory or the streaming section, after the data set."""

  model: Model
  data: Data
  pipeline: InMemory | Streaming
  optim: Optim
  loop: Loop

  @classmethod
  def of(cls, config) -> Run:
    """The sections of a flat config (a validated one, or a saved one through with_defaults)."""
    pipeline = SECTIONS[pipeline_of(config)]
    return cls(model=section(config, Model), data=section(config, Data),
               pipeline=section(config, pipeline), optim=section(config, Optim),
               loop=section(config, Loop))


S = TypeVar('S')


def section(config, kind: type[S]) -> S:
  """The `kind` section (Model, Data, ...) of a flat config; lists become tuples, absent fields
  take their defaults, and absent fields without one are a ValueError."""
  specs = dataclasses.fields(kind)
  missing = [spec.name for spec in specs
             if spec.name not in config and spec.default is dataclasses.MISSING]
  if missing:
    raise ValueError(f'the config lacks the {kind.__name__} fields {missing}; start from a file '
                     'of configs/')
  values = {spec.name: config[spec.name] for spec in specs if spec.name in config}
  return kind(**{name: tuple(v) if isinstance(v, list) else v for name, v in values.items()})


def fields_of(pipeline: str) -> tuple[str, ...]:
  """The fields of a config for `pipeline`: every section but the other pipeline's."""
  if pipeline not in PIPELINES:
    raise ValueError(f'unknown pipeline {pipeline!r}: use one of {PIPELINES}')
  return tuple(name for name, field in FIELDS.items()
               if field.section not in PIPELINES or field.section == pipeline)


def new_config(pipeline: str, **values) -> ml_collections.ConfigDict:
  """A config of the fields of `pipeline`: the defaults, then `values`; a field without a default
  or a value, or a value for a field not in the pipeline, is a ValueError."""
  names = fields_of(pipeline)
  unknown = sorted(set(values) - set(names))
  if unknown:
    raise ValueError(f'fields {unknown} are not fields of the {pipeline} pipeline '
                     '(resnet_jax.config)')
  config = {name: values.get(name, FIELDS[name].default) for name in names}
  missing = [name for name, value in config.items() if value is REQUIRED]
  if missing:
    raise ValueError(f'the config file must choose {missing}')
  return ml_collections.ConfigDict(config)


def pipeline_of(config) -> str:
  return 'streaming' if config.get('dataset') in STREAMING_DATASETS else 'in_memory'


def with_defaults(saved: dict) -> ml_collections.ConfigDict:
  """A saved config (a workdir's config.json) with the defaults of fields added since it was
  written; validate() it as any other."""
  pipeline = pipeline_of(saved)
  added = {name: FIELDS[name].default for name in fields_of(pipeline)
           if name not in saved and FIELDS[name].default is not REQUIRED}
  return ml_collections.ConfigDict({**saved, **added})


def validate(config) -> None:
  """Every check of single fields and of their relations that needs neither data nor devices:
  one-line ValueError naming the field and the fix."""
  unknown = sorted(set(config) - set(FIELDS))
  if unknown:
    raise ValueError(f'unknown config fields {unknown}: see resnet_jax/config.py')
  if config.get('dataset') not in DATASETS:
    raise ValueError(f'dataset={config.get("dataset")!r} is unknown; choose one of {DATASETS}')
  pipeline = pipeline_of(config)
  missing = [name for name in fields_of(pipeline) if name not in config]
  if missing:
    start = 'configs/imagenet.py' if pipeline == 'streaming' else 'configs/cifar10.py'
    raise ValueError(f'dataset={config.dataset!r} needs the {pipeline} fields {missing}; start '
                     f'from {start}')
  foreign = sorted(set(config) - set(fields_of(pipeline)))
  if foreign:
    raise ValueError(f'{foreign} are not fields of the {pipeline} pipeline (dataset='
                     f'{config.dataset!r}); remove them')
  checks = {name: FIELDS[name].check for name in fields_of(pipeline)}
  for name, check in checks.items():
    if check in ('positive', 'interval') and not config[name] > 0:
      raise ValueError(f'{name}={config[name]} must be > 0')
    if check == 'non_negative' and not config[name] >= 0:
      raise ValueError(f'{name}={config[name]} must be >= 0')
  for name in (name for name, check in checks.items() if check == 'interval'):
    if config[name] % config.steps_per_call:
      raise ValueError(f'{name}={config[name]} is not a multiple of steps_per_call='
                       f'{config.steps_per_call}; change either')
  if config.scan_blocks not in SCAN_CHOICES:
    raise ValueError(f'scan_blocks={config.scan_blocks!r} is unknown; choose one of '
                     f'{SCAN_CHOICES}')
  if config.normalization not in NORMALIZATIONS:
    raise ValueError(f'normalization={config.normalization!r} is unknown; choose one of '
                     f'{NORMALIZATIONS}')
  given = (config.normalization_mean, config.normalization_std)
  if any(len(values) != 3 for values in given) or not all(s > 0 for s in given[1]):
    raise ValueError(f'normalization_mean={tuple(given[0])} and normalization_std='
                     f'{tuple(given[1])} must have 3 values (RGB), the std ones > 0')
  boundaries = list(config.lr_boundaries) if config.schedule in ('piecewise', 'plateau') else []
  if boundaries != sorted(set(boundaries)) or (boundaries and boundaries[0] <= config.warmup_steps):
    raise ValueError(f'lr_boundaries={tuple(boundaries)} must increase strictly and start after '
                     f'warmup_steps={config.warmup_steps}')
