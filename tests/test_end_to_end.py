"""End to end: resnet8 trains on tfds mock CIFAR-10 and, through the CLI, on an image folder."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import cifar10
from resnet_jax.data import sources
from resnet_jax.train import checkpoint, loop, metrics
from tests.image_folders import write_colour_folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START_KEYS = {'event', 'step', 'wall_time', 'model', 'params', 'dataset', 'devices',
              'process_count', 'batch_size', 'num_train_steps', 'train_subset', 'test_subset'}
TRAIN_KEYS = {'step', 'wall_time', 'train_loss', 'train_error', 'learning_rate', 'images_per_sec'}


def read(workdir) -> list[dict]:
  with open(os.path.join(workdir, metrics.METRICS_FILE)) as f:
    return [json.loads(line) for line in f]


def checkpoint_steps(workdir) -> list[int]:
  return sorted(int(p) for p in os.listdir(os.path.join(workdir, checkpoint.CHECKPOINT_DIR))
                if p.isdigit())


def test_tfds_mock_cifar10(tmp_path, monkeypatch):
  monkeypatch.setattr(sources, 'reachable', lambda host, port: True)  # mock_data downloads nothing
  config = cifar10.get_config('resnet8')
  config.update(val_split=8, batch_size=8, eval_batch_size=16, num_train_steps=24,
                log_every_steps=4, eval_every_steps=12, checkpoint_every_steps=12,
                lr_boundaries=(16,))
  workdir = str(tmp_path / 'run')
  with tfds.testing.mock_data(num_examples=40):
    summary = loop.train_and_evaluate(config, workdir)
  rows = read(workdir)
  assert set(rows[0]) == START_KEYS and rows[0]['model'] == 'resnet8'
  assert rows[0]['params'] > 70_000 and rows[0]['dataset'] == 'cifar10'
  train = [r for r in rows if 'train_loss' in r]
  assert [r['step'] for r in train] == list(range(4, 25, 4))
  assert all(set(r) == TRAIN_KEYS for r in train)
  # The rate of each row's last step: step 15 still 0.1, from step 16 on 0.01.
  assert [r['learning_rate'] for r in train] == pytest.approx([0.1] * 4 + [0.01] * 2, rel=1e-6)
  evals = [r for r in rows if 'test_loss' in r]
  assert [r['step'] for r in evals] == [12, 24]
  assert all(set(r) == {'step', 'wall_time', 'test_loss', 'test_error', 'val_loss', 'val_error'}
             for r in evals)
  assert all(0.0 <= r['test_error'] <= 1.0 and np.isfinite(r['test_loss']) for r in evals)
  assert rows[-1] == {'step': 24, 'wall_time': rows[-1]['wall_time'], 'event': 'end'}
  assert summary['step'] == 24 and summary['val_error'] == evals[-1]['val_error']
  assert checkpoint_steps(workdir) == [12, 24]
  assert os.listdir(os.path.join(workdir, metrics.TENSORBOARD_DIR))
  with open(os.path.join(workdir, checkpoint.CONFIG_FILE)) as f:
    assert json.load(f)['num_train_steps'] == 24


# `python -m resnet_jax.main` with TensorFlow and tfds made unimportable: image folders need neither
# (GPU images often lack them).
WITHOUT_TENSORFLOW = ('import runpy, sys; '
                      'sys.modules.update(tensorflow=None, tensorflow_datasets=None); '
                      "sys.argv[0] = 'resnet_jax.main'; "
                      "runpy.run_module('resnet_jax.main', run_name='__main__')")


def run_cli(workdir, data_dir, num_train_steps, cache_dir) -> subprocess.CompletedProcess:
  """The CLI in a fresh process without TensorFlow; the runs share a persistent XLA cache to save
  compile time."""
  env = {**os.environ, 'JAX_COMPILATION_CACHE_DIR': str(cache_dir),
         'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0'}
  command = [
      sys.executable, '-c', WITHOUT_TENSORFLOW, '--config=configs/cifar10.py:resnet8',
      f'--workdir={workdir}', '--config.dataset=image_folder', f'--config.data_dir={data_dir}',
      '--config.batch_size=8', '--config.eval_batch_size=16', '--config.log_every_steps=4',
      '--config.eval_every_steps=8', '--config.checkpoint_every_steps=8',
      '--config.lr_boundaries=(20,)', f'--config.num_train_steps={num_train_steps}']
  return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_image_folder_through_the_cli_and_resume(tmp_path):
  write_colour_folder(tmp_path / 'data', train=8, test=3)
  workdir = tmp_path / 'run'
  first = run_cli(workdir, tmp_path / 'data', 16, tmp_path / 'xla_cache')
  assert first.returncode == 0, first.stderr[-3000:]
  assert json.loads(first.stdout.strip().splitlines()[-1])['step'] == 16
  assert checkpoint_steps(workdir) == [8, 16]
  rows = read(workdir)
  assert rows[0]['dataset'] == 'image_folder' and rows[-1]['event'] == 'end'

  # The same run, trained further: resumes at 16 and redoes no step.
  second = run_cli(workdir, tmp_path / 'data', 24, tmp_path / 'xla_cache')
  assert second.returncode == 0, second.stderr[-3000:]
  rows = read(workdir)
  assert [(r['step'], r['event']) for r in rows if 'event' in r] == [
      (0, 'start'), (16, 'resume'), (24, 'end')]
  assert [r['step'] for r in rows if 'train_loss' in r] == [4, 8, 12, 16, 20, 24]
  assert [r['step'] for r in rows if 'test_loss' in r] == [8, 16, 24]
  assert {16, 24} <= set(checkpoint_steps(workdir))  # the latest two (plus the best)
