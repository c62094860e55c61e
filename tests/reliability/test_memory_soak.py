"""Host memory stays flat over a long run (opt-in: RESNET_JAX_SLOW=1, a few minutes).

    RESNET_JAX_SLOW=1 python -m pytest -q -s tests/reliability/test_memory_soak.py

Trains resnet8 on 8x8 synthetic images for 6,000 steps (10 per compiled call) with
logging, evaluation and checkpoints on their usual rhythm, and reads the resident set
size (VmRSS) of the training process at every train row. The baseline is the first row
after the first evaluation and checkpoint (by then everything is compiled, TensorBoard
and torch are imported and orbax has written once); the run must end within
ALLOWED_GROWTH_MB of it. (orbax/TensorStore keep about 0.1-0.5 MB per checkpoint
written, so a run with many more checkpoints grows accordingly.)
"""

import os
import time

import pytest

from tests.reliability import harness
from tests.tiny import TINY

STEPS = 6_000
FIELDS = {**TINY, 'synthetic_size': 1024, 'eval_batch_size': 256,
          'num_train_steps': STEPS, 'steps_per_call': 10, 'log_every_steps': 100,
          'eval_every_steps': 1000, 'checkpoint_every_steps': 1000, 'lr_boundaries': '(3000,)'}
ALLOWED_GROWTH_MB = 32


def rss_mb(pid: int) -> float:
  with open(f'/proc/{pid}/status') as f:
    line = next(line for line in f if line.startswith('VmRSS:'))
  return int(line.split()[1]) / 1024


@pytest.mark.skipif(os.environ.get('RESNET_JAX_SLOW') != '1', reason='set RESNET_JAX_SLOW=1')
def test_host_memory_is_flat_over_a_long_run(tmp_path, xla_cache):
  workdir = tmp_path / 'run'
  process = harness.start(harness.command(workdir, **FIELDS), harness.env(xla_cache),
                          tmp_path / 'log')
  samples = {}  # step of the latest train row -> RSS then
  while process.poll() is None:
    logged = [r['step'] for r in harness.rows(workdir) if 'train_loss' in r]
    if logged and logged[-1] not in samples:
      samples[logged[-1]] = rss_mb(process.pid)
    time.sleep(0.05)
  assert process.returncode == 0, (tmp_path / 'log').read_text()[-3000:]
  steps = sorted(samples)
  first, end = steps[0], steps[-1]
  baseline = min(s for s in steps if s > FIELDS['checkpoint_every_steps'])
  print(f'\nRSS (MB) after step {first}: {samples[first]:.1f}, after step {baseline}: '
        f'{samples[baseline]:.1f}, after step {end}: {samples[end]:.1f}; largest '
        f'{max(samples.values()):.1f} ({len(samples)} samples)')
  assert end >= STEPS - FIELDS['log_every_steps']
  assert samples[end] - samples[baseline] < ALLOWED_GROWTH_MB
