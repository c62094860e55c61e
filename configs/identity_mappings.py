"""The identity-mappings study on CIFAR-10 (He et al. 2016, Tables 1-3, Fig. 4, Fig. 6).

One run per config argument, with He 2016's CIFAR recipe (its appendix: that of He 2015 sec.
4.2): batch 128, SGD with momentum 0.9, weight decay 1e-4, lr 0.1 divided by 10 at 32k and 48k
iterations, 64k in all, lr 0.01 for the first 400 iterations of the networks of 110 layers and
more (all of the paper's), 4-pixel padding + random 32x32 crop + horizontal flip, per-pixel mean
subtraction, trained on all 50k training images and tested on the 10k test images. The networks
are the registry's He 2016 names (resnet_jax/models/registry.py); experiments/identity_mappings.py
runs them all (W = DIR/<model>/seed0):

  python -m resnet_jax.main --config=configs/identity_mappings.py:resnet110_v1 --workdir=W
  python -m resnet_jax.main --config=configs/identity_mappings.py:resnet110_v2 --workdir=W

Expected CIFAR-10 test error (%), resnet_jax/study/papers.py: Table 2 (ResNet-110 / ResNet-164),
original unit 6.61 / 5.93, BN after addition 8.17 / 6.50, ReLU before addition 7.84 / 6.14,
ReLU-only pre-activation 6.71 / 5.91, full pre-activation 6.37 / 5.46; Table 1 (ResNet-110)
constant scaling 0.5 on both 12.35 (0.5 on the shortcut only: fail, above 20%), exclusive gating
b_g = -6 8.70, shortcut-only gating b_g = 0 12.86 and -6 6.91, 1x1 conv shortcut 12.22, dropout
shortcut fail. The paper's point: the identity shortcut with no scaling, gate or dropout trains
best, and moving BN and ReLU before the weights (pre-activation) beats every other placement.
"""

import ml_collections

from configs import cifar10
from resnet_jax.study.runs import check_cifar


def get_config(model: str = 'resnet110_v2') -> ml_collections.ConfigDict:
  """configs/cifar10.py's recipe for the CIFAR network `model` on all the training images."""
  check_cifar(model)
  return cifar10.get_config(model)
