"""A run killed, crashed inside a checkpoint write or stopped by signals, and started again
with the same command, ends bitwise identical to an uninterrupted run.

One workdir goes through every kind of interruption in turn (each run resumes what
the previous one left); kill steps are drawn at random and printed on failure.
"""

import os
import signal

import numpy as np
import pytest

from resnet_jax.train import checkpoint, inputs, loop
from tests.reliability import harness
from tests.tiny import TINY, tiny_config

# log rows every 6 steps, checkpoints every 12: a signal usually stops a run inside a
# log interval, whose partial sums the stop checkpoint must carry.
FIELDS = {**TINY, 'num_train_steps': 84, 'log_every_steps': 6, 'eval_every_steps': 12,
          'checkpoint_every_steps': 12, 'keep_checkpoints': 3, 'schedule': 'plateau',
          'lr_boundaries': (40,), 'plateau_patience': 1, 'log_grad_norms': True}
CHECKPOINT_EVERY = FIELDS['checkpoint_every_steps']


def latest(workdir) -> int:
  return max(harness.steps_on_disk(workdir), default=0)


def test_killed_crashed_and_stopped_runs_end_as_an_uninterrupted_one(tmp_path, xla_cache):
  env = harness.env(xla_cache)
  reference = tmp_path / 'reference'
  straight = harness.start(harness.command(reference, **FIELDS), env, tmp_path / 'reference.log')

  workdir = tmp_path / 'interrupted'
  rng = np.random.default_rng()
  kill_steps = rng.integers(3, 20), rng.integers(3, 10), rng.integers(3, 10)
  history = [f'kill steps {kill_steps}']

  # 1. SIGKILL at a random moment.
  process = harness.start(harness.command(workdir, **FIELDS), env, tmp_path / 'log1')
  status = harness.signal_at_step(process, workdir, kill_steps[0], signal.SIGKILL)
  history.append(f'SIGKILL: status {status}, checkpoints {harness.steps_on_disk(workdir)}')
  assert status == -signal.SIGKILL, history

  # 2., 3. SIGKILL inside orbax: as the next step's temporary folder is made, then just
  # before the step after it is committed.
  for point, step in (('create', latest(workdir) + CHECKPOINT_EVERY),
                      ('finalize', latest(workdir) + 2 * CHECKPOINT_EVERY)):
    crashed = harness.run(harness.command(workdir, crash=(point, step), **FIELDS), env)
    leftovers = os.listdir(workdir / checkpoint.CHECKPOINT_DIR)
    history.append(f'crash at {point} of step {step}: status {crashed.returncode}, {leftovers}')
    assert crashed.returncode == -signal.SIGKILL, (history, crashed.stderr[-3000:])
    assert f'{step}.orbax-checkpoint-tmp' in leftovers and str(step) not in leftovers, history

  # 4., 5. SIGTERM and Ctrl-C: a checkpoint at the step the run stopped at.
  for name, steps_after in (('SIGTERM', kill_steps[1]), ('SIGINT', kill_steps[2])):
    signum, start = harness.SIGNALS[name], latest(workdir)
    log = tmp_path / f'log_{name}'
    process = harness.start(harness.command(workdir, **FIELDS), env, log)
    status = harness.signal_at_step(process, workdir, start + steps_after, signum)
    message = log.read_text().strip().splitlines()[-1]
    history.append(f'{name} after step {start + steps_after}: status {status}, {message}')
    assert status == 128 + signum, history
    stop_step = latest(workdir)
    assert message == (f'stopped by {name} at step {stop_step} of 84 after saving checkpoint '
                       f'{workdir / checkpoint.CHECKPOINT_DIR}/{stop_step}; run the same '
                       'command to resume'), history
    assert start + steps_after <= stop_step < 84, history

  finished = harness.run(harness.command(workdir, **FIELDS), env)
  assert finished.returncode == 0, (history, finished.stderr[-3000:])
  harness.finish(straight, tmp_path / 'reference.log')  # run alongside all along
  rows = harness.rows(workdir)
  assert harness.comparable(rows) == harness.comparable(harness.rows(reference)), history
  assert harness.events(rows)[0] == (0, 'start') and harness.events(rows)[-1] == (84, 'end')
  # (a run killed before its first checkpoint starts afresh: fewer resumes than runs)
  assert {e for _, e in harness.events(rows)[1:-1]} == {'resume'}, history
  assert not [p for p in os.listdir(workdir / checkpoint.CHECKPOINT_DIR) if 'tmp' in p]
  ours, theirs = harness.saved_state(workdir, 84), harness.saved_state(reference, 84)
  assert list(ours) == list(theirs)
  for path in ours:  # parameters, batch statistics, optimiser (and plateau) state, step
    np.testing.assert_array_equal(ours[path], theirs[path], err_msg=f'{path}; {history}')


def test_sigterm_inside_a_log_interval_saves_its_partial_sums(tmp_path, monkeypatch):
  """In-process, so the stop step is exact: SIGTERM arrives while step 5 (of 4..8) runs."""
  config = tiny_config(checkpoint_every_steps=8)
  straight = loop.train_and_evaluate(config, str(tmp_path / 'straight'))
  real_train_batch = inputs.InMemoryData.train_batch

  def sigterm_during_step_5(self, step):
    if step == 5:
      signal.raise_signal(signal.SIGTERM)  # handled by the loop: only a flag is set
    return real_train_batch(self, step)

  workdir = tmp_path / 'stopped'
  handler = signal.getsignal(signal.SIGTERM)
  monkeypatch.setattr(inputs.InMemoryData, 'train_batch', sigterm_during_step_5)
  with pytest.raises(loop.Preempted, match='stopped by SIGTERM at step 6 of 12') as stop:
    loop.train_and_evaluate(config, str(workdir))
  assert stop.value.signum == signal.SIGTERM
  assert signal.getsignal(signal.SIGTERM) == handler  # the loop's handler is removed again
  assert harness.steps_on_disk(workdir) == [6]
  assert [r['step'] for r in harness.rows(workdir) if 'train_loss' in r] == [4]

  monkeypatch.setattr(inputs.InMemoryData, 'train_batch', real_train_batch)
  resumed = loop.train_and_evaluate(config, str(workdir))
  assert harness.events(harness.rows(workdir)) == [(0, 'start'), (6, 'resume'), (12, 'end')]
  assert harness.comparable(harness.rows(workdir)) == harness.comparable(
      harness.rows(tmp_path / 'straight'))
  assert resumed['train_loss'] == straight['train_loss']
