"""Building blocks of He et al. 2015 ("Deep Residual Learning") and He et al. 2016 ("Identity
Mappings"), and the network that stacks them into stages.

Parameter names are a contract (interop and the gradient-norm figure rely on them):
`stem_conv`, `stem_bn`, `stage{s}_block{b}` holding `conv{i}`, `bn{i}`, `shortcut_conv`,
`shortcut_bn` (post-activation projections only), `gate`, `add_bn` (the BN after the addition of
He 2016 Fig. 4b); `final_bn` (pre-activation networks); `head`. That is the unrolled layout; the
stacked one (`scan_blocks`, for the thousand-layer networks) keeps `stage{s}_block1` and holds
blocks 2 .. n of a stage in `stage{s}_blocks` with a leading block axis (resnet_jax/models/
layout.py, which converts between the two).

Pre-activation details follow the two Torch codes of He 2016: the authors' CIFAR ResNet-164/1001
(KaimingHe/resnet-1k-layers, resnet-pre-act.lua) and fb.resnet.torch's ImageNet networks
(facebook/fb.resnet.torch, models/preresnet.lua at commit 7ac4a9f: the projection shortcut takes
the block's pre-activated input and has no BN after it).

Convolutions pad k // 2 on every side, as PyTorch's padding=k//2: a stride-2 convolution then
samples the positions 0, 2, 4, ... that option A's subsampling keeps, and PyTorch weights compute
the same function here (flax's 'SAME' would pad only after).
"""

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from resnet_jax.models.loop_conv import loop_conv

ModuleDef = Callable[..., nn.Module]

# He et al. 2015b ("Delving Deep into Rectifiers", sec. 2.2): zero-mean Gaussian with variance
# 2 / n, n = k * k * c_in, the fan-in of the forward pass (a plain Gaussian, not truncated).
HE_NORMAL = nn.initializers.variance_scaling(2.0, 'fan_in', 'normal')
# The highway gate's bias starts negative so that each unit begins by carrying its input
# (Srivastava et al. 2015, sec. 2.2).
GATE_BIAS = -1.0
SHORTCUTS = ('none', 'A', 'B', 'C')
# The post-activation unit and its rearrangements, He 2016 Fig. 4 (a)-(d) / Table 2; (e), full
# pre-activation, is PreActivationBlock.
ACTIVATIONS = ('original', 'bn_after_add', 'relu_before_add', 'relu_preact')
GATES = ('none', 'exclusive', 'shortcut')  # He 2016 Fig. 2 (c), (d)
EXPANSION = 4  # bottleneck output width / 3x3 width (He 2015 Fig. 5)


def conv_and_norm(dtype: Any, train: bool) -> tuple[ModuleDef, ModuleDef]:
  """Bias-free He-initialised convolution and BatchNorm factories, float32 parameters.

  BatchNorm momentum 0.9 and epsilon 1e-5 equal PyTorch's defaults (momentum=0.1, eps=1e-5);
  train mode normalises with batch statistics and updates the running ones in `batch_stats`.
  """
  conv = functools.partial(
      nn.Conv, use_bias=False, dtype=dtype, param_dtype=jnp.float32, kernel_init=HE_NORMAL)
  norm = functools.partial(
      nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
      param_dtype=jnp.float32)
  return conv, norm


def conv_layer(conv: ModuleDef, features: int, kernel: int, strides: int, name: str) -> nn.Module:
  """A k x k convolution with PyTorch-style symmetric padding k // 2."""
  return conv(features, (kernel, kernel), strides=strides, padding=kernel // 2, name=name)


def scale_init(zero: bool) -> Callable:
  """BN scale initialiser: zeros for the last BN of a residual branch under zero_init_residual
  (the branch then starts as nothing, each unit as its shortcut), ones otherwise."""
  return nn.initializers.zeros if zero else nn.initializers.ones


def branch_layers(width: int, strides: int, bottleneck: bool,
                  stride_on_3x3: bool) -> list[tuple[int, int, int]]:
  """(kernel, features, strides) of the residual branch's convolutions, in order.

  Basic: two 3x3 (He 2015 Fig. 2 / Fig. 5 left). Bottleneck: 1x1 reduce, 3x3, 1x1 expand x4
  (Fig. 5 right); He 2015 and the authors' pre-activation CIFAR code (resnet-pre-act.lua) stride
  the first 1x1, `stride_on_3x3` strides the 3x3 instead (torchvision's ResNet v1.5 and
  fb.resnet.torch's preresnet.lua).
  """
  if not bottleneck:
    return [(3, width, strides), (3, width, 1)]
  first, middle = (1, strides) if stride_on_3x3 else (strides, 1)
  return [(1, width, first), (3, width, middle), (1, width * EXPANSION, 1)]


def option_a(x: jnp.ndarray, features: int, strides: int) -> jnp.ndarray:
  """Parameter-free identity shortcut (He 2015 sec. 3.3, option A).

  Subsamples x[:, ::s, ::s, :] and zero-pads the extra channels symmetrically (extra // 2 before,
  the rest after), as the PyTorch CIFAR reference's F.pad(x[:, :, ::2, ::2], (..., p, p)).
  """
  if strides > 1:
    x = x[:, ::strides, ::strides, :]
  extra = features - x.shape[-1]
  if extra:
    x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))
  return x


def projects(kind: str, in_features: int, features: int, strides: int) -> bool:
  """Whether shortcut option `kind` projects here (B: where the shape changes; C: always)."""
  return kind == 'C' or (kind == 'B' and (strides > 1 or in_features != features))


def apply_shortcut(x: jnp.ndarray, features: int, strides: int, kind: str, conv: ModuleDef,
                   norm: ModuleDef | None) -> jnp.ndarray:
  """Shortcut option A (identity / subsample + zero pad) or B (1x1 projection only where the
  shape changes), both defined in He 2015 sec. 3.3, or C (projection on every block), added in
  sec. 4.1 where Table 3 compares the three.

  The projection is followed by BN (`norm`), as every convolution of He 2015; `norm=None` leaves
  it a lone convolution, as the pre-activation codes of He 2016 have it. Called inside a block's
  compact method, so `shortcut_conv` and `shortcut_bn` belong to it.
  """
  if not projects(kind, x.shape[-1], features, strides):
    return option_a(x, features, strides)
  x = conv_layer(conv, features, 1, strides, name='shortcut_conv')(x)
  return x if norm is None else norm(name='shortcut_bn')(x)


class Mixing(NamedTuple):
  """How a post-activation unit adds its residual branch F(x) and its shortcut h(x): the
  shortcut variants of He 2016 Fig. 2 / Table 1 (the default is the plain addition, Fig. 2a).

  The unit adds branch_scale * g_F * F(x) and drop(shortcut_scale * (1 - g) * h(x)):
  - constant scaling (Fig. 2b): shortcut_scale 0.5, and branch_scale 0.5 for "F scaled by
    1 - lambda" (sec. 3.1);
  - gating (Fig. 2c, 2d): g = sigmoid(1x1 conv(x) + b_g), the `gate` convolution with its bias
    initialised to gate_bias. 'exclusive' gates both paths, g_F = g (the highway gate,
    Srivastava et al. 2015); 'shortcut' only the shortcut, g_F = 1; 'none' neither (g = 0,
    g_F = 1);
  - dropout (Fig. 2f): `dropout` is the rate of a non-inverted dropout on the shortcut (see
    shortcut_dropout), 0 for none.
  """
  shortcut_scale: float = 1.0
  branch_scale: float = 1.0
  gate: str = 'none'
  gate_bias: float = 0.0
  dropout: float = 0.0


def shortcut_dropout(module: nn.Module, x: jnp.ndarray, rate: float, train: bool) -> jnp.ndarray:
  """Non-inverted dropout of `rate` on the shortcut (He 2016 Fig. 2f): in training each element
  is kept unscaled with probability 1 - rate (flax's 'dropout' rng of `module`), in evaluation x
  is multiplied by its expectation 1 - rate.

  He 2016 sec. 3.1: dropout "statistically imposes a scale of lambda with an expectation of 0.5
  on the shortcut", true of this convention (Torch7's nn.Dropout(p, true), the v1 mode that
  scales at test time), not of the inverted dropout of Torch7's default, PyTorch and flax
  (training output divided by 1 - rate, expectation 1). The authors released no code for
  Table 1.
  """
  if not train:
    return (1 - rate) * x
  keep = jax.random.bernoulli(module.make_rng('dropout'), 1 - rate, x.shape)
  return jnp.where(keep, x, jnp.zeros_like(x))


def mix(module: nn.Module, branch: jnp.ndarray, shortcut: jnp.ndarray, x: jnp.ndarray,
        mixing: Mixing, conv: ModuleDef, strides: int, train: bool) -> jnp.ndarray:
  """branch + shortcut as `mixing` says (He 2016 Fig. 2), before the unit's own activation.

  Called inside a block's compact method (`module`), so its `gate` belongs to the block; the gate
  reads the block's input x with the block's stride.
  """
  if mixing.gate != 'none':
    gate = conv(branch.shape[-1], (1, 1), strides=strides, use_bias=True,
                bias_init=nn.initializers.constant(mixing.gate_bias), name='gate')
    g = nn.sigmoid(gate(x))
    shortcut = (1 - g) * shortcut
    if mixing.gate == 'exclusive':
      branch = g * branch
  shortcut, branch = mixing.shortcut_scale * shortcut, mixing.branch_scale * branch
  if mixing.dropout:
    shortcut = shortcut_dropout(module, shortcut, mixing.dropout, train)
  return branch + shortcut


class PostActivationBlock(nn.Module):
  """Post-activation unit (He 2015 Fig. 2 and Fig. 5): conv-BN-ReLU ... conv-BN, add, ReLU, and
  the rearrangements of He 2016 Fig. 4 / Table 2 (`activation`, one of ACTIVATIONS):
  (a) 'original';
  (b) 'bn_after_add': conv-BN-ReLU ... conv, add, BN (`add_bn`), ReLU;
  (c) 'relu_before_add': conv-BN-ReLU ... conv-BN-ReLU, add (nothing after the addition);
  (d) 'relu_preact': ReLU-conv-BN ... ReLU-conv-BN, add. The ReLU before the split reads the
      previous unit's sum (in the first unit, the stem's output, which it leaves unchanged); a
      projection shortcut reads the activated input, as in the full pre-activation unit, an
      identity shortcut the raw one.

  `shortcut='none'` is the plain counterpart (He 2015 sec. 3.1), original activation only.
  `mixing` is how branch and shortcut are added (Mixing: He 2016 Fig. 2 / Table 1); the highway
  unit of He 2015 Table 6 (Srivastava et al. 2015), relu(T * F(x) + (1 - T) * a(x)), is its
  exclusive gate with bias GATE_BIAS on an option A shortcut. `train` is the mode of the
  shortcut dropout (BN's is bound in `norm`).
  """
  width: int
  strides: int
  conv: ModuleDef
  norm: ModuleDef
  shortcut: str = 'A'
  bottleneck: bool = False
  stride_on_3x3: bool = False
  activation: str = 'original'
  mixing: Mixing = Mixing()
  zero_init_residual: bool = False
  train: bool = False

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    layers = branch_layers(self.width, self.strides, self.bottleneck, self.stride_on_3x3)
    features = layers[-1][1]
    activated = nn.relu(x) if self.activation == 'relu_preact' else x
    y = self._branch(activated, layers)
    if self.shortcut == 'none':
      return nn.relu(y)
    projection = projects(self.shortcut, x.shape[-1], features, self.strides)
    shortcut = apply_shortcut(activated if projection else x, features, self.strides,
                              self.shortcut, self.conv, self.norm)
    y = mix(self, y, shortcut, x, self.mixing, self.conv, self.strides, self.train)
    if self.activation == 'bn_after_add':
      y = self.norm(name='add_bn')(y)
    return nn.relu(y) if self.activation in ('original', 'bn_after_add') else y

  def _branch(self, y: jnp.ndarray, layers: list[tuple[int, int, int]]) -> jnp.ndarray:
    """The residual branch F: conv{i}-bn{i} with ReLUs between (and after the last BN for
    'relu_before_add'); 'bn_after_add' has no BN after its last convolution."""
    for i, (kernel, width, strides) in enumerate(layers, 1):
      y = conv_layer(self.conv, width, kernel, strides, name=f'conv{i}')(y)
      last = i == len(layers)
      if last and self.activation == 'bn_after_add':
        return y
      zero = last and self.zero_init_residual and self.shortcut != 'none'
      y = self.norm(scale_init=scale_init(zero), name=f'bn{i}')(y)
      if not last or self.activation == 'relu_before_add':
        y = nn.relu(y)
    return y


class PreActivationBlock(nn.Module):
  """Pre-activation unit (He 2016 Fig. 1b / Fig. 4e): BN-ReLU-conv ... BN-ReLU-conv, add.

  `bn{i}` is the BN before `conv{i}`. Where the shape changes, BN-ReLU comes before the split
  and the projection shortcut is a 1x1 convolution of the pre-activated input with no BN of its
  own: the "Residual Units for increasing dimensions" of resnet-pre-act.lua and the
  'both_preact' units of preresnet.lua alike. An identity shortcut takes the raw input. The
  bottleneck strides its first 1x1 (resnet-pre-act.lua, CIFAR) or, with `stride_on_3x3`, its
  3x3 (preresnet.lua, ImageNet). The network's first unit has no `bn1` (`preactivated=True`):
  its input is already the stem's BN-ReLU output, the activation He 2016 (appendix) puts "right
  after conv1 and before splitting into two paths" (preresnet.lua's 'no_preact' unit; in
  resnet-pre-act.lua it is the first unit's own BN, the same function and parameters).
  """
  width: int
  strides: int
  conv: ModuleDef
  norm: ModuleDef
  shortcut: str = 'B'
  bottleneck: bool = False
  stride_on_3x3: bool = False
  preactivated: bool = False
  zero_init_residual: bool = False

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    layers = branch_layers(self.width, self.strides, self.bottleneck, self.stride_on_3x3)
    features = layers[-1][1]
    y = x if self.preactivated else nn.relu(self.norm(name='bn1')(x))
    projection = projects(self.shortcut, x.shape[-1], features, self.strides)
    shortcut = apply_shortcut(y if projection else x, features, self.strides, self.shortcut,
                              self.conv, norm=None)
    for i, (kernel, width, strides) in enumerate(layers, 1):
      if i > 1:
        zero = i == len(layers) and self.zero_init_residual
        y = nn.relu(self.norm(scale_init=scale_init(zero), name=f'bn{i}')(y))
      y = conv_layer(self.conv, width, kernel, strides, name=f'conv{i}')(y)
    return y + shortcut


class ResNet(nn.Module):
  """Stem, stages of blocks, global average pooling and a dense classifier (He 2015 Table 1 and
  sec. 4.2; He 2016). The CIFAR and ImageNet families are configurations of it.

  Stage s holds `stage_sizes[s-1]` blocks of 3x3 width `widths[s-1]` (x4 output for
  bottlenecks); every stage after the first halves the feature map in its first block. The stem
  is a `stem_kernel` convolution of `widths[0]` filters with stride `stem_strides`, BN and ReLU,
  then a 3x3/2 max-pool if `stem_pool`. `preactivation` builds PreActivationBlock units (He 2016
  Fig. 4e), and the network ends with `final_bn` and ReLU; otherwise PostActivationBlock units
  of `activation` (He 2016 Fig. 4a-d) and `mixing` (Fig. 2), and 'relu_preact' ends with a ReLU:
  the "extra activation" after the last unit's addition (He 2016 appendix), ReLU-only here.
  `shortcut` is one of SHORTCUTS ('none': the plain network, original unit only);
  `stride_on_3x3` moves a bottleneck's stride from its first 1x1 to its 3x3.
  Convolutions are He-initialised; the classifier `head` keeps flax's Dense default (LeCun
  normal kernel, zero bias), as no ReLU follows it.
  `stream_barriers` puts a `jax.lax.optimization_barrier` on the residual stream after the stem
  and after every block: an identity for the math, autodiff and parameters that keeps a compiler
  from fusing the stream into its consumers (the train step sets it where the backend needs it).

  `scan_blocks` builds the stacked layout (resnet_jax/models/layout.py): blocks 2 .. n of every
  stage, equal in shape, run as one flax.linen.scan over `stage{s}_blocks`, so that XLA compiles
  one block per stage whatever the depth (ResNet-1202, He 2015 Table 6; ResNet-1001, He 2016
  Table 4). `remat_blocks` rematerialises every block's activations in the backward pass
  (jax.checkpoint: only block inputs are kept, the rest recomputed, about one more forward pass).
  `loop_convs` runs the scanned blocks' convolutions through loop_conv, the same convolution
  with a backward pass that keeps the forward pass's layouts (the train step sets it where the
  backend needs it).
  """
  stage_sizes: Sequence[int]
  widths: Sequence[int]
  num_classes: int
  stem_kernel: int = 3
  stem_strides: int = 1
  stem_pool: bool = False
  preactivation: bool = False
  bottleneck: bool = False
  shortcut: str = 'A'
  stride_on_3x3: bool = False
  activation: str = 'original'
  mixing: Mixing = Mixing()
  zero_init_residual: bool = False
  dtype: Any = jnp.float32
  stream_barriers: bool = False
  scan_blocks: bool = False
  remat_blocks: bool = False
  loop_convs: bool = False

  def __post_init__(self) -> None:
    problem = unit_problem(self.shortcut, self.preactivation, self.activation, self.mixing,
                           self.zero_init_residual)
    if problem:
      raise ValueError(problem)
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    conv, norm = conv_and_norm(self.dtype, train)
    x = conv_layer(conv, self.widths[0], self.stem_kernel, self.stem_strides, name='stem_conv')(
        x.astype(self.dtype))
    x = nn.relu(norm(name='stem_bn')(x))
    if self.stem_pool:
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    x = self._stream(x)
    for s, (size, width) in enumerate(zip(self.stage_sizes, self.widths), 1):
      x = self._stage(x, s, size, width, conv, norm, train)
    if self.preactivation:
      x = norm(name='final_bn')(x)
    if self.preactivation or self.activation == 'relu_preact':
      x = nn.relu(x)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32, name='head')(x)

  def _stream(self, x: jnp.ndarray) -> jnp.ndarray:
    """The residual stream between blocks, behind a barrier with `stream_barriers`."""
    return jax.lax.optimization_barrier(x) if self.stream_barriers else x

  def _stage(self, x: jnp.ndarray, stage: int, size: int, width: int, conv: ModuleDef,
             norm: ModuleDef, train: bool) -> jnp.ndarray:
    """Stage `stage`: its first block (stride 2 after the first stage), then blocks 2 .. size,
    unrolled or, with scan_blocks, as one loop."""
    first = self._block(stage, 1, train, looped=False)
    strides = 2 if stage > 1 else 1
    x = self._stream(first(width, strides, conv, norm, name=f'stage{stage}_block1')(x))
    if self.scan_blocks and size > 1:
      return self._scanned(x, stage, size - 1, width, conv, norm, train)
    for b in range(2, size + 1):
      block = self._block(stage, b, train, looped=False)
      x = self._stream(block(width, 1, conv, norm, name=f'stage{stage}_block{b}')(x))
    return x

  def _scanned(self, x: jnp.ndarray, stage: int, length: int, width: int, conv: ModuleDef,
               norm: ModuleDef, train: bool) -> jnp.ndarray:
    """`length` stride-1 blocks of `width` as one flax.linen.scan over the stacked module
    `stage{stage}_blocks`: parameters and BN statistics stacked on axis 0, a fresh init and
    dropout key for each block."""
    if self.loop_convs:
      conv = functools.partial(conv, conv_general_dilated=loop_conv)
    block = self._block(stage, 2, train, looped=True)(width, 1, conv, norm,
                                                      name=f'stage{stage}_blocks')
    loop = nn.scan(lambda module, y: (self._stream(module(y)), None),
                   variable_axes={'params': 0, 'batch_stats': 0},
                   split_rngs={'params': True, 'dropout': True}, length=length)
    x, _ = loop(block, x)
    return x

  def _block(self, stage: int, block: int, train: bool, looped: bool) -> ModuleDef:
    """The unit class of this network, with everything but width, strides and layers bound;
    rematerialised with remat_blocks (CSE left to XLA inside a loop, where it cannot undo the
    recomputation, and prevented outside)."""
    common = dict(shortcut=self.shortcut, bottleneck=self.bottleneck,
                  stride_on_3x3=self.stride_on_3x3, zero_init_residual=self.zero_init_residual)
    if self.preactivation:
      unit = PreActivationBlock
      common['preactivated'] = stage == 1 and block == 1
    else:
      unit = PostActivationBlock
      common.update(activation=self.activation, mixing=self.mixing, train=train)
    if self.remat_blocks:
      unit = nn.remat(unit, prevent_cse=not looped)
    return functools.partial(unit, **common)


def unit_problem(shortcut: str, preactivation: bool, activation: str, mixing: Mixing,
                 zero_init_residual: bool) -> str | None:
  """Why ResNet's unit settings do not make a network (one line), or None if they do."""
  if shortcut not in SHORTCUTS:
    return f'unknown shortcut {shortcut!r}: use one of {", ".join(SHORTCUTS)}'
  if activation not in ACTIVATIONS:
    return f'unknown activation {activation!r}: use one of {", ".join(ACTIVATIONS)}'
  if mixing.gate not in GATES:
    return f'unknown gate {mixing.gate!r}: use one of {", ".join(GATES)}'
  if preactivation and shortcut == 'none':
    return "pre-activation units need a shortcut: use 'A', 'B' or 'C'"
  if (preactivation or shortcut == 'none') and (activation != 'original' or mixing != Mixing()):
    return ('activation and mixing variants (He 2016 Fig. 2, 4a-d) are of the post-activation '
            'residual unit: use preactivation=False and a shortcut')
  if zero_init_residual and activation == 'bn_after_add':
    return 'zero_init_residual needs a BN ending each residual branch, which bn_after_add lacks'
  return None
