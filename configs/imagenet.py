"""ImageNet (ILSVRC 2012) with the recipe of He et al. 2015, sec. 3.4.

    python -m resnet_jax.main --config=configs/imagenet.py:resnet34 --workdir=DIR \\
        [--config.data_dir=/data/tensorflow_datasets]

MODEL: plain18, plain34, resnet18, resnet34 (Table 2), resnet50, resnet101, resnet152 (Table 3).
Data: tfds imagenet2012 from its manual download (<data_dir>/downloads/manual or
--config.tfds_manual_dir; the first single-process run prepares it: hours, ~150 GB), or
--config.dataset=image_folder_stream --config.data_dir=DIR, or imagenette for smoke runs.

Recipe: SGD, batch 256, momentum 0.9, weight decay 1e-4, lr 0.1 divided by 10 "when the error
plateaus", 60e4 iterations. The paper gives no drop steps: 'piecewise' at 150k, 300k, 450k (about
30 epochs each; --config.schedule=plateau --config.lr_boundaries='()' follows the words, down to
1e-4). Scale augmentation [256, 480], 224 crops, flip, mean subtraction (the per-channel mean
stands in for the per-pixel mean), AlexNet PCA colour augmentation. Float32.

Expected top-1 error (10-crop): Table 2 plain18 27.94, plain34 28.54, resnet18 27.88, resnet34
25.03 (option A); Table 3 (option B, ours) resnet34 24.52, resnet50 22.85, resnet101 21.75,
resnet152 21.43. metrics.jsonl gives the single centre crop, about 1.5-2 points higher. The
result to look for is plain-34 above plain-18 (the degradation).
"""

import ml_collections

from resnet_jax.config import new_config

MODELS = ('plain18', 'plain34', 'resnet18', 'resnet34', 'resnet50', 'resnet101', 'resnet152')
TRAIN_EXAMPLES = 1_281_167  # ILSVRC 2012 training images
BATCH_SIZE = 256
STEPS_PER_EPOCH = TRAIN_EXAMPLES // BATCH_SIZE


def get_config(model: str = 'resnet34') -> ml_collections.ConfigDict:
  """The paper's ImageNet recipe for `model` (see the module docstring)."""
  if model not in MODELS:
    raise ValueError(f'model {model!r} is not in the ImageNet study; choose from {MODELS}')
  return new_config(
      'streaming',
      model=model,
      dataset='imagenet2012',
      augmentation='paper',
      image_size=224,
      scale_range=(256, 480),
      eval_resize_size=256,
      pca_lighting_std=0.1,
      shuffle_buffer_size=16_384,
      batch_size=BATCH_SIZE,
      eval_batch_size=BATCH_SIZE,
      num_train_steps=600_000,
      eval_every_steps=STEPS_PER_EPOCH,
      checkpoint_every_steps=STEPS_PER_EPOCH,
      log_every_steps=STEPS_PER_EPOCH // 12,
      optimizer='sgd',
      learning_rate=0.1,
      momentum=0.9,
      weight_decay=1e-4,
      schedule='piecewise',
      lr_boundaries=(150_000, 300_000, 450_000),
      lr_decay_factor=0.1,
      plateau_min_lr=1e-4,
  )
