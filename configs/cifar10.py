"""CIFAR-10 with the recipe of He et al. 2015, sec. 4.2 (the reference config).

    python -m resnet_jax.main --config=configs/cifar10.py --workdir=DIR
    python -m resnet_jax.main --config=configs/cifar10.py:resnet56 --workdir=DIR
    python -m resnet_jax.main --config=configs/cifar10.py:resnet20,keras --workdir=DIR

The argument is MODEL[,RECIPE]; any field can be overridden, e.g.
--config.num_train_steps=1000 --config.dataset=image_folder --config.data_dir=/data/cifar10
(JPEG/PNG class folders data_dir/{train,test}/<class>/...; 'cifar10' reads tensorflow-datasets).

Recipe 'paper' (default), sec. 4.2: batch 128, SGD with momentum 0.9, weight decay 1e-4,
lr 0.1 divided by 10 at 32k and 48k iterations, 64k iterations in all; 4-pixel padding,
random 32x32 crop and horizontal flip; per-pixel mean subtracted. ResNet-110 and deeper
warm up at lr 0.01 for the first 400 iterations: He 2015 sec. 4.2 "until the training error is
below 80% (about 400 iterations)", for ResNet-110 and ResNet-1202 alike (sec. 4.2, Table 6), and
He 2016 (appendix) "for all CIFAR experiments ... 0.01 at the beginning 400 iterations",
ResNet-164 and ResNet-1001 among them. We train on all 50k training images
(val_split=0) as for Table 6; --config.val_split=5000 gives the paper's 45k/5k split used
for its analysis. Expected test error at the end (Table 6, original CIFAR-10):
resnet20 8.75%, resnet32 7.51%, resnet44 7.17%, resnet56 6.97%, resnet110 6.43%
(best of 5; 6.61 +- 0.16).

Recipe 'cosine': the same with cosine decay to 0 over the run (after a 400-step linear
warm-up from 0).

Recipe 'keras': the popular Keras CIFAR-10 ResNet example (keras-team/keras,
examples/cifar10_resnet.py): Adam lr 1e-3, batch 32, 200 epochs, lr x0.1 after 81, 121 and
161 epochs and x0.5 after 181 (its `epoch > 80` etc. on 0-based epochs), times
ReduceLROnPlateau(factor=sqrt(0.1), patience=5, min_lr=0.5e-6) on the loss evaluated every
epoch (the test loss, as the example validates on the test set); its L2 1e-4 on kernels is a
gradient term 2e-4 * w (here on every parameter). The example reports about 92% test accuracy
for ResNet20 v1 (projection shortcuts: resnet20_b here) after 200 epochs.
"""

import math

import ml_collections

from resnet_jax.config import new_config

RECIPES = ('paper', 'cosine', 'keras')
TRAIN_EXAMPLES = 50_000
WARMUP_DEPTH = 110  # He 2015 sec. 4.2: "In this case [110 layers] ... we use 0.01 to warm up"


def get_config(arg: str = 'resnet20') -> ml_collections.ConfigDict:
  """The config for MODEL[,RECIPE] (see the module docstring)."""
  model, _, recipe = arg.partition(',')
  recipe = recipe or 'paper'
  if recipe not in RECIPES:
    raise ValueError(f'recipe {recipe!r} is unknown; use MODEL[,RECIPE] with RECIPE in {RECIPES}')
  values = _paper_recipe(model or 'resnet20')
  if recipe == 'cosine':
    values.update(schedule='cosine', lr_boundaries=(), warmup_steps=400, warmup_learning_rate=0.0)
  if recipe == 'keras':
    values.update(_keras_recipe())
  return new_config('in_memory', **values)


def _depth(model: str) -> int:
  digits = ''.join(c for c in model.split('_')[0] if c.isdigit())
  return int(digits) if digits else 0


def _paper_recipe(model: str) -> dict:
  """He 2015 sec. 4.2; the other fields keep resnet_jax.config's defaults."""
  warmup = _depth(model) >= WARMUP_DEPTH
  return dict(
      model=model,
      dataset='cifar10',
      batch_size=128,
      eval_batch_size=1024,
      num_train_steps=64_000,
      eval_every_steps=1000,
      checkpoint_every_steps=4000,
      log_every_steps=100,
      optimizer='sgd',
      learning_rate=0.1,
      momentum=0.9,
      weight_decay=1e-4,
      schedule='piecewise',
      lr_boundaries=(32_000, 48_000),
      lr_decay_factor=0.1,
      warmup_steps=400 if warmup else 0,
      warmup_learning_rate=0.01,
  )


def _keras_recipe() -> dict:
  steps_per_epoch = TRAIN_EXAMPLES // 32
  return dict(
      batch_size=32,
      num_train_steps=200 * steps_per_epoch,
      eval_every_steps=steps_per_epoch,
      log_every_steps=steps_per_epoch // 2,
      checkpoint_every_steps=10 * steps_per_epoch,
      optimizer='adam',
      learning_rate=1e-3,
      weight_decay=2e-4,
      schedule='plateau',
      lr_boundaries=tuple(e * steps_per_epoch for e in (81, 121, 161, 181)),
      lr_decay_factor=(0.1, 0.1, 0.1, 0.5),
      warmup_steps=0,
      plateau_factor=math.sqrt(0.1),
      plateau_patience=5,
      plateau_min_lr=0.5e-6,
  )
