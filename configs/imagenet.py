"""ImageNet (ILSVRC 2012) with the recipe of He et al. 2015, sec. 3.4.

    python -m resnet_jax.main --config=configs/imagenet.py:resnet34 --workdir=DIR \\
        [--config.data_dir=/data/tensorflow_datasets]

The argument is one of plain18, plain34, resnet18, resnet34 (the Table 2 study), resnet50,
resnet101, resnet152 (Table 3). The data is tfds imagenet2012 from its manual download
(ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in <data_dir>/downloads/manual, or
--config.tfds_manual_dir; data_dir defaults to tfds' own, ~/tensorflow_datasets); the first
single-process run prepares it (hours, ~150 GB).
--config.dataset=image_folder_stream --config.data_dir=DIR reads DIR/{train,val}/<class>/*
instead, and --config.dataset=imagenette a 10-class subset for smoke runs.

Recipe (sec. 3.4): SGD with batch 256, momentum 0.9, weight decay 1e-4, no dropout; lr 0.1
divided by 10 when the error plateaus, up to 60e4 iterations. The paper gives no iteration
counts for the divisions; we use schedule 'piecewise' at 150k, 300k and 450k iterations (about
30 epochs of 5,004 steps at each rate; deterministic, so resumed runs match), then train on to
600k. (--config.schedule=plateau --config.lr_boundaries='()' applies the words literally:
lr / 10 whenever the test loss has not improved for plateau_patience evaluations (epochs), down
to 1e-4.) Scale augmentation: the shorter side resized to a random size in [256, 480], a random
224 x 224 crop, horizontal flip, mean subtraction (the ImageNet per-channel mean stands in for
the per-pixel mean), the PCA colour augmentation of AlexNet [21]. Float32, as the paper.

Expected top-1 validation error (Table 2, 10-crop testing): plain18 27.94%, plain34 28.54%,
resnet18 27.88%, resnet34 25.03% -- those ResNets use option A shortcuts; ours use option B
(projection where the shape changes), for which Table 3 gives resnet34 24.52% (top-5 7.46%),
resnet50 22.85% (6.71%), resnet101 21.75% (6.05%), resnet152 21.43% (5.71%). metrics.jsonl
reports single centre-crop (224 of 256) errors "test_error" / "test_top5_error", which run
about 1.5-2 points above 10-crop: e.g. fb.resnet.torch's single-crop ResNet-18/34/50 reach
30.43% / 26.73% / 24.01%. The plain-34 > plain-18 error gap (the degradation) is the result
to look for.
"""

import ml_collections

from configs import cifar10

MODELS = ('plain18', 'plain34', 'resnet18', 'resnet34', 'resnet50', 'resnet101', 'resnet152')
TRAIN_EXAMPLES = 1_281_167  # ILSVRC 2012 training images
BATCH_SIZE = 256
STEPS_PER_EPOCH = TRAIN_EXAMPLES // BATCH_SIZE


def get_config(model: str = 'resnet34') -> ml_collections.ConfigDict:
  """The paper's ImageNet recipe for `model` (see the module docstring)."""
  if model not in MODELS:
    raise ValueError(f'model {model!r} is not in the ImageNet study; choose from {MODELS}')
  config = cifar10.get_config(model).to_dict()
  config.update(
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
      lr_boundaries=(150_000, 300_000, 450_000),
      warmup_steps=0,
      warmup_learning_rate=0.0,
      plateau_factor=0.1,
      plateau_min_lr=1e-4,
  )
  return ml_collections.ConfigDict(config)
