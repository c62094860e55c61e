"""benchmarks/conv_kernels.py: a tiny run writes every (framework, stage, op) row with consistent
numbers and prints the table. No timing is asserted (the CPU is shared)."""

import json
import subprocess
import sys
from pathlib import Path

import jax
import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / 'benchmarks' / 'conv_kernels.py'


def test_tiny_run_writes_json_and_prints_the_table(tmp_path):
  output = tmp_path / 'out' / 'conv.json'
  done = subprocess.run(
      [sys.executable, str(SCRIPT), '--batch_size=2', '--chain_layers=2', '--repeats=1',
       '--calls=1', f'--output={output}'], capture_output=True, text=True, cwd=REPO, timeout=600)
  assert done.returncode == 0, done.stderr[-2000:]
  report = json.loads(output.read_text())
  assert report['backend'] == jax.default_backend()
  assert (report['batch_size'], report['chain_layers']) == (2, 2)
  rows = report['rows']
  assert [(r['framework'], r['stage'], r['op']) for r in rows] == [
      (framework, stage, op) for stage in (1, 2, 3) for framework in ('jax', 'torch')
      for op in ('fwd', 'dgrad', 'wgrad', 'chain')]
  for row in rows:
    size, channels = {1: (32, 16), 2: (16, 32), 3: (8, 64)}[row['stage']]
    assert (row['size'], row['channels']) == (size, channels)
    convs = 3 * 2 - 1 if row['op'] == 'chain' else 1  # no input gradient for the first layer
    flop = convs * 2 * 2 * size * size * 9 * channels * channels
    assert row['ms'] > 0 and row['gflops'] == pytest.approx(flop / row['ms'] / 1e6)
  table = [line for line in done.stdout.splitlines() if line.startswith('|')]
  assert table[0].count('|') == 10 and len(table) == 5
  assert table[2].startswith('| 1 (32x32, 16) |') and table[4].startswith('| 3 (8x8, 64) |')
