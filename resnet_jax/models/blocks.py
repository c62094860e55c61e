"""Building blocks of He et al. 2015 ("Deep Residual Learning") and He et al. 2016 ("Identity
Mappings"), and the network that stacks them into stages.

Parameter names are a contract (interop and the gradient-norm figure rely on them):
`stem_conv`, `stem_bn`, `stage{s}_block{b}` holding `conv{i}`, `bn{i}`, `shortcut_conv`,
`shortcut_bn` (post-activation projections only), `gate`; `final_bn` (pre-activation networks);
`head`.

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
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

ModuleDef = Callable[..., nn.Module]

# He et al. 2015b ("Delving Deep into Rectifiers", sec. 2.2): zero-mean Gaussian with variance
# 2 / n, n = k * k * c_in, the fan-in of the forward pass (a plain Gaussian, not truncated).
HE_NORMAL = nn.initializers.variance_scaling(2.0, 'fan_in', 'normal')
# The highway gate's bias starts negative so that each unit begins by carrying its input
# (Srivastava et al. 2015, sec. 2.2).
GATE_BIAS = -1.0
SHORTCUTS = ('none', 'A', 'B', 'C')
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


class PostActivationBlock(nn.Module):
  """Post-activation unit (He 2015 Fig. 2 and Fig. 5): conv-BN-ReLU ... conv-BN, add, ReLU.

  `shortcut='none'` is its plain counterpart (sec. 3.1). `gated=True` is the highway unit
  (Srivastava et al. 2015, the baseline of He 2015 Table 6): relu(T * F(x) + (1 - T) * a(x)),
  T = sigmoid(1x1 conv of x, with bias), a the option A shortcut; the trailing ReLU is the
  residual unit's, so the gate is the only difference.
  """
  width: int
  strides: int
  conv: ModuleDef
  norm: ModuleDef
  shortcut: str = 'A'
  bottleneck: bool = False
  stride_on_3x3: bool = False
  gated: bool = False
  zero_init_residual: bool = False

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    layers = branch_layers(self.width, self.strides, self.bottleneck, self.stride_on_3x3)
    features = layers[-1][1]
    y = x
    for i, (kernel, width, strides) in enumerate(layers, 1):
      y = conv_layer(self.conv, width, kernel, strides, name=f'conv{i}')(y)
      last = i == len(layers)
      zero = last and self.zero_init_residual and self.shortcut != 'none'
      y = self.norm(scale_init=scale_init(zero), name=f'bn{i}')(y)
      if not last:
        y = nn.relu(y)
    if self.shortcut == 'none':
      return nn.relu(y)
    shortcut = apply_shortcut(x, features, self.strides, self.shortcut, self.conv, self.norm)
    if self.gated:
      gate = self.conv(features, (1, 1), strides=self.strides, use_bias=True,
                       bias_init=nn.initializers.constant(GATE_BIAS), name='gate')
      t = nn.sigmoid(gate(x))
      return nn.relu(t * y + (1 - t) * shortcut)
    return nn.relu(y + shortcut)


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
  then a 3x3/2 max-pool if `stem_pool`. Pre-activation networks end with `final_bn` and ReLU.
  `shortcut` is one of SHORTCUTS ('none': the plain network, post-activation only);
  `stride_on_3x3` moves a bottleneck's stride from its first 1x1 to its 3x3.
  Convolutions are He-initialised; the classifier `head` keeps flax's Dense default (LeCun
  normal kernel, zero bias), as no ReLU follows it.
  `stream_barriers` puts a `jax.lax.optimization_barrier` on the residual stream after the stem
  and after every block: an identity for the math, autodiff and parameters that keeps a compiler
  from fusing the stream into its consumers (the train step sets it where the backend needs it).
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
  gated: bool = False
  zero_init_residual: bool = False
  dtype: Any = jnp.float32
  stream_barriers: bool = False

  def __post_init__(self) -> None:
    if self.shortcut not in SHORTCUTS:
      raise ValueError(f'unknown shortcut {self.shortcut!r}: use one of {", ".join(SHORTCUTS)}')
    if self.preactivation and self.shortcut == 'none':
      raise ValueError("pre-activation units need a shortcut: use 'A', 'B' or 'C'")
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
      for b in range(1, size + 1):
        strides = 2 if s > 1 and b == 1 else 1
        block = self._block(s, b)(width, strides, conv, norm, name=f'stage{s}_block{b}')
        x = self._stream(block(x))
    if self.preactivation:
      x = nn.relu(norm(name='final_bn')(x))
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32, name='head')(x)

  def _stream(self, x: jnp.ndarray) -> jnp.ndarray:
    """The residual stream between blocks, behind a barrier with `stream_barriers`."""
    return jax.lax.optimization_barrier(x) if self.stream_barriers else x

  def _block(self, stage: int, block: int) -> ModuleDef:
    """The unit class of this network, with everything but width, strides and layers bound."""
    common = dict(shortcut=self.shortcut, bottleneck=self.bottleneck,
                  stride_on_3x3=self.stride_on_3x3, zero_init_residual=self.zero_init_residual)
    if self.preactivation:
      return functools.partial(PreActivationBlock, preactivated=stage == 1 and block == 1, **common)
    return functools.partial(PostActivationBlock, gated=self.gated, **common)
