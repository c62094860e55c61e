"""metrics.jsonl (the source of every plot and table), TensorBoard scalars and a progress bar.

Format (docs/ARCHITECTURE.md): one JSON object per line, each with "step" (train
steps done) and "wall_time" (seconds of training, carried across resumes); a
fresh run starts with {"event": "start", ...}, a resumed one appends
{"event": "resume", ...} after dropping the rows beyond the restored checkpoint,
a finished one ends with {"event": "end"}. Only process 0 writes; TensorBoard
(tensorboardX, which imports torch) is imported only when the first scalar is written.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterable, Mapping

import tqdm

from resnet_jax.files import atomic_write_text

METRICS_FILE = 'metrics.jsonl'
TENSORBOARD_DIR = 'tensorboard'


def ended(rows: list[dict]) -> bool:
  """True when the rows of a metrics.jsonl end with the 'end' event: the run finished."""
  return bool(rows) and rows[-1].get('event') == 'end'


def read_rows(path: str) -> list[dict]:
  """The rows of a metrics.jsonl file; a torn last line (a crash mid-write) is skipped."""
  if not os.path.exists(path):
    return []
  rows = []
  with open(path) as f:
    for line in f:
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError:
        continue
  return rows


def _natural_key(name: str) -> tuple:
  """'stage10_block2/conv1' after 'stage2_block9/conv1': digits compare as numbers."""
  return tuple(int(t) if t.isdigit() else t for t in re.split(r'(\d+)', name))


def network_order(names: Iterable[str]) -> list[str]:
  """Module paths from input to output: stem, stages and blocks by number, then the rest (head)."""
  def rank(name: str) -> tuple:
    group = 0 if name.startswith('stem') else 1 if name.startswith('stage') else 2
    return (group, _natural_key(name))
  return sorted(names, key=rank)


def _plain(value):
  """JSON-ready Python numbers from numpy/jax scalars; dicts keep their order."""
  if isinstance(value, Mapping):
    return {k: _plain(v) for k, v in value.items()}
  if hasattr(value, 'item'):
    return value.item()
  return value


class MetricsWriter:
  """Appends rows to workdir/metrics.jsonl and TensorBoard (process 0; a no-op elsewhere)."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.path = os.path.join(workdir, METRICS_FILE)
    self.enabled = enabled
    self._tensorboard_dir = os.path.join(workdir, TENSORBOARD_DIR)
    self._tensorboard = None  # opened with the first scalar, so a no-op rerun writes nothing
    self._purge_step = None

  def __enter__(self) -> MetricsWriter:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  def start(self, row: Mapping) -> None:
    """A fresh run: replaces any earlier file with the start event."""
    if self.enabled:
      atomic_write_text(self.path, json.dumps(_plain(row)) + '\n')

  def resume(self, step: int, row: Mapping) -> list[dict]:
    """Keeps the rows up to `step` (the restored checkpoint) but "end", appends `row`.

    TensorBoard drops the events of the earlier run past `step`. Returns the kept rows.
    """
    if not self.enabled:
      return []
    self._purge_step = step + 1
    kept = [r for r in read_rows(self.path) if r['step'] <= step and r.get('event') != 'end']
    atomic_write_text(self.path, ''.join(json.dumps(r) + '\n' for r in kept))
    self.write(row)
    return kept

  def write(self, row: Mapping) -> None:
    if not self.enabled:
      return
    row = _plain(row)
    with open(self.path, 'a') as f:
      f.write(json.dumps(row) + '\n')
    if 'event' not in row:
      self._scalars(row)

  def _scalars(self, row: dict) -> None:
    if self._tensorboard is None:
      from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
      self._tensorboard = SummaryWriter(self._tensorboard_dir, purge_step=self._purge_step)
    for key, value in row.items():
      if key in ('step', 'wall_time'):
        continue
      if isinstance(value, dict):
        for name, v in value.items():
          self._tensorboard.add_scalar(f'{key}/{name}', v, row['step'])
      else:
        self._tensorboard.add_scalar(key, value, row['step'])

  def close(self) -> None:
    if self._tensorboard is not None:
      self._tensorboard.close()


class Progress:
  """A tqdm bar over train steps: ETA, step rate, latest metrics (process 0, on a TTY)."""

  def __init__(self, total: int, initial: int, enabled: bool = True):
    self._bar = tqdm.tqdm(
        total=total, initial=initial, unit='step', dynamic_ncols=True,
        disable=None if enabled else True, file=sys.stderr)

  def update(self, steps: int, latest: Mapping) -> None:
    self._bar.update(steps)
    shown = {k: v for k, v in latest.items() if isinstance(v, float) and k != 'wall_time'}
    if shown:
      self._bar.set_postfix({k: f'{v:.4g}' for k, v in shown.items()}, refresh=False)

  def close(self) -> None:
    self._bar.close()
