"""CIFAR family: plain, residual (options A/B/C) and highway networks of He 2015 sec. 4.2, and the
unit variants of He 2016: the shortcuts of Fig. 2 / Table 1 and the activations of Fig. 4 /
Table 2, full pre-activation (Table 4) among them.

Three stages of 16/32/64 filters on 32/16/8 feature maps after a 3x3 stem of 16 filters; depth
6n+2 with n two-layer blocks per stage. He 2016's networks of depth >= 164 have 9n+2 layers, n
three-layer bottleneck units (outputs 64/128/256) per stage, for every unit (Table 2 has
ResNet-164 for all five). They follow the authors' code (KaimingHe/resnet-1k-layers,
resnet-pre-act.lua): option B shortcuts (a projection only where the shape changes; in the
pre-activation unit with no BN), the bottleneck strides its first 1x1.

He 2016 variants are named by their unit (`resnet_{unit}`, a key of HE2016, or
`resnet_{gate}_b{K}` for the gates of GATES with bias b_g = -K). resnet{N}_v1 is resnet{N}_b and
resnet{N}_conv_shortcut (Fig. 2e) is resnet{N}_c (He 2015's option C) below depth 164.
"""

from typing import Any

import jax.numpy as jnp

from resnet_jax.models.blocks import GATE_BIAS, Mixing, ResNet

WIDTHS = (16, 32, 64)
BOTTLENECK_MIN_DEPTH = 164  # He 2016: ResNet-110 uses basic units, ResNet-164 and -1001 bottleneck
HE2015 = {  # He 2015 sec. 4.2 and Table 6: two-layer blocks at every depth
    'plain': dict(shortcut='none'),
    'resnet': dict(shortcut='A'),
    'resnet_b': dict(shortcut='B'),
    'resnet_c': dict(shortcut='C'),
    'highway': dict(shortcut='A', mixing=Mixing(gate='exclusive', gate_bias=GATE_BIAS)),
}
HE2016 = {  # unit -> ResNet settings over option B
    'v1': {},  # Fig. 4a, the original unit
    'bn_after_add': dict(activation='bn_after_add'),  # Fig. 4b
    'relu_before_add': dict(activation='relu_before_add'),  # Fig. 4c
    'relu_preact': dict(activation='relu_preact'),  # Fig. 4d
    'v2': dict(preactivation=True),  # Fig. 4e, full pre-activation
    'scale_shortcut': dict(mixing=Mixing(shortcut_scale=0.5)),  # Fig. 2b, F unscaled
    'scale_both': dict(mixing=Mixing(shortcut_scale=0.5, branch_scale=0.5)),  # Fig. 2b, F x 0.5
    'conv_shortcut': dict(shortcut='C'),  # Fig. 2e, He 2015's option C
    'dropout_shortcut': dict(mixing=Mixing(dropout=0.5)),  # Fig. 2f
}
GATES = {'exclusive_gate': 'exclusive', 'shortcut_gate': 'shortcut'}  # Fig. 2c, 2d


def gate_settings(unit: str) -> dict | None:
  """ResNet settings of a gate unit '{gate}_b{K}' (b_g = -K, K written without leading zeros),
  None if `unit` is not one."""
  gate, _, bias = unit.rpartition('_b')
  if gate not in GATES or not bias.isdigit() or str(int(bias)) != bias:
    return None
  return dict(mixing=Mixing(gate=GATES[gate], gate_bias=float(-int(bias))))


def he2016_unit(variant: str) -> str | None:
  """The He 2016 unit of a CIFAR variant ('resnet_exclusive_gate_b6' -> 'exclusive_gate_b6'),
  None for He 2015's variants and unknown ones."""
  unit = variant.removeprefix('resnet_')
  known = unit in HE2016 or gate_settings(unit) is not None
  return unit if variant.startswith('resnet_') and known else None


def settings(variant: str) -> dict | None:
  """ResNet settings (shortcut, activation, mixing, preactivation) of a CIFAR variant, None if
  there is no such variant."""
  if variant in HE2015:
    return HE2015[variant]
  unit = he2016_unit(variant)
  if unit is None:
    return None
  return dict(shortcut='B') | (HE2016[unit] if unit in HE2016 else gate_settings(unit))


def uses_bottleneck(depth: int, variant: str) -> bool:
  """He 2016's rule: its CIFAR networks (every unit) of depth >= 164 use bottleneck units."""
  return he2016_unit(variant) is not None and depth >= BOTTLENECK_MIN_DEPTH


def blocks_per_stage(depth: int, variant: str) -> int:
  """n for depth 6n+2 (two-layer blocks) or 9n+2 (bottleneck units); ValueError otherwise."""
  layers = 3 if uses_bottleneck(depth, variant) else 2
  n, rest = divmod(depth - 2, 3 * layers)
  if rest or n < 1:
    why = ' (He 2016 networks of depth >= 164 use bottleneck units)' if layers == 3 else ''
    raise ValueError(f'depth {depth} is not {3 * layers}n+2 with n >= 1{why}')
  return n


def cifar_resnet(depth: int, variant: str = 'resnet', num_classes: int = 10,
                 dtype: Any = jnp.float32, zero_init_residual: bool = False) -> ResNet:
  """The CIFAR network `variant` (see the module docstring) of `depth` layers."""
  found = settings(variant)
  if found is None:
    raise ValueError(f'unknown CIFAR variant {variant!r}: use one of {", ".join(HE2015)} or '
                     f'resnet_ with one of {", ".join(HE2016)}, '
                     f'{", ".join(gate + "_b{K}" for gate in GATES)}')
  n = blocks_per_stage(depth, variant)
  return ResNet(stage_sizes=(n,) * len(WIDTHS), widths=WIDTHS, num_classes=num_classes,
                bottleneck=uses_bottleneck(depth, variant), zero_init_residual=zero_init_residual,
                dtype=dtype, **found)
