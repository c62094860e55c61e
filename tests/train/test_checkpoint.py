"""orbax checkpoints of the train state, retention, and the workdir guard."""

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import cifar10
from resnet_jax import parallel
from resnet_jax.train import checkpoint
from resnet_jax.train.state import create_train_state
from tests.tiny import optimizer_of


class Linear(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool):
    x = nn.BatchNorm(use_running_average=not train, name='stem_bn')(x.reshape(len(x), -1))
    return nn.Dense(3, name='head')(x)


def plateau_config():
  config = cifar10.get_config('resnet8')
  config.update(optimizer='adam', learning_rate=1e-3, schedule='plateau', lr_boundaries=(),
                plateau_patience=1, plateau_factor=0.5)
  return config


def new_state(optimizer):
  return create_train_state(Linear(), optimizer.tx, (2, 2, 1), 0, parallel.make_mesh())


def test_restore_returns_the_saved_state_with_plateau_state(tmp_path):
  optimizer = optimizer_of(plateau_config())
  state = new_state(optimizer)
  grads = jax.tree.map(jnp.ones_like, state.params)
  state = state.apply_gradients(grads=grads, batch_stats=jax.tree.map(lambda x: x + 2.0,
                                                                      state.batch_stats))
  opt_state = optimizer.observe(optimizer.observe(state.opt_state, 1.0), 2.0)  # scale 0.5
  state = state.replace(opt_state=opt_state)
  saver = checkpoint.Checkpointer(str(tmp_path), keep=2, best_metric='test_error')
  saver.save(1, state, {'wall_time': 12.5})
  saver.close()

  restorer = checkpoint.Checkpointer(str(tmp_path), keep=2, best_metric='test_error')
  assert restorer.latest_step() == 1
  restored, meta = restorer.restore(new_state(optimizer))
  restorer.close()
  assert meta == {'wall_time': 12.5}
  assert int(restored.step) == 1
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert float(optimizer.learning_rate(restored.opt_state, restored.step)) == pytest.approx(5e-4)


def test_a_checkpoint_without_its_checksum_is_damaged(tmp_path):
  optimizer = optimizer_of(plateau_config())
  with checkpoint.Checkpointer(str(tmp_path), keep=2, best_metric='test_error') as saver:
    saver.save(1, new_state(optimizer), {'wall_time': 1.0})
  meta_file = tmp_path / checkpoint.CHECKPOINT_DIR / '1' / 'meta' / 'metadata'
  meta = json.loads(meta_file.read_text())
  meta_file.write_text(json.dumps({k: v for k, v in meta.items() if k != 'checksum'}))
  with checkpoint.Checkpointer(str(tmp_path), keep=2, best_metric='test_error') as restorer:
    with pytest.raises(ValueError, match=r'step 1: its meta holds no checksum'):
      restorer.restore(new_state(optimizer))


def test_keeps_the_latest_checkpoints_and_the_best(tmp_path):
  optimizer = optimizer_of(plateau_config())
  state = new_state(optimizer)
  saver = checkpoint.Checkpointer(str(tmp_path), keep=2, best_metric='val_error')
  errors = {10: 0.5, 20: 0.2, 30: 0.4, 40: None, 50: 0.6}  # step 40 was not evaluated
  for step, error in errors.items():
    saver.save(step, state, {'wall_time': 0.0}, None if error is None else {'val_error': error})
  saver.close()
  kept = sorted(int(p) for p in os.listdir(tmp_path / checkpoint.CHECKPOINT_DIR) if p.isdigit())
  assert kept == [20, 40, 50]


def test_workdir_holding_another_run_is_refused(tmp_path):
  config = cifar10.get_config('resnet8')
  checkpoint.check_workdir(config, str(tmp_path))  # empty workdir: fine
  checkpoint.write_config(config, str(tmp_path))
  with open(tmp_path / checkpoint.CONFIG_FILE) as f:
    assert json.load(f)['model'] == 'resnet8'
  assert os.listdir(tmp_path) == [checkpoint.CONFIG_FILE]  # no temporary file left
  config.num_train_steps = 10  # the same run, longer: accepted
  checkpoint.check_workdir(config, str(tmp_path))
  config.model = 'resnet20'
  with pytest.raises(ValueError, match="holds another run .*model='resnet8'") as error:
    checkpoint.check_workdir(config, str(tmp_path))
  assert '\n' not in str(error.value)


def test_a_state_with_nan_is_not_saved(tmp_path):
  optimizer = optimizer_of(plateau_config())
  state = new_state(optimizer)  # its plateau state holds Inf by design: saved
  saver = checkpoint.Checkpointer(str(tmp_path), keep=2, best_metric='test_error')
  saver.save(1, state, {'wall_time': 0.0})
  saver.wait()
  bad = state.replace(params=jax.tree.map(lambda x: x.at[0].set(jnp.nan), state.params))
  with pytest.raises(checkpoint.NonFiniteStateError, match='at step 2 hold NaN or Inf'):
    saver.save(2, bad, {'wall_time': 0.0})
  saver.close()
  assert os.listdir(tmp_path / checkpoint.CHECKPOINT_DIR) == ['1']


def test_nothing_is_created_before_the_first_save(tmp_path):
  optimizer = optimizer_of(plateau_config())
  with checkpoint.Checkpointer(str(tmp_path / 'run'), keep=2, best_metric='test_error') as ckpt:
    assert ckpt.restore(new_state(optimizer)) is None
  assert not (tmp_path / 'run').exists()


def test_workdir_that_cannot_be_created_is_refused(tmp_path):
  (tmp_path / 'file').write_text('')
  with pytest.raises(ValueError, match=f'cannot be created: {tmp_path}/file is a file'):
    checkpoint.check_workdir(cifar10.get_config('resnet8'), str(tmp_path / 'file' / 'run'))
  checkpoint.check_workdir(cifar10.get_config('resnet8'), str(tmp_path / 'new' / 'run'))
  assert sorted(os.listdir(tmp_path)) == ['file']  # checking created nothing


@pytest.mark.parametrize('read_only', [True, False])
def test_a_reader_leaves_a_save_in_progress(tmp_path, read_only):
  """evaluate, convert and init_from open the checkpoints of a run that may still be training:
  read-only, they must not clean up its temporary folder. The control, a writer, cleans it up
  (orbax does so in the background, finished before the writer's first save)."""
  optimizer = optimizer_of(plateau_config())
  with checkpoint.Checkpointer(str(tmp_path), keep=2, best_metric='test_error') as saver:
    saver.save(1, new_state(optimizer), {'wall_time': 1.0})
  in_progress = tmp_path / checkpoint.CHECKPOINT_DIR / '2.orbax-checkpoint-tmp-1764720000000000'
  (in_progress / 'state').mkdir(parents=True)
  with checkpoint.Checkpointer(str(tmp_path), keep=2, best_metric='test_error',
                               read_only=read_only) as opened:
    assert opened.steps() == [1]
    if not read_only:
      opened.save(3, new_state(optimizer), {'wall_time': 3.0})
  assert in_progress.exists() == read_only
