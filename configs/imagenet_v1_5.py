"""ImageNet with a modern ResNet-50 v1.5 recipe (stride on the 3x3 convolution, as torchvision).

    python -m resnet_jax.main --config=configs/imagenet_v1_5.py --workdir=DIR \\
        [--config.data_dir=/data/tensorflow_datasets] [--config.batch_size=256]

The argument names the model (default resnet50_v1_5). Recipe (Goyal et al. 2017, "Accurate,
Large Minibatch SGD"; the Flax and NVIDIA ResNet-50 v1.5 examples): batch 1024, SGD with
momentum 0.9, weight decay 1e-4, lr 0.1 x batch/256 reached by a linear warm-up over 5 epochs
and then cosine decay to 0 over 90 epochs in all, label smoothing 0.1, the last BN of each
block initialised to zero, random-resized-crop augmentation (8%-100% of the area, aspect 3/4 to
4/3, to 224, flip), per-channel mean/std normalisation, bfloat16 compute. The learning rate,
warm-up and run length follow --config.batch_size. Data as configs/imagenet.py.

Expected: about 76.5-77% top-1 accuracy (23-23.5% "test_error", ~6.5% "test_top5_error") on
the ImageNet validation set with single centre-crop (224 of 256) testing.
"""

import ml_collections

from configs import imagenet
from resnet_jax.config import new_config

EPOCHS = 90
WARMUP_EPOCHS = 5


def get_config(model: str = 'resnet50_v1_5') -> ml_collections.ConfigDict:
  """The v1.5 recipe for `model` (see the module docstring)."""
  batch_size = ml_collections.FieldReference(1024)
  steps_per_epoch = imagenet.TRAIN_EXAMPLES // batch_size
  return new_config('streaming', **{
      **imagenet.get_config('resnet50').to_dict(),
      'model': model,
      'augmentation': 'inception',
      'normalization': 'per_channel',
      'pca_lighting_std': 0.0,
      'half_precision': True,
      'label_smoothing': 0.1,
      'zero_init_residual': True,
      'schedule': 'cosine',
      'lr_boundaries': (),
      'warmup_learning_rate': 0.0,
      'batch_size': batch_size,
      'eval_batch_size': 1024,
      'learning_rate': 0.1 / 256 * batch_size,
      'num_train_steps': EPOCHS * steps_per_epoch,
      'warmup_steps': WARMUP_EPOCHS * steps_per_epoch,
      'eval_every_steps': steps_per_epoch,
      'checkpoint_every_steps': steps_per_epoch,
      'log_every_steps': steps_per_epoch,
  })
