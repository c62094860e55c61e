"""train_and_evaluate: bad input before any work, and an interrupted run resumed identically."""

import os

import pytest

from resnet_jax.train import checkpoint, inputs, loop, metrics
from tests.tiny import tiny_config


def logged_config(**overrides):
  """The tiny run logged every 2 steps, with per-layer gradient norms."""
  return tiny_config(**{'log_every_steps': 2, 'log_grad_norms': True, **overrides})


def assert_one_line_error_and_nothing_written(config, workdir, match):
  before = sorted(os.listdir(workdir)) if os.path.exists(workdir) else None
  with pytest.raises(loop.ConfigError, match=match) as error:
    loop.train_and_evaluate(config, workdir)
  assert '\n' not in str(error.value)
  after = sorted(os.listdir(workdir)) if os.path.exists(workdir) else None
  assert after == before


@pytest.mark.parametrize('overrides, match', [
    ({'model': 'convnet9'}, "unknown model 'convnet9'"),
    ({'dataset': 'mnist'}, "dataset='mnist' is unknown"),
    ({'batch_size': 0}, 'batch_size=0 must be > 0'),
    ({'num_train_steps': -5}, 'num_train_steps=-5 must be > 0'),
    ({'schedule': 'linear'}, "schedule='linear' is unknown"),
    ({'optimizer': 'rmsprop'}, "optimizer='rmsprop' is unknown"),
    ({'steps_per_call': 5}, 'not a multiple of steps_per_call=5'),
    ({'batch_size': 128}, 'batch_size=128 exceeds the 64 training examples'),
])
def test_bad_config_is_one_line_error_before_any_work(tmp_path, overrides, match):
  assert_one_line_error_and_nothing_written(
      logged_config(**overrides), str(tmp_path / 'run'), match)


def test_missing_data_dir_or_class_folders(tmp_path):
  config = logged_config(dataset='image_folder', data_dir=str(tmp_path / 'nowhere'))
  assert_one_line_error_and_nothing_written(config, str(tmp_path / 'run'), 'is not a directory')
  (tmp_path / 'data' / 'train').mkdir(parents=True)
  (tmp_path / 'data' / 'test').mkdir()
  config.data_dir = str(tmp_path / 'data')
  assert_one_line_error_and_nothing_written(config, str(tmp_path / 'run'), 'has no class folders')


def test_workdir_of_another_run_is_refused(tmp_path):
  workdir = tmp_path / 'run'
  workdir.mkdir()
  checkpoint.write_config(logged_config(model='resnet14'), str(workdir))
  assert_one_line_error_and_nothing_written(logged_config(), str(workdir), 'holds another run')


def files(root) -> list[str]:
  return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def comparable(rows):
  """Rows without events and the timing fields that legitimately differ between runs."""
  return [{k: v for k, v in r.items() if k not in ('wall_time', 'images_per_sec')}
          for r in rows if 'event' not in r]


def test_interrupted_run_resumes_and_equals_an_uninterrupted_one(tmp_path, monkeypatch):
  config = logged_config()
  straight = loop.train_and_evaluate(config, str(tmp_path / 'straight'))
  straight_rows = metrics.read_rows(str(tmp_path / 'straight' / metrics.METRICS_FILE))

  real_train_batch = inputs.InMemoryData.train_batch

  def crash_at_step_10(self, step):
    if step == 10:
      raise KeyboardInterrupt('simulated crash')
    return real_train_batch(self, step)

  workdir = str(tmp_path / 'resumed')
  monkeypatch.setattr(inputs.InMemoryData, 'train_batch', crash_at_step_10)
  with pytest.raises(KeyboardInterrupt):
    loop.train_and_evaluate(config, workdir)
  crashed = metrics.read_rows(os.path.join(workdir, metrics.METRICS_FILE))
  assert max(r['step'] for r in crashed) == 10  # the row at 10 is past the last checkpoint (8)

  monkeypatch.setattr(inputs.InMemoryData, 'train_batch', real_train_batch)
  resumed = loop.train_and_evaluate(config, workdir)
  rows = metrics.read_rows(os.path.join(workdir, metrics.METRICS_FILE))
  events = [(r['step'], r['event']) for r in rows if 'event' in r]
  assert events == [(0, 'start'), (8, 'resume'), (12, 'end')]
  assert comparable(rows) == comparable(straight_rows)
  assert resumed['test_loss'] == straight['test_loss']
  assert [r['step'] for r in rows if 'train_loss' in r] == [2, 4, 6, 8, 10, 12]
  first = next(r for r in rows if 'grad_norms' in r)['grad_norms']
  assert list(first)[0] == 'stem_conv' and list(first)[-1] == 'head'
  assert list(first)[1] == 'stage1_block1/conv1'
  wall_times = [r['wall_time'] for r in rows]
  assert wall_times == sorted(wall_times)  # carried across the resume

  # Re-running the finished run's command restores, finds the end and adds nothing.
  before = open(os.path.join(workdir, metrics.METRICS_FILE)).read(), files(workdir)
  assert loop.train_and_evaluate(config, workdir) == resumed
  assert (open(os.path.join(workdir, metrics.METRICS_FILE)).read(), files(workdir)) == before
