"""`python -m resnet_jax.summary NAME [--json]`: a layer table, the parameter count and the
multiply-adds of one image.

Multiply-adds count the convolutions and the dense layer, as He 2015 Table 1 counts "FLOPs"
(1.8G for ResNet-18 ... 11.3G for ResNet-152): h_out * w_out * k * k * c_in * c_out per
convolution, c_in * c_out for the dense layer; BN, ReLU, pooling and additions are not counted.
Everything runs under jax.eval_shape, so even resnet1202 costs only tracing. The table describes
the network, one row per block, in the unrolled layout's names (stage{s}_block{b}) whichever
layout it trains in (resnet_jax/models/layout.py): both hold the same parameters. Flax's
Module.tabulate is not used: its total adds batch_stats to the parameters and it has no
multiply-add column of this kind.
"""

import argparse
import functools
import json
import math
import operator
import sys
from collections.abc import Sequence
from typing import NamedTuple

import flax.linen as nn
import jax

from resnet_jax.models import get_model, input_size, parse_name
from resnet_jax.models.probe import Call, abstract_init


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
  model, size = get_model(name, scan_blocks='unrolled'), input_size(name)
  variables, calls = abstract_init(model, size)
  params = variables['params']
  macs = [(call.path, _macs(call, params)) for call in calls]
  layers = [
      Layer(call.path[0], call.kind.__name__, call.output.shape[1:], _size(params[call.path[0]]),
            sum(m for path, m in macs if path[:1] == call.path))
      for call in calls if len(call.path) == 1]
  return Profile(name, size, model.num_classes, layers, _size(params), sum(m for _, m in macs))


def _macs(call: Call, params: dict) -> int:
  """Output positions x weights per position for a convolution or dense layer, else 0."""
  if not issubclass(call.kind, (nn.Conv, nn.Dense)):
    return 0
  kernel = functools.reduce(operator.getitem, call.path, params)['kernel']
  return math.prod(call.output.shape[:-1]) * math.prod(kernel.shape)


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
