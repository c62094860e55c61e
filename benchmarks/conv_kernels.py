"""The 3x3 convolutions of the CIFAR ResNets, stage by stage: XLA's kernels against PyTorch's.

    python benchmarks/conv_kernels.py --output=/tmp/conv_kernels.json

He et al. 2015 sec. 4.2: the three stages convolve 16, 32 and 64 channels on 32x32, 16x16 and
8x8 maps. For each stage at --batch_size, on whatever device jax finds:
- fwd, dgrad, wgrad: one convolution as flax.linen.Conv computes it (NHWC / HWIO,
  lax.conv_general_dilated), its input gradient and its weight gradient, each jitted alone;
- chain: --chain_layers conv-ReLU layers, forward and backward to every weight (a stage's
  convolutions without BN), one jitted call;
and the same four in PyTorch (channels_last, aten.convolution_backward, autograd) when torch
imports. Times are medians of --repeats windows of --calls calls, each window synchronised;
GFLOP/s counts 2 * N * H * W * 9 * C * C per convolution (3L - 1 of them in a chain of L layers:
the first layer's input gradient is never needed). It prints a Markdown table and
writes JSON; benchmarks/RESULTS.md uses it to show where a CPU train step goes.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from resnet_jax.files import atomic_write_text

STAGES = ((32, 16), (16, 32), (8, 64))  # (map size, channels) of stages 1-3
OPS = ('fwd', 'dgrad', 'wgrad', 'chain')
DIMENSIONS = ('NHWC', 'HWIO', 'NHWC')

_BATCH = flags.DEFINE_integer('batch_size', 128, 'images per call (the paper trains on 128)')
_LAYERS = flags.DEFINE_integer('chain_layers', 6, 'conv-ReLU layers of the chain')
_REPEATS = flags.DEFINE_integer('repeats', 7, 'timed windows; the median is reported')
_CALLS = flags.DEFINE_integer('calls', 10, 'calls per timed window')
_TORCH = flags.DEFINE_bool('torch', True, 'time PyTorch too, when it imports')
_OUTPUT = flags.DEFINE_string('output', '/tmp/conv_kernels.json', 'JSON output path')


def median_seconds(call: Callable[[], object], sync: Callable[[object], object]) -> float:
  """Median over _REPEATS windows of the seconds per call; one warm-up call first."""
  sync(call())
  windows = []
  for _ in range(_REPEATS.value):
    start = time.perf_counter()
    for _ in range(_CALLS.value):
      out = call()
    sync(out)
    windows.append((time.perf_counter() - start) / _CALLS.value)
  return statistics.median(windows)


def conv(x: jax.Array, w: jax.Array) -> jax.Array:
  """A 3x3 convolution, stride 1, padding 1, as flax.linen.Conv computes it."""
  return jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=DIMENSIONS)


def jax_calls(size: int, channels: int) -> dict[str, Callable[[], object]]:
  """The four timed computations of one stage in JAX, arguments bound."""
  rng = np.random.default_rng(0)
  x, g = (jnp.asarray(rng.standard_normal((_BATCH.value, size, size, channels), np.float32))
          for _ in range(2))
  ws = [jnp.asarray(0.1 * rng.standard_normal((3, 3, channels, channels), np.float32))
        for _ in range(_LAYERS.value)]

  def chain_loss(ws, x):
    for w in ws:
      x = jax.nn.relu(conv(x, w))
    return jnp.sum(x * x)
  fwd = jax.jit(conv)
  dgrad = jax.jit(lambda w, g: jax.vjp(lambda x: conv(x, w), x)[1](g)[0])
  wgrad = jax.jit(lambda x, g: jax.vjp(lambda w: conv(x, w), ws[0])[1](g)[0])
  chain = jax.jit(jax.grad(chain_loss))
  return {'fwd': lambda: fwd(x, ws[0]), 'dgrad': lambda: dgrad(ws[0], g),
          'wgrad': lambda: wgrad(x, g), 'chain': lambda: chain(ws, x)}


def torch_calls(size: int, channels: int) -> dict[str, Callable[[], object]]:
  """The same four in PyTorch, channels_last as the peer of benchmarks/torch_peer.py, on the GPU
  when there is one."""
  import torch  # pylint: disable=import-outside-toplevel
  device = 'cuda' if torch.cuda.is_available() else 'cpu'

  def tensor(*shape: int, scale: float = 1.0) -> torch.Tensor:
    return (scale * torch.randn(shape)).to(device, memory_format=torch.channels_last)
  x, g = (tensor(_BATCH.value, channels, size, size) for _ in range(2))
  ws = [torch.nn.Parameter(tensor(channels, channels, 3, 3, scale=0.1))
        for _ in range(_LAYERS.value)]

  def backward(mask: list[bool]) -> tuple[torch.Tensor | None, ...]:
    return torch.ops.aten.convolution_backward(g, x, ws[0].detach(), None, [1, 1], [1, 1],
                                               [1, 1], False, [0, 0], 1, mask)

  def chain():
    y = x
    for w in ws:
      y = torch.relu(torch.nn.functional.conv2d(y, w, padding=1))
    return torch.autograd.grad((y * y).sum(), ws)
  return {'fwd': lambda: torch.nn.functional.conv2d(x, ws[0].detach(), padding=1),
          'dgrad': lambda: backward([True, False, False]),
          'wgrad': lambda: backward([False, True, False]), 'chain': chain}


def measure() -> list[dict]:
  """One row per (framework, stage, op): milliseconds and GFLOP/s."""
  frameworks = {'jax': (jax_calls, jax.block_until_ready)}
  if _TORCH.value:
    try:
      import torch  # pylint: disable=import-outside-toplevel
    except ImportError:
      torch = None
    if torch is not None:  # CPU ops return when done; CUDA ones are awaited
      frameworks['torch'] = (torch_calls, lambda out: torch.cuda.is_available() and
                             torch.cuda.synchronize())
  rows = []
  for stage, (size, channels) in enumerate(STAGES, start=1):
    flop = 2 * _BATCH.value * size * size * 9 * channels * channels
    for framework, (make_calls, sync) in frameworks.items():
      for op, call in make_calls(size, channels).items():
        seconds = median_seconds(call, sync)
        # fwd, dgrad, wgrad per layer, but no dgrad of the first layer (its input needs none)
        convs = 3 * _LAYERS.value - 1 if op == 'chain' else 1
        rows.append({'framework': framework, 'stage': stage, 'size': size, 'channels': channels,
                     'op': op, 'ms': 1e3 * seconds, 'gflops': convs * flop / seconds / 1e9})
  return rows


def markdown(rows: list[dict]) -> str:
  """ms (GFLOP/s) per stage and op, JAX beside PyTorch."""
  cell = {(r['framework'], r['stage'], r['op']): f"{r['ms']:.2f} ({r['gflops']:.0f})" for r in rows}
  frameworks = sorted({r['framework'] for r in rows})
  header = ['stage (map, channels)'] + [f'{fw} {op}' for op in OPS for fw in frameworks]
  lines = ['| ' + ' | '.join(header) + ' |', '|---' * len(header) + '|']
  for stage, (size, channels) in enumerate(STAGES, start=1):
    cells = [cell.get((fw, stage, op), '-') for op in OPS for fw in frameworks]
    lines.append(f'| {stage} ({size}x{size}, {channels}) | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  rows = measure()
  result = {'device': str(jax.devices()[0].device_kind), 'backend': jax.default_backend(),
            'jax': jax.__version__, 'batch_size': _BATCH.value, 'chain_layers': _LAYERS.value,
            'rows': rows}
  output = Path(_OUTPUT.value)
  output.parent.mkdir(parents=True, exist_ok=True)
  atomic_write_text(output, json.dumps(result, indent=2) + '\n')
  print(markdown(rows))
  print(f'wrote {output}', file=sys.stderr)


if __name__ == '__main__':
  app.run(main)
