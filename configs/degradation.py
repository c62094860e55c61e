"""The degradation study on CIFAR-10 (He et al. 2015, sec. 4.2, Fig. 1, Fig. 6, Table 6).

One run per config argument, with the paper's recipe of configs/cifar10.py (batch 128, 64k
iterations, lr 0.1 divided by 10 at 32k and 48k, weight decay 1e-4, momentum 0.9, option-A
(identity, zero-padding) shortcuts, 4-pixel padding + random 32x32 crop + horizontal flip,
per-pixel mean subtraction, and for ResNet-110 a warm-up at lr 0.01 for the first 400
iterations) on the 45k/5k train/val split with which sec. 4.2 chose that schedule. plain56 and
resnet56 also log per-layer gradient norms (the gradient-norm figure).

Commands (W = DIR/<model>/seed0, the layout of experiments/degradation.py, which runs them all)
and the CIFAR-10 test error (%) of He et al. 2015 Table 6:

  python -m resnet_jax.main --config=configs/degradation.py:plain20 --workdir=W     # -
  python -m resnet_jax.main --config=configs/degradation.py:plain32 --workdir=W     # -
  python -m resnet_jax.main --config=configs/degradation.py:plain44 --workdir=W     # -
  python -m resnet_jax.main --config=configs/degradation.py:plain56 --workdir=W     # -
  python -m resnet_jax.main --config=configs/degradation.py:resnet20 --workdir=W    # 8.75
  python -m resnet_jax.main --config=configs/degradation.py:resnet32 --workdir=W    # 7.51
  python -m resnet_jax.main --config=configs/degradation.py:resnet44 --workdir=W    # 7.17
  python -m resnet_jax.main --config=configs/degradation.py:resnet56 --workdir=W    # 6.97
  python -m resnet_jax.main --config=configs/degradation.py:resnet110 --workdir=W   # 6.43

ResNet-110's 6.43 is the best of 5 runs (6.61 +- 0.16 over the 5). The plain networks have no
Table 6 number; Fig. 6 shows plain-56's training error above plain-20's throughout training
(the degradation problem), and Fig. 1 the same for test error. Table 6 trained on all 50k
images (configs/cifar10.py's default), so ours, on 45k, may come out slightly higher. Any other
plain/resnet depth 6n+2 is accepted too (e.g. resnet8, for tests).

On a JPEG re-encoding of CIFAR-10 (dataset=image_folder; e.g. a copy whose pixels are off by about
6/255 on average), expect each ResNet about 1-2.5 points above Table 6: JPEG at 32x32 blurs the
fine edges and texture that tell close classes (cat/dog, deer/horse) apart, for training and test
alike, and the 45k split costs a few tenths more. The ordering (resnet110 lowest, plain-56 above
plain-20) should not change.
"""

import ml_collections

from configs import cifar10
from resnet_jax.study.runs import parse_model

GRAD_NORM_MODELS = ('plain56', 'resnet56')


def get_config(model: str = 'resnet20') -> ml_collections.ConfigDict:
  """configs/cifar10.py's sec. 4.2 recipe for `model` with the 45k/5k split and, for the
  56-layer pair, per-layer gradient norms."""
  parse_model(model)
  config = cifar10.get_config(model)
  config.val_split = 5000
  config.log_grad_norms = model in GRAD_NORM_MODELS
  return config
