"""1 and 8 forced CPU devices: the same metrics over 50 steps, and checkpoints that move
between the two (written on 8, continued on 1, and the other way round)."""

import shutil

from resnet_jax.train import checkpoint
from tests.reliability import harness
from tests.tiny import TINY

# learning_rate 0.02: at the recipe's 0.1 the net on random labels is chaotic enough
# to blow float32 rounding (1e-7) up to 1e-3 over 50 steps.
FIELDS = {**TINY, 'synthetic_size': 128, 'batch_size': 16, 'num_train_steps': 50,
          'log_every_steps': 5, 'eval_every_steps': 25, 'checkpoint_every_steps': 25,
          'learning_rate': 0.02, 'lr_boundaries': '(30,)'}
EXAMPLES = {'train': FIELDS['log_every_steps'] * FIELDS['batch_size'], 'test': 128 // 5}


def assert_same_metrics(rows, reference_rows):
  harness.assert_same_metrics(rows, reference_rows, EXAMPLES)


def test_one_and_eight_devices_agree_and_checkpoints_move_between_them(tmp_path, xla_cache):
  runs = {devices: tmp_path / f'devices_{devices}' for devices in (1, 8)}
  started = {devices: harness.start(harness.command(workdir, **FIELDS),
                                    harness.env(xla_cache, devices), f'{workdir}.log')
             for devices, workdir in runs.items()}  # side by side
  for devices, process in started.items():
    harness.finish(process, f'{runs[devices]}.log')
    assert harness.rows(runs[devices])[0]['devices'] == devices
  assert_same_metrics(harness.rows(runs[8]), harness.rows(runs[1]))

  moved = {}
  for saved_on, resumed_on in ((8, 1), (1, 8)):
    workdir = tmp_path / f'from_{saved_on}_on_{resumed_on}'
    shutil.copytree(runs[saved_on], workdir)
    shutil.rmtree(workdir / checkpoint.CHECKPOINT_DIR / '50')  # back to step 25
    moved[workdir] = (resumed_on, harness.start(harness.command(workdir, **FIELDS),
                                                harness.env(xla_cache, resumed_on),
                                                f'{workdir}.log'))
  for workdir, (resumed_on, process) in moved.items():
    harness.finish(process, f'{workdir}.log')
    rows = harness.rows(workdir)
    resume = next(r for r in rows if r.get('event') == 'resume')
    assert (resume['step'], resume['devices']) == (25, resumed_on)
    assert harness.events(rows)[-1] == (50, 'end')
    assert_same_metrics(rows, harness.rows(runs[1]))
