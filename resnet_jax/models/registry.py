"""One registry for every network: get_model(name), input_size(name), MODEL_NAMES.

Names (He 2015 = "Deep Residual Learning", He 2016 = "Identity Mappings"):

CIFAR family (32x32 inputs, 10 classes by default; He 2015 sec. 4.2), depth 6n+2, any n >= 1:
  plain{6n+2}      plain network, no shortcuts
  resnet{6n+2}     residual network, option A shortcuts (identity, zero padding), the paper's
  resnet{6n+2}_b   option B: projections only where the shape changes
  resnet{6n+2}_c   option C: projections on every block
  highway{6n+2}    highway network (Srivastava et al. 2015), gated option A shortcuts
CIFAR units of He 2016, resnet{N}_{unit}: option B shortcuts; N = 6n+2 (basic units) below 164,
N = 9n+2 (bottleneck units) from 164 on (resnet110_v1, resnet164_v1, resnet1001_v2):
  activations (Fig. 4 / Table 2): v1 (a, original; resnet{N}_v1 is resnet{N}_b below 164),
    bn_after_add (b), relu_before_add (c), relu_preact (d), v2 (e, full pre-activation)
  shortcuts on the original unit (Fig. 2 / Table 1): scale_shortcut (0.5 on the shortcut),
    scale_both (0.5 on both), exclusive_gate_b{K} and shortcut_gate_b{K} (gate bias b_g = -K),
    conv_shortcut (option C), dropout_shortcut (dropout 0.5 on the shortcut)
ImageNet family (224x224 inputs, 1000 classes by default; He 2015 Table 1), option B shortcuts:
  resnet{18,34,50,101,152}        v1 as the paper (bottleneck stride on the first 1x1)
  resnet{18,34,50,101,152}_v1_5   stride on the 3x3 (torchvision); 18 and 34 equal v1
  resnet{18,34,50,101,152}_v2     pre-activation (He 2016)
  plain18, plain34                plain baselines (Table 2, Fig. 4)

ImageNet names take precedence: resnet50, resnet152, resnet50_v2 and resnet152_v2 are ImageNet
networks even though 50 and 152 are 6n+2; every other name (plain50, resnet50_b, ...) is CIFAR.

Layout (resnet_jax/models/layout.py): scan_blocks='auto' builds resnet1202 and resnet1001_* with
their blocks stacked and scanned (at least layout.SCAN_MIN_BLOCKS blocks in a stage), every other
network unrolled; 'stacked' and 'unrolled' choose.
"""

import re
from typing import Any, NamedTuple

import flax.linen as nn
import jax.numpy as jnp

from resnet_jax.models import cifar, imagenet, layout

MODEL_NAMES = (
    'plain20', 'plain32', 'plain44', 'plain56', 'plain110',
    'resnet20', 'resnet32', 'resnet44', 'resnet56', 'resnet110', 'resnet1202',
    'resnet56_b', 'resnet56_c', 'highway20', 'highway56',
    'resnet110_v1', 'resnet110_bn_after_add', 'resnet110_relu_before_add', 'resnet110_relu_preact',
    'resnet110_v2', 'resnet110_scale_shortcut', 'resnet110_scale_both',
    'resnet110_exclusive_gate_b0', 'resnet110_exclusive_gate_b6', 'resnet110_exclusive_gate_b7',
    'resnet110_shortcut_gate_b0', 'resnet110_shortcut_gate_b6', 'resnet110_conv_shortcut',
    'resnet110_dropout_shortcut',
    'resnet164_v1', 'resnet164_bn_after_add', 'resnet164_relu_before_add', 'resnet164_relu_preact',
    'resnet164_v2', 'resnet1001_v1', 'resnet1001_v2',
    'plain18', 'plain34', 'resnet18', 'resnet34', 'resnet50', 'resnet101', 'resnet152',
    'resnet50_v1_5', 'resnet101_v1_5', 'resnet152_v1_5', 'resnet50_v2', 'resnet101_v2',
    'resnet152_v2',
)
FORMS = ('valid names: CIFAR plain{6n+2}, resnet{6n+2}, resnet{6n+2}_b, resnet{6n+2}_c, '
         'highway{6n+2}, n >= 1; He 2016 resnet{6n+2}_UNIT (depth < 164), resnet{9n+2}_UNIT '
         '(depth >= 164), UNIT one of v1, bn_after_add, relu_before_add, relu_preact, v2, '
         'scale_shortcut, scale_both, exclusive_gate_b{K}, shortcut_gate_b{K}, conv_shortcut, '
         'dropout_shortcut; ImageNet resnet{18,34,50,101,152}[_v1_5|_v2], plain18, plain34 '
         f'(ImageNet first: resnet50 is ImageNet); e.g. {", ".join(MODEL_NAMES[:12])}')
# prefix, depth, suffix; which suffixes exist is the families' word (cifar.settings, imagenet).
_NAME = re.compile(r'(plain|resnet|highway)([1-9][0-9]*)((?:_[a-z0-9]+)*)')


class ModelSpec(NamedTuple):
  family: str  # 'cifar' | 'imagenet'
  variant: str  # a CIFAR variant (cifar.settings) or a key of imagenet.VARIANTS
  depth: int


def parse_name(name: str) -> ModelSpec:
  """The family, variant and depth a model name means; one-line ValueError if it means none."""
  match = _NAME.fullmatch(name) if isinstance(name, str) else None
  if match is None:
    raise ValueError(f'unknown model {name!r}; {FORMS}')
  prefix, depth, suffix = match.groups()
  variant, depth = prefix + suffix, int(depth)
  if imagenet.is_imagenet(depth, variant):
    return ModelSpec('imagenet', variant, depth)
  if cifar.settings(variant) is None:
    raise ValueError(f'unknown model {name!r}: no such variant at depth {depth}; {FORMS}')
  try:
    cifar.blocks_per_stage(depth, variant)
  except ValueError as error:
    raise ValueError(f'impossible model {name!r}: {error}; {FORMS}') from None
  return ModelSpec('cifar', variant, depth)


def input_size(name: str) -> int:
  """Image side the network is built for: 32 (CIFAR family) or 224 (ImageNet family)."""
  return 224 if parse_name(name).family == 'imagenet' else 32


def get_model(name: str, num_classes: int | None = None, dtype: Any = jnp.float32,
              zero_init_residual: bool = False, scan_blocks: str = 'auto',
              remat_blocks: bool = False) -> nn.Module:
  """The flax module `name` (see the module docstring), called as
  `model.apply(variables, x, train=...)` with x float NHWC; logits come back in `dtype`.

  num_classes None means 10 (CIFAR) or 1000 (ImageNet). zero_init_residual zero-initialises the
  last BN scale of every residual branch (off in the papers). scan_blocks (one of
  layout.SCAN_CHOICES) chooses the variables' layout, remat_blocks rematerialises each block in
  the backward pass (ResNet's fields of those names).
  """
  spec = parse_name(name)
  if num_classes is None:
    num_classes = 1000 if spec.family == 'imagenet' else 10
  if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
    raise ValueError(f'num_classes must be a positive int, got {num_classes!r}')
  build = imagenet.imagenet_resnet if spec.family == 'imagenet' else cifar.cifar_resnet
  model = build(spec.depth, spec.variant, num_classes=num_classes, dtype=dtype,
                zero_init_residual=zero_init_residual)
  return model.clone(scan_blocks=layout.scans(scan_blocks, model.stage_sizes),
                     remat_blocks=remat_blocks)
