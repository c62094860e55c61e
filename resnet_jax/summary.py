"""`python -m resnet_jax.summary NAME [--json]`: a layer table, the parameter count and the
multiply-adds of one image.

Multiply-adds count the convolutions and the dense layer, as He 2015 Table 1 counts "FLOPs"
(1.8G for ResNet-18 ... 11.3G for ResNet-152): h_out * w_out * k * k * c_in * c_out per
convolution, c_in * c_out for the dense layer; BN, ReLU, pooling and additions are not counted.
Everything runs under jax.eval_shape, so even resnet1202 costs only tracing. Flax's
Module.tabulate is not used: its total adds batch_stats to the parameters and it has no
multiply-add column of this kind.
"""

import argparse
import functools
import json
import math
import sys
from collections.abc import Sequence
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from resnet_jax.models import get_model, input_size, parse_name


class Layer(NamedTuple):
  name: str  # a top-level submodule: stem_conv, stage1_block1, head, ...
  kind: str  # its class name
  output_shape: tuple[int, ...]  # for one image, without the batch axis
  params: int
  macs: int


class Profile(NamedTuple):
  name: str
  input_size: int
  num_classes: int
  layers: list[Layer]
  params: int
  macs: int


@functools.lru_cache(maxsize=8)
def profile(name: str) -> Profile:
  """Shapes, parameters and multiply-adds of `name`, layer by layer, for one image."""
  model, size = get_model(name), input_size(name)
  calls = []  # (path, class name, output shape, multiply-adds) in call order

  def record(next_fun, args, kwargs, context):
    if context.method_name != '__call__':
      return next_fun(*args, **kwargs)
    index = len(calls)
    calls.append(None)
    out = next_fun(*args, **kwargs)
    macs = 0
    if isinstance(context.module, (nn.Conv, nn.Dense)):
      kernel = context.module.variables['params']['kernel']
      macs = out.size // out.shape[-1] * kernel.size  # output positions x weights per position
    calls[index] = (context.module.path, type(context.module).__name__, out.shape[1:], macs)
    return out

  def init():
    with nn.intercept_methods(record):
      return model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False)

  params = jax.eval_shape(init)['params']
  layers = [
      Layer(path[0], kind, tuple(shape), _size(params[path[0]]),
            sum(c[3] for c in calls if c[0][:1] == path))
      for path, kind, shape, _ in calls if len(path) == 1]
  return Profile(name, size, model.num_classes, layers, _size(params), sum(c[3] for c in calls))


def _size(tree) -> int:
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


def count_params(name: str) -> int:
  """Trainable parameters of `name` (the 'params' collection; running statistics excluded)."""
  return profile(name).params


def count_macs(name: str) -> int:
  """Multiply-adds of convolutions and the dense layer for one image at input_size(name)."""
  return profile(name).macs


def format_table(p: Profile) -> str:
  """A Keras-like summary: one row per stem layer, block and head, then the totals."""
  header = ('Layer (type)', 'Output shape', 'Params', 'Mult-adds')
  rows = [(f'{l.name} ({l.kind})', 'x'.join(map(str, l.output_shape)), f'{l.params:,}',
           f'{l.macs:,}') for l in p.layers]
  widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]

  def line(row):
    return '  '.join([row[0].ljust(widths[0]), row[1].ljust(widths[1]),
                      *(cell.rjust(w) for cell, w in zip(row[2:], widths[2:]))])

  rule = '-' * len(line(header))
  return '\n'.join([
      f'Model: {p.name} ({p.input_size}x{p.input_size}x3 input, {p.num_classes} classes)', rule,
      line(header), rule, *map(line, rows), rule,
      f'Total params: {p.params:,} ({p.params / 1e6:.2f}M)',
      f'Multiply-adds: {p.macs:,} ({p.macs / 1e9:.2f}G) per image'])


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog='python -m resnet_jax.summary', description=__doc__)
  parser.add_argument('name', help='model name, e.g. resnet20, resnet110_v2, resnet50')
  parser.add_argument('--json', action='store_true',
                      help='print one JSON object (name, input_size, num_classes, params, macs)')
  args = parser.parse_args(argv)
  try:
    parse_name(args.name)
  except ValueError as error:
    parser.error(str(error))
  p = profile(args.name)
  if args.json:
    print(json.dumps({'name': p.name, 'input_size': p.input_size, 'num_classes': p.num_classes,
                      'params': p.params, 'macs': p.macs}))
  else:
    print(format_table(p))
  return 0


if __name__ == '__main__':
  sys.exit(main())
