"""ImageNet family of He 2015 Table 1: ResNet-18/34 (basic blocks), 50/101/152 (bottlenecks), the
plain-18/34 baselines (Table 2, Fig. 4), v1.5 (stride on the 3x3, torchvision) and the
pre-activation v2 of He 2016.

7x7/2 stem of 64 filters, BN, ReLU, 3x3/2 max-pool; stages of 64/128/256/512 filters (x4 outputs
for bottlenecks) with option B shortcuts (projection only where the shape changes). v2 is
fb.resnet.torch's models/preresnet.lua: bottlenecks stride the 3x3, projections have no BN.
"""

from typing import Any

import jax.numpy as jnp

from resnet_jax.models.blocks import ResNet

WIDTHS = (64, 128, 256, 512)
STAGE_SIZES = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3),
               152: (3, 8, 36, 3)}
PLAIN_DEPTHS = (18, 34)
VARIANTS = {
    'resnet': dict(shortcut='B'),
    'resnet_v1_5': dict(shortcut='B', stride_on_3x3=True),
    'resnet_v2': dict(shortcut='B', preactivation=True, stride_on_3x3=True),
    'plain': dict(shortcut='none'),
}


def is_imagenet(depth: int, variant: str) -> bool:
  """Whether (depth, variant) names an ImageNet network."""
  depths = PLAIN_DEPTHS if variant == 'plain' else STAGE_SIZES
  return variant in VARIANTS and depth in depths


def imagenet_resnet(depth: int, variant: str = 'resnet', num_classes: int = 1000,
                    dtype: Any = jnp.float32, zero_init_residual: bool = False) -> ResNet:
  """The ImageNet network `variant` (a key of VARIANTS) of `depth` layers."""
  if not is_imagenet(depth, variant):
    raise ValueError(f'no ImageNet {variant}{depth}: depths are {sorted(STAGE_SIZES)} '
                     f'(plain: {PLAIN_DEPTHS}), variants {", ".join(VARIANTS)}')
  return ResNet(stage_sizes=STAGE_SIZES[depth], widths=WIDTHS, num_classes=num_classes,
                stem_kernel=7, stem_strides=2, stem_pool=True, bottleneck=depth >= 50,
                zero_init_residual=zero_init_residual, dtype=dtype, **VARIANTS[variant])
