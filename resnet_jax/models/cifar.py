"""CIFAR family: plain, residual (options A/B/C) and highway networks of He 2015 sec. 4.2, and the
pre-activation networks of He 2016 (sec. 4, Table 4).

Three stages of 16/32/64 filters on 32/16/8 feature maps after a 3x3 stem of 16 filters; depth
6n+2 with n two-layer blocks per stage, or 9n+2 with n three-layer bottleneck units (outputs
64/128/256) for pre-activation networks of depth >= 164. These follow the authors' code
(KaimingHe/resnet-1k-layers, resnet-pre-act.lua): the bottleneck strides its first 1x1 and
projection shortcuts have no BN.
"""

from typing import Any

import jax.numpy as jnp

from resnet_jax.models.blocks import ResNet

WIDTHS = (16, 32, 64)
BOTTLENECK_MIN_DEPTH = 164  # He 2016: ResNet-110 uses basic units, ResNet-164 and -1001 bottleneck
VARIANTS = {
    'plain': dict(shortcut='none'),
    'resnet': dict(shortcut='A'),
    'resnet_b': dict(shortcut='B'),
    'resnet_c': dict(shortcut='C'),
    'highway': dict(shortcut='A', gated=True),
    'resnet_v2': dict(shortcut='B', preactivation=True),
}


def uses_bottleneck(depth: int, variant: str) -> bool:
  """He 2016's rule: pre-activation CIFAR networks of depth >= 164 use bottleneck units."""
  return variant == 'resnet_v2' and depth >= BOTTLENECK_MIN_DEPTH


def blocks_per_stage(depth: int, variant: str) -> int:
  """n for depth 6n+2 (two-layer blocks) or 9n+2 (bottleneck units); ValueError otherwise."""
  layers = 3 if uses_bottleneck(depth, variant) else 2
  n, rest = divmod(depth - 2, 3 * layers)
  if rest or n < 1:
    why = ' (pre-activation networks of depth >= 164 use bottleneck units)' if layers == 3 else ''
    raise ValueError(f'depth {depth} is not {3 * layers}n+2 with n >= 1{why}')
  return n


def cifar_resnet(depth: int, variant: str = 'resnet', num_classes: int = 10,
                 dtype: Any = jnp.float32, zero_init_residual: bool = False) -> ResNet:
  """The CIFAR network `variant` (a key of VARIANTS) of `depth` layers."""
  if variant not in VARIANTS:
    raise ValueError(f'unknown CIFAR variant {variant!r}: use one of {", ".join(VARIANTS)}')
  n = blocks_per_stage(depth, variant)
  return ResNet(stage_sizes=(n,) * len(WIDTHS), widths=WIDTHS, num_classes=num_classes,
                bottleneck=uses_bottleneck(depth, variant), zero_init_residual=zero_init_residual,
                dtype=dtype, **VARIANTS[variant])
