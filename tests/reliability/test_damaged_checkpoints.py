"""Damaged checkpoints: the run falls back to the newest intact one, warns, and ends as if
nothing had happened; with none intact it stops with one line, changing nothing."""

import glob
import logging
import os
import shutil

import numpy as np
import pytest

from resnet_jax.train import checkpoint, loop
from tests.reliability import harness
from tests.tiny import tiny_config

# When one read fails, orbax abandons its other reads; Python reports them as unraisable
# exceptions whenever they are collected.
pytestmark = pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')


def truncate(step_dir):
  path = largest_array_file(step_dir)
  os.truncate(path, os.path.getsize(path) // 2)


def garbage(step_dir):
  """A few bytes overwritten: orbax reads them without complaint; the checksum does not."""
  path = largest_array_file(step_dir)
  with open(path, 'r+b') as f:
    f.seek(os.path.getsize(path) // 2)
    f.write(b'\x13\x37\xbe\xef')


def delete(step_dir):
  os.remove(largest_array_file(step_dir))


def empty(step_dir):
  shutil.rmtree(step_dir)
  os.mkdir(step_dir)


def torn_meta(step_dir):
  with open(os.path.join(step_dir, 'meta', 'metadata'), 'w') as f:
    f.write('{"wall_ti')


def largest_array_file(step_dir) -> str:
  return max(glob.glob(os.path.join(step_dir, 'state', 'ocdbt.process_0', 'd', '*')),
             key=os.path.getsize)


# Newest first, so every one is skipped in turn before step 2 restores.
DAMAGE = {12: truncate, 10: garbage, 8: delete, 6: empty, 4: torn_meta}
REASONS = {12: 'Encountered error while reading array', 10: 'do not match the checksum',
           8: 'Encountered error while reading array', 6: 'unreadable metadata',
           4: 'Unterminated string'}


def config():
  """Checkpoints every 2 steps, rows every 4: step 2, the one restored, is inside a log interval."""
  return tiny_config(checkpoint_every_steps=2, keep_checkpoints=6)


def test_damaged_checkpoints_are_set_aside_and_the_run_resumes_from_an_intact_one(
    tmp_path, caplog):
  reference = tmp_path / 'reference'
  loop.train_and_evaluate(config(), str(reference))
  assert harness.steps_on_disk(reference) == [2, 4, 6, 8, 10, 12]

  workdir = tmp_path / 'damaged'
  shutil.copytree(reference, workdir)
  folder = workdir / checkpoint.CHECKPOINT_DIR
  for step, damage in DAMAGE.items():
    damage(folder / str(step))
  everything_damaged = tmp_path / 'all_damaged'
  shutil.copytree(workdir, everything_damaged)
  garbage(everything_damaged / checkpoint.CHECKPOINT_DIR / '2')

  with caplog.at_level(logging.WARNING):
    loop.train_and_evaluate(config(), str(workdir))
  warnings = [r.getMessage() for r in caplog.records if 'is damaged' in r.getMessage()]
  assert len(warnings) == len(DAMAGE)
  for warning, (step, reason) in zip(warnings, REASONS.items(), strict=True):
    assert warning.startswith(f'checkpoint {folder}/{step} is damaged (')
    assert reason in warning and warning.endswith(
        f'moved it to {workdir / checkpoint.DAMAGED_DIR}/{step} and resumed from step 2')
  assert sorted(os.listdir(workdir / checkpoint.DAMAGED_DIR)) == sorted(map(str, DAMAGE))
  assert harness.events(harness.rows(workdir)) == [(0, 'start'), (2, 'resume'), (12, 'end')]
  assert harness.comparable(harness.rows(workdir)) == harness.comparable(
      harness.rows(reference))
  ours, theirs = harness.saved_state(workdir, 12), harness.saved_state(reference, 12)
  for path in ours:
    np.testing.assert_array_equal(ours[path], theirs[path], err_msg=path)

  before = harness.files(everything_damaged)
  with pytest.raises(loop.ConfigError, match='no checkpoint in .* can be restored') as error:
    loop.train_and_evaluate(config(), str(everything_damaged))
  assert '\n' not in str(error.value) and 'step 2: its arrays do not match' in str(error.value)
  assert harness.files(everything_damaged) == before
