"""A NaN loss stops the run with one line naming the step and the last good checkpoint,
which is left as it is; the loss is checked once per log interval, not per step."""

import json
import os

from resnet_jax.train import checkpoint
from tests.reliability import harness
from tests.tiny import TINY

DIVERGED_STATUS = 3
# Step 4 is trained at lr 0.1 and checkpointed; from there on lr 1e30 makes the loss NaN.
FIELDS = {**TINY, 'num_train_steps': 40, 'eval_every_steps': 4,
          'checkpoint_every_steps': 4, 'schedule': 'constant', 'warmup_steps': 4,
          'warmup_learning_rate': 0.1, 'learning_rate': 1e30}


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, xla_cache):
  workdir = tmp_path / 'run'
  result = harness.run(harness.command(workdir, **FIELDS), harness.env(xla_cache))
  lines = result.stderr.strip().splitlines()
  assert (result.returncode, len(lines)) == (DIVERGED_STATUS, 1), result.stderr[-3000:]
  folder = workdir / checkpoint.CHECKPOINT_DIR
  assert lines[0] == (
      'error: training diverged at step 8: the mean train loss of steps 5-8 is nan; the last '
      f'good checkpoint, {folder}/4, is left as it is; lower learning_rate (now 1e+30) or '
      'change the recipe before running again')
  assert harness.steps_on_disk(workdir) == [4]
  assert not [p for p in os.listdir(folder) if 'tmp' in p]  # nor a half-written one
  with open(folder / '4' / 'meta' / 'metadata') as f:
    saved_checksum = json.load(f)['checksum']
  assert checkpoint.checksum(harness.saved_state(workdir, 4)) == saved_checksum
  assert [r['step'] for r in harness.rows(workdir) if 'train_loss' in r] == [4]  # no NaN row
