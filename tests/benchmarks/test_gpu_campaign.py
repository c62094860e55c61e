"""benchmarks/gpu_campaign.sh rehearsed on the CPU (RESNET_JAX_CAMPAIGN_REHEARSAL=1): every file
the GPU run must bring back is written, each part stops at its cap and a cut study continues, and
bad input stops with one line before any work. choose_study's decisions are checked on numbers."""

import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from benchmarks import gpu_campaign
from tests.image_folders import write_colour_folder

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / 'benchmarks' / 'gpu_campaign.sh'
MODELS = gpu_campaign.REHEARSAL.models
EXPORT = Path('degradation') / 'quick_cpu'
BROUGHT_BACK = [
    'campaign.json', 'gpu.json', 'gpu.md', 'logs/throughput.log', 'logs/study.log',
    'logs/figures.log',
    *(str(EXPORT / name) for name in (
        'results.md', 'results.csv', 'run_info.json',
        *(f'figures/{figure}.{ext}' for figure in ('figure1', 'figure6', 'error_vs_depth')
          for ext in ('png', 'svg')),
        *(f'runs/{model}/seed0/{name}' for model in MODELS
          for name in ('metrics.jsonl', 'config.json', 'train.log')))),
]


def campaign(out: Path, carry: Path, *flags: str) -> subprocess.CompletedProcess:
  env = dict(os.environ, **{gpu_campaign.REHEARSAL_ENV: '1'})
  return subprocess.run(['bash', str(SCRIPT), str(out), f'--carry={carry}', *flags], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=900)


def make_carry(root: Path, wheels: Path | None) -> Path:
  """A carry folder as --prepare makes it: the wheels and a tiny image-folder tarball."""
  carry = root / 'carry'
  carry.mkdir()
  if wheels is not None:
    (carry / 'wheels').symlink_to(wheels)
  images = write_colour_folder(root / 'images', train=8, test=4)
  with tarfile.open(carry / gpu_campaign.TARBALL, 'w:gz') as archive:
    for split in ('train', 'test'):
      archive.add(images / split, arcname=split)
  return carry


@pytest.fixture(scope='module')
def wheels(tmp_path_factory) -> Path:
  """The real WHEELS, at the versions installed here, as the GPU run gets them."""
  folder = tmp_path_factory.mktemp('wheels')
  gpu_campaign.download_wheels(folder)
  return folder


def parts(out: Path, invocation: int) -> dict[str, dict]:
  record = json.loads((out / 'campaign.json').read_text())['invocations'][invocation]
  return {part['part']: part for part in record['parts']}


def test_rehearsal_is_cut_at_its_caps_then_continues_and_brings_back_every_file(tmp_path, wheels):
  carry, out = make_carry(tmp_path, wheels), tmp_path / 'out'
  cut = campaign(out, carry, '--parts=throughput,study', '--study_cap_s=16')
  assert cut.returncode == 0, cut.stderr[-3000:]
  first = parts(out, 0)
  assert first['throughput']['status'] == 'done'
  assert first['study']['status'] == 'capped' and first['study']['wall_s'] <= 16 + 2
  assert not (out / EXPORT).exists()
  finished = [path for path in (carry / 'study' / 'quick').glob('*/seed0/metrics.jsonl')
              if '"end"' in path.read_text()]
  assert len(finished) < len(MODELS)  # the cap stopped the study before its end

  done = campaign(out, carry, '--parts=study,figures')
  assert done.returncode == 0, done.stderr[-3000:]
  second = parts(out, 1)
  assert [second[p]['status'] for p in ('study', 'figures')] == ['done', 'done']
  missing = [name for name in BROUGHT_BACK if not (out / name).is_file()]
  assert not missing
  assert not list(out.rglob('checkpoints')) and not list(out.rglob('tensorboard'))

  record = json.loads((out / 'campaign.json').read_text())['invocations']
  assert record[1]['study'] == record[0]['study']  # the continuation kept the first decision
  assert record[0]['study']['preset'] == 'quick' and record[0]['device']['backend'] == 'cpu'
  assert {'jax', 'flax', 'ml-collections'} <= set(record[0]['versions'])
  report = json.loads((out / 'gpu.json').read_text())
  assert [f'{r["model"]}:{r["batch_size"]}:{r["precision"]}:{r["steps_per_call"]}'
          for r in report['rows']] == list(gpu_campaign.REHEARSAL.throughput)
  assert all(row['ours'] and row['peer'] for row in report['rows'])
  for model in MODELS:
    rows = [json.loads(line) for line in
            (out / EXPORT / 'runs' / model / 'seed0' / 'metrics.jsonl').read_text().splitlines()]
    assert rows[-1]['event'] == 'end' and rows[-1]['step'] == 8
    config = json.loads((out / EXPORT / 'runs' / model / 'seed0' / 'config.json').read_text())
    assert config['steps_per_call'] == record[0]['study']['steps_per_call']


SLEEPER = 'import signal, sys, time; {handler}; time.sleep(60)'


@pytest.mark.parametrize('handler, status', [
    ('pass', 'capped'),  # SIGTERM ends it at cap - grace
    ('signal.signal(signal.SIGTERM, signal.SIG_IGN)', 'capped'),  # SIGKILL at the cap
])
def test_a_part_stops_at_its_cap(tmp_path, handler, status):
  (tmp_path / 'logs').mkdir()
  start = time.monotonic()
  result = gpu_campaign.run_part('slow', [sys.executable, '-c', SLEEPER.format(handler=handler)],
                                 cap_s=3, env=dict(os.environ), out=tmp_path)
  assert time.monotonic() - start < 3 + 1
  assert result['status'] == status and result['wall_s'] <= 3 + 0.5
  assert result['returncode'] in (-signal.SIGTERM, -signal.SIGKILL)
  assert (tmp_path / result['log']).read_text().startswith('$ ')


@pytest.mark.parametrize('code, status', [('pass', 'done'), ('raise SystemExit(3)', 'failed')])
def test_a_part_that_ends_before_its_cap(tmp_path, code, status):
  (tmp_path / 'logs').mkdir()
  result = gpu_campaign.run_part('quick', [sys.executable, '-c', code], cap_s=60,
                                 env=dict(os.environ), out=tmp_path)
  assert result['status'] == status and result['wall_s'] < 30


def fake_wheels(folder: Path, packages=gpu_campaign.WHEELS) -> Path:
  folder.mkdir()
  for package in packages:
    (folder / f'{package.replace("-", "_")}-1.0-py3-none-any.whl').write_bytes(b'')
  return folder


@pytest.mark.parametrize('case, message', [
    ('no wheels folder', r'is not a folder of wheels: run `python -m benchmarks.gpu_campaign '
                         r'--prepare`'),
    ('a wheel missing', r'no wheel of tensorboardX in .*: run `python -m'),
    ('no tarball', r'cifar10-jpeg.tar.gz is not the CIFAR-10 tarball: copy'),
    ('out is a file', r'is a file: give a folder for the results'),
    ('unknown part', r'--parts=throughput,plots: use a comma list of throughput, study, figures'),
    ('bad cap', r'--study_cap_s=0.0: give a positive number of seconds'),
])
def test_bad_input_is_one_line_exit_2_before_any_work(tmp_path, case, message):
  carry = make_carry(tmp_path, None)
  out = tmp_path / 'out'
  if case == 'a wheel missing':
    fake_wheels(carry / 'wheels', gpu_campaign.WHEELS[:-1])
  elif case != 'no wheels folder':
    fake_wheels(carry / 'wheels')
  if case == 'no tarball':
    (carry / gpu_campaign.TARBALL).unlink()
  if case == 'out is a file':
    out.write_text('')
  flags = {'unknown part': ['--parts=throughput,plots'], 'bad cap': ['--study_cap_s=0']}.get(
      case, [])
  before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob('*'))
  result = campaign(out, carry, *flags)
  assert result.returncode == 2
  assert len(result.stderr.strip().splitlines()) == 1
  assert result.stderr.startswith('gpu_campaign: ')
  assert re.search(message, result.stderr)
  assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob('*')) == before


# --- choose_study -------------------------------------------------------------------------


def row(model, step_ms, steps_per_call=1, precision='float32', compile_s=20.0, peak=2 * 2**30):
  return {'model': model, 'precision': precision, 'steps_per_call': steps_per_call,
          'ours': {'train_step_ms': step_ms, 'compile_s': compile_s, 'peak_memory_bytes': peak}}


PRESETS = {'paper': {'steps': 64_000, 'interval': 100}, 'short': {'steps': 16_000, 'interval': 100}}
FIG6 = ('plain20', 'plain56', 'resnet20', 'resnet56')
GPU = {'backend': 'gpu', 'kind': 'NVIDIA H200', 'memory_bytes': 140 * 2**30}


def test_the_longest_preset_that_fits_with_the_fastest_steps_per_call():
  rows = [row('resnet20', 1.0), row('resnet56', 2.5), row('resnet20', 0.6, 20),
          row('resnet56', 2.0, 20), row('resnet56', 0.1, precision='bfloat16')]
  # per step, plain nets at their ResNet's cost: 2 * (0.6 + 2.0) ms = 5.2 ms at 20 per call
  paper = gpu_campaign.choose_study(rows, PRESETS, FIG6, GPU, 16, time_s=600)
  assert (paper.preset, paper.steps_per_call, paper.parallel, paper.fits) == ('paper', 20, 4, True)
  assert paper.estimate_s == pytest.approx(64_000 * 5.2e-3 * 1.15 + 20 + 40, abs=0.1)
  short = gpu_campaign.choose_study(rows, PRESETS, FIG6, GPU, 16, time_s=300)
  assert (short.preset, short.fits) == ('short', True)
  assert short.estimate_s == pytest.approx(16_000 * 5.2e-3 * 1.15 + 20 + 40, abs=0.1)
  neither = gpu_campaign.choose_study(rows, PRESETS, FIG6, GPU, 16, time_s=60)
  assert (neither.preset, neither.fits) == ('short', False)
  assert 'resumes with --parts=study,figures' in neither.reason


def test_steps_per_call_must_divide_the_presets_intervals():
  rows = [row('resnet20', 1.0), row('resnet56', 2.5), row('resnet20', 0.1, 30),
          row('resnet56', 0.2, 30)]
  decision = gpu_campaign.choose_study(rows, PRESETS, FIG6, GPU, 16, time_s=600)
  assert decision.steps_per_call == 1  # 30 does not divide the log interval of 100


def test_parallel_runs_from_memory_and_cores_and_no_rows_no_estimate():
  rows = [row('resnet20', 1.0, peak=60 * 2**30), row('resnet56', 2.5, peak=60 * 2**30)]
  assert gpu_campaign.choose_study(rows, PRESETS, FIG6, GPU, 16, 600).parallel == 2
  cpu = {'backend': 'cpu', 'kind': 'cpu'}
  assert gpu_campaign.choose_study(rows, PRESETS, FIG6, cpu, 2, 600).parallel == 2
  blind = gpu_campaign.choose_study([], PRESETS, FIG6, GPU, 16, 600)
  assert (blind.preset, blind.estimate_s, blind.fits) == ('short', None, False)


@pytest.mark.parametrize('device, slug', [
    ({'backend': 'gpu', 'kind': 'NVIDIA H200'}, 'h200'),
    ({'backend': 'gpu', 'kind': 'NVIDIA H100 80GB HBM3'}, 'h100'),
    ({'backend': 'cpu', 'kind': 'cpu'}, 'cpu'),
    ({'backend': 'tpu', 'kind': 'TPU v5 lite'}, 'tpuv5'),
])
def test_device_slug(device, slug):
  assert gpu_campaign.device_slug(device) == slug
