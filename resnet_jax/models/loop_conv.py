"""A stride-1 NHWC convolution whose backward pass keeps the forward pass's layouts, for the
blocks ResNet runs in a loop (the stacked layout, resnet_jax/models/layout.py) on XLA:CPU.

jax differentiates a convolution into two convolutions of other dimension labels: the input
gradient convolves the output gradient with the flipped kernel (labels b01f_01oi->b01f), the
weight gradient convolves the input, batch as features, with the output gradient (labels
f01b_i01o->01bf). Outside a loop XLA:CPU transposes their operands into its canonical layout
and calls its Eigen / YNNPACK kernels; inside a while loop's body it leaves them as they are and
runs them on its slow generic convolution path (benchmarks/RESULTS.md: 40x slower per step).
Here the backward pass is written in the forward pass's labels instead (b01f_01io->b01f): the
input gradient is an NHWC x HWIO convolution of the flipped, transposed kernel (padding
k - 1 - p), the weight gradient the same convolution over the batch as jax's, its operands
transposed by explicit transposes that XLA:CPU leaves in place. The function and its gradients
are the same as lax.conv_general_dilated's (tests/models/test_scan.py); the train step uses it
on the CPU alone (resnet_jax/train/steps.py). Measured on a 6-layer stage-1 chain (batch 32,
forward and backward, benchmarks/RESULTS.md): unrolled 52 ms, scanned 1923 ms, scanned with
loop_conv 61 ms.
"""

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

Padding = tuple[tuple[int, int], tuple[int, int]]
NHWC = ('NHWC', 'HWIO', 'NHWC')


def _forward(x: jax.Array, w: jax.Array, padding: Padding) -> jax.Array:
  return lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=NHWC)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv(x: jax.Array, w: jax.Array, padding: Padding) -> jax.Array:
  return _forward(x, w, padding)


def _conv_fwd(x: jax.Array, w: jax.Array, padding: Padding):
  return _forward(x, w, padding), (x, w)


def _conv_bwd(padding: Padding, residuals, g: jax.Array) -> tuple[jax.Array, jax.Array]:
  x, w = residuals
  return input_gradient(g, w, padding), weight_gradient(x, g, padding)


_conv.defvjp(_conv_fwd, _conv_bwd)


def input_gradient(g: jax.Array, w: jax.Array, padding: Padding) -> jax.Array:
  """d loss / d x of a stride-1 convolution: g convolved (NHWC, HWIO) with the kernel rotated by
  180 degrees, its input and output features swapped, padded k - 1 - p on each side."""
  flipped = jnp.flip(w, (0, 1)).swapaxes(2, 3)
  full = tuple((k - 1 - lo, k - 1 - hi) for k, (lo, hi) in zip(w.shape[:2], padding))
  return _forward(g, flipped, full).astype(g.dtype)


def weight_gradient(x: jax.Array, g: jax.Array, padding: Padding) -> jax.Array:
  """d loss / d w (HWIO) of a stride-1 convolution: the convolution over the batch that
  XLA's own transpose rule builds (each input channel an image, the batch its features, the
  output gradient the kernel), with its operands transposed explicitly into NHWC / HWIO and its
  [C_in, k, k, C_out] result back into HWIO."""
  images = jnp.transpose(x, (3, 1, 2, 0))  # [C_in, H, W, N]
  kernel = jnp.transpose(g.astype(x.dtype), (1, 2, 0, 3))  # [H, W, N, C_out]
  dw = _forward(images, kernel, padding)  # [C_in, kh, kw, C_out]
  return jnp.transpose(dw, (1, 2, 0, 3))


def loop_conv(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
              padding: Sequence[tuple[int, int]], lhs_dilation: Sequence[int] | None = None,
              rhs_dilation: Sequence[int] | None = None, dimension_numbers=None,
              feature_group_count: int = 1, precision=None) -> jax.Array:
  """lax.conv_general_dilated for nn.Conv(conv_general_dilated=loop_conv): stride 1, no
  dilation, one group, NHWC / HWIO (flax's), explicit padding; ValueError for anything else."""
  del precision  # float32 on the CPU, as lax's default
  expected = lax.conv_dimension_numbers(lhs.shape, rhs.shape, NHWC)
  plain = (tuple(window_strides) == (1, 1) and set(lhs_dilation or (1,)) == {1}
           and set(rhs_dilation or (1,)) == {1} and feature_group_count == 1
           and (dimension_numbers is None or
                lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == expected)
           and not isinstance(padding, str))
  if not plain:
    raise ValueError('loop_conv takes stride-1, undilated, ungrouped NHWC convolutions with '
                     'explicit padding (the stacked blocks\'); use lax.conv_general_dilated')
  return _conv(lhs, rhs, tuple(tuple(int(p) for p in pair) for pair in padding))
