"""A fake study: metrics.jsonl files in the format of docs/ARCHITECTURE.md, written
from random numbers kept as the ground truth that figures and tables are checked against."""

import json

import numpy as np
import pytest

LAYERS = ('stem_conv', 'stage1_block1/conv1', 'stage1_block1/conv2', 'stage2_block1/conv1', 'head')


def _run_rows(rng: np.random.Generator, model: str, num_steps: int,
              grad_norms: bool) -> tuple[list[dict], dict]:
  log_every, eval_every = num_steps // 16, num_steps // 4
  train_steps = np.arange(log_every, num_steps + 1, log_every)
  eval_steps = np.arange(eval_every, num_steps + 1, eval_every)
  truth = {
      'train_steps': train_steps, 'eval_steps': eval_steps,
      'train_error': rng.uniform(0, 1, len(train_steps)),
      'test_error': rng.uniform(0, 1, len(eval_steps)),
      'val_error': rng.uniform(0, 1, len(eval_steps)),
      'grad_norms': rng.uniform(1e-4, 1, (len(train_steps), len(LAYERS))) if grad_norms else None,
      'params': int(rng.integers(1e5, 1e6)), 'wall_time': float(rng.uniform(100, 1000)),
      'train_loss': rng.uniform(0.5, 2.5, len(train_steps)),
  }
  rows = [{'event': 'start', 'step': 0, 'wall_time': 0.0, 'model': model, 'params': truth['params'],
           'dataset': 'cifar10', 'devices': 1, 'process_count': 1, 'batch_size': 128,
           'num_train_steps': num_steps}]
  for i, step in enumerate(train_steps):
    row = {'step': int(step), 'wall_time': truth['wall_time'] * step / num_steps,
           'train_loss': truth['train_loss'][i],
           'train_error': truth['train_error'][i], 'learning_rate': 0.1, 'images_per_sec': 1000.0}
    if grad_norms:
      row['grad_norms'] = dict(zip(LAYERS, truth['grad_norms'][i].tolist()))
    rows.append(row)
    if step in eval_steps:
      j = list(eval_steps).index(step)
      rows.append({'step': int(step), 'wall_time': row['wall_time'], 'test_loss': 1.0,
                   'test_error': truth['test_error'][j], 'val_loss': 1.0,
                   'val_error': truth['val_error'][j]})
  rows.append({'event': 'end', 'step': num_steps, 'wall_time': truth['wall_time']})
  return rows, truth


@pytest.fixture
def fake_study(tmp_path):
  """Returns make(models, seeds, num_steps) -> (workdir, truth[model][seed])."""

  def make(models=('plain20', 'plain56', 'resnet20', 'resnet56'), seeds=2, num_steps=64000):
    rng = np.random.default_rng(0)
    truth = {}
    for model in models:
      for seed in range(seeds):
        rows, truth.setdefault(model, {})[seed] = _run_rows(rng, model, num_steps,
                                                            grad_norms=model.endswith('56'))
        run_dir = tmp_path / 'study' / model / f'seed{seed}'
        run_dir.mkdir(parents=True)
        (run_dir / 'metrics.jsonl').write_text(''.join(json.dumps(row) + '\n' for row in rows))
        (run_dir / 'config.json').write_text(json.dumps(
            {'model': model, 'seed': seed, 'dataset': 'cifar10', 'batch_size': 128,
             'num_train_steps': num_steps, 'train_subset': 0, 'test_subset': 0}))
    return tmp_path / 'study', truth

  return make
