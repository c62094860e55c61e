"""The two layouts of a network's variables, and the one conversion between them.

- 'unrolled': every block its own module, `stage{s}_block{b}` (b = 1 .. n), the layout of the
  parameter-name contract (resnet_jax/models/blocks.py).
- 'stacked': the first block of each stage unrolled as `stage{s}_block1`, the other n - 1 blocks
  of the stage (identical in shape: stride 1, same width) as one module `stage{s}_blocks` whose
  every array has a leading axis of n - 1, block b at index b - 2. ResNet applies them as one
  loop (flax.linen.scan), so XLA compiles a stage's block once: compile time grows with the
  number of stages, not of blocks. A stage of one block has no `stage{s}_blocks`.

`convert_layout` maps any tree keyed like the variables (variables, params, batch_stats,
gradients, a PyTorch import) from one layout to the other; on arrays it only stacks and
indexes, so a round trip is exact. The same variables give the same logits and gradients in both
layouts (tests/models/test_scan.py), but the layouts draw random numbers differently: with one
seed, blocks 2..n start from other weights and dropout_shortcut draws other masks.
"""

import re
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from resnet_jax.config import LAYOUTS, SCAN_CHOICES

# 'auto' stacks networks with at least this many blocks in a stage: ResNet-1202 (200) and
# ResNet-1001 (111), whose unrolled train steps take many minutes to compile (benchmarks/
# RESULTS.md, "Thousand-layer networks"); the networks of the papers' other tables (at most 18
# blocks a stage, ResNet-110 and -164) keep the unrolled layout, their checkpoints and names.
SCAN_MIN_BLOCKS = 64
_BLOCK = re.compile(r'stage(\d+)_block(\d+)')
_STACK = re.compile(r'stage(\d+)_blocks')


def scans(scan_blocks: str, stage_sizes: Sequence[int]) -> bool:
  """Whether a network of `stage_sizes` blocks per stage is built stacked under `scan_blocks`
  (one of SCAN_CHOICES); one-line ValueError for another value."""
  if scan_blocks not in SCAN_CHOICES:
    raise ValueError(f'scan_blocks={scan_blocks!r} is unknown; use one of {SCAN_CHOICES}')
  if scan_blocks == 'auto':
    return max(stage_sizes) >= SCAN_MIN_BLOCKS
  return scan_blocks == 'stacked'


def is_stacked(module: str) -> bool:
  """Whether a top-level module name is a stack of blocks ('stage2_blocks')."""
  return _STACK.fullmatch(module) is not None


def _is_block_level(tree: Mapping) -> bool:
  return any(_BLOCK.fullmatch(str(k)) or _STACK.fullmatch(str(k)) for k in tree)


def layout_of(tree: Any) -> str:
  """'stacked' if the tree (nested mappings, e.g. variables or a checkpoint's paths) holds a
  `stage{s}_blocks` module anywhere, else 'unrolled'."""
  if not isinstance(tree, Mapping):
    return 'unrolled'
  if any(is_stacked(str(k)) for k in tree):
    return 'stacked'
  return 'stacked' if any(layout_of(v) == 'stacked' for v in tree.values()) else 'unrolled'


def convert_layout(tree: Any, layout: str) -> Any:
  """`tree` (nested mappings whose module level holds stage{s}_block{b} or stage{s}_blocks keys)
  in `layout`, one of LAYOUTS; a tree already in it comes back equal. Other levels and leaves are
  kept; keys stay in network order."""
  if layout not in LAYOUTS:
    raise ValueError(f'layout {layout!r} is unknown; use one of {LAYOUTS}')
  if not isinstance(tree, Mapping):
    return tree
  if _is_block_level(tree):
    return _stacked(tree) if layout == 'stacked' else _unrolled(tree)
  return {key: convert_layout(value, layout) for key, value in tree.items()}


def _stacked(level: Mapping) -> dict:
  """Blocks 2 .. n of each stage stacked into stage{s}_blocks, placed where block 2 was."""
  later = {}
  for key in level:
    block = _BLOCK.fullmatch(str(key))
    if block and int(block[2]) > 1:
      later.setdefault(int(block[1]), []).append((int(block[2]), key))
  out = {}
  for key, value in level.items():
    block = _BLOCK.fullmatch(str(key))
    if not block or int(block[2]) == 1:
      out[key] = value
    elif int(block[2]) == min(later[int(block[1])])[0]:
      stage = int(block[1])
      members = [level[k] for _, k in sorted(later[stage])]
      out[f'stage{stage}_blocks'] = jax.tree.map(_stack, *members)
  return out


def _stack(*xs: Any) -> Any:
  """numpy arrays stay numpy (host trees, PyTorch imports); jax arrays and tracers stack in jax."""
  return np.stack(xs) if all(isinstance(x, np.ndarray) for x in xs) else jnp.stack(xs)


def _unrolled(level: Mapping) -> dict:
  """Each stage{s}_blocks split into stage{s}_block2 .. block{n}, placed where it was."""
  out = {}
  for key, value in level.items():
    stack = _STACK.fullmatch(str(key))
    if not stack:
      out[key] = value
      continue
    length = jax.tree.leaves(value)[0].shape[0]
    for i in range(length):
      out[f'stage{stack[1]}_block{i + 2}'] = jax.tree.map(lambda x, i=i: x[i], value)
  return out
