"""metrics.jsonl writing, resume truncation, TensorBoard files and network order."""

import json
import os
import subprocess
import sys
from unittest import mock

import numpy as np

from resnet_jax.train import metrics

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def lines(path) -> list[dict]:
  with open(path) as f:
    return [json.loads(line) for line in f]


def test_start_write_and_resume_truncation(tmp_path):
  writer = metrics.MetricsWriter(str(tmp_path))
  writer.start({'event': 'start', 'step': 0, 'wall_time': 0.0})
  for step in (10, 20, 30):
    writer.write({'step': step, 'wall_time': float(step), 'train_loss': np.float32(1.0 / step),
                  'grad_norms': {'stem_conv': np.float32(2.0)}})
  writer.write({'step': 30, 'wall_time': 30.0, 'event': 'end'})
  writer.close()
  rows = lines(tmp_path / metrics.METRICS_FILE)
  assert [r['step'] for r in rows] == [0, 10, 20, 30, 30]
  assert rows[1]['train_loss'] == np.float32(0.1).item()
  assert rows[1]['grad_norms'] == {'stem_conv': 2.0}
  assert any(name.startswith('events.out.tfevents')
             for name in os.listdir(tmp_path / metrics.TENSORBOARD_DIR))

  with open(tmp_path / metrics.METRICS_FILE, 'a') as f:
    f.write('{"step": 40, "wall_ti')  # a torn last line, as after a crash mid-write
  resumed = metrics.MetricsWriter(str(tmp_path))
  kept = resumed.resume(20, {'event': 'resume', 'step': 20, 'wall_time': 20.0})
  resumed.close()
  assert [r['step'] for r in kept] == [0, 10, 20]
  rows = lines(tmp_path / metrics.METRICS_FILE)
  assert [(r['step'], r.get('event')) for r in rows] == [
      (0, 'start'), (10, None), (20, None), (20, 'resume')]

  fresh = metrics.MetricsWriter(str(tmp_path))
  fresh.start({'event': 'start', 'step': 0, 'wall_time': 0.0})
  fresh.close()
  assert lines(tmp_path / metrics.METRICS_FILE) == [{'event': 'start', 'step': 0, 'wall_time': 0.0}]


def test_disabled_writer_writes_nothing(tmp_path):
  writer = metrics.MetricsWriter(str(tmp_path), enabled=False)
  writer.start({'event': 'start', 'step': 0, 'wall_time': 0.0})
  writer.write({'step': 1, 'wall_time': 1.0, 'train_loss': 1.0})
  assert writer.resume(0, {'event': 'resume', 'step': 0, 'wall_time': 0.0}) == []
  writer.close()
  assert os.listdir(tmp_path) == []


def test_network_order():
  names = ['head', 'stage2_block1/conv1', 'stage10_block1/conv1', 'stage1_block2/shortcut_conv',
           'stem_conv', 'stage1_block10/conv1', 'stage1_block2/conv2', 'stage1_block2/conv1']
  assert metrics.network_order(names) == [
      'stem_conv', 'stage1_block2/conv1', 'stage1_block2/conv2', 'stage1_block2/shortcut_conv',
      'stage1_block10/conv1', 'stage2_block1/conv1', 'stage10_block1/conv1', 'head']


def test_resume_purges_later_tensorboard_events(tmp_path, monkeypatch):
  import tensorboardX  # pylint: disable=import-outside-toplevel
  opened = []

  def summary_writer(logdir, purge_step):
    opened.append((logdir, purge_step))
    return mock.Mock()
  monkeypatch.setattr(tensorboardX, 'SummaryWriter', summary_writer)
  writer = metrics.MetricsWriter(str(tmp_path))
  writer.resume(20, {'event': 'resume', 'step': 20, 'wall_time': 20.0})
  writer.write({'step': 24, 'wall_time': 24.0, 'train_loss': 1.0})
  (tmp_path / 'fresh').mkdir()
  fresh = metrics.MetricsWriter(str(tmp_path / 'fresh'))
  fresh.write({'step': 4, 'wall_time': 4.0, 'train_loss': 1.0})
  tensorboard = str(tmp_path / metrics.TENSORBOARD_DIR)
  assert opened == [(tensorboard, 21), (str(tmp_path / 'fresh' / metrics.TENSORBOARD_DIR), None)]


def test_importing_the_loop_leaves_torch_out():
  """tensorboardX imports torch (seconds per process); it waits for the first scalar."""
  code = 'import sys, resnet_jax.main; print(sorted({"torch", "tensorboardX"} & set(sys.modules)))'
  result = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, 'PYTHONPATH': ROOT}, check=True)
  assert result.stdout.strip() == '[]'
