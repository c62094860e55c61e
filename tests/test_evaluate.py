"""python -m resnet_jax.evaluate: a run's checkpoint evaluated on every example once, the same
numbers as the run's own evaluation, on 1 and 8 devices; files written; bad input refused."""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from resnet_jax import evaluate
from resnet_jax.data import sources
from resnet_jax.errors import ConfigError
from resnet_jax.train import loop, metrics
from tests.tiny import tiny_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def run(tmp_path_factory) -> Path:
  """A finished tiny run: checkpoints at steps 4, 8 and 12 (3 kept), evaluated at each."""
  workdir = tmp_path_factory.mktemp('run') / 'resnet8'
  loop.train_and_evaluate(tiny_config(keep_checkpoints=3), str(workdir))
  return workdir


def eval_rows(workdir: Path) -> dict[int, dict]:
  return {row['step']: row for row in metrics.read_rows(str(workdir / metrics.METRICS_FILE))
          if 'test_error' in row}


def test_latest_and_best_match_the_runs_own_evaluations(run):
  rows = eval_rows(run)
  examples = len(sources.load_dataset(tiny_config()).test)
  latest = evaluate.evaluate(str(run), 'latest')
  assert (latest['checkpoint_step'], latest['examples'], latest['split']) == (12, examples, 'test')
  assert latest['top1_error'] == pytest.approx(rows[12]['test_error'], abs=1e-6)
  assert latest['loss'] == pytest.approx(rows[12]['test_loss'], rel=1e-5)
  best_step = min(rows, key=lambda step: (rows[step]['test_error'], step))
  best = evaluate.evaluate(str(run), 'best')
  assert best['checkpoint_step'] == best_step
  assert best['top1_error'] == pytest.approx(rows[best_step]['test_error'], abs=1e-6)
  assert 'top5_error' not in best  # 10 classes
  four = evaluate.evaluate(str(run), '4')
  assert four['top1_error'] == pytest.approx(rows[4]['test_error'], abs=1e-6)


def test_output_files_agree_with_the_json_line(run, tmp_path):
  out = tmp_path / 'eval'
  row = evaluate.evaluate(str(run), 'latest', output=str(out))
  assert sorted(os.listdir(out)) == sorted(evaluate.OUTPUT_FILES)
  assert json.loads((out / 'evaluation.json').read_text()) == row
  with open(out / 'per_class.csv') as f:
    classes = list(csv.DictReader(f))
  assert [c['class'] for c in classes] == [str(i) for i in range(10)]
  assert sum(int(c['examples']) for c in classes) == row['examples']
  correct = sum(int(c['correct']) for c in classes)
  assert correct == round(row['examples'] * (1 - row['top1_error']))
  assert (out / 'confusion.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  assert b'predicted class' in (out / 'confusion.svg').read_bytes()


def test_cli_on_eight_devices_prints_the_one_device_numbers(run):
  one = evaluate.evaluate(str(run), 'latest')
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8',
             JAX_PLATFORMS='cpu')
  done = subprocess.run([sys.executable, '-m', 'resnet_jax.evaluate', f'--workdir={run}',
                         '--checkpoint=latest'], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  eight = json.loads(done.stdout.strip().splitlines()[-1])
  assert (eight['examples'], eight['checkpoint_step']) == (one['examples'], one['checkpoint_step'])
  assert eight['top1_error'] == pytest.approx(one['top1_error'], abs=1e-6)
  assert eight['loss'] == pytest.approx(one['loss'], rel=1e-4)


def unevaluated(run: Path, tmp_path: Path) -> Path:
  """A copy of the run whose metrics hold no evaluation, so no checkpoint can be ranked."""
  copy = tmp_path / 'unevaluated'
  shutil.copytree(run, copy)
  path = copy / metrics.METRICS_FILE
  rows = [row for row in metrics.read_rows(str(path)) if 'test_error' not in row]
  path.write_text(''.join(json.dumps(row) + '\n' for row in rows))
  return copy


def no_checkpoints(run: Path, tmp_path: Path) -> Path:
  copy = tmp_path / 'fresh'
  copy.mkdir()
  shutil.copy(run / 'config.json', copy / 'config.json')
  return copy


@pytest.mark.parametrize('make, flags, message', [
    (lambda run, tmp: tmp / 'nowhere', {}, r'holds no run \(no config.json\)'),
    (no_checkpoints, {}, r'has no checkpoint: train it first'),
    (lambda run, tmp: run, {'split': 'val'}, r'--split=val: this run has test; use one of them'),
    (unevaluated, {}, r'kept no evaluated checkpoint, so no best one: use --checkpoint=latest'),
    (lambda run, tmp: run, {'which': '7'}, r'--checkpoint=7: use best, latest or one of the steps '
                                           r'\[4, 8, 12\]'),
    (lambda run, tmp: run, {'output': 'file'}, r'--output=.* is a file: give a folder'),
    (lambda run, tmp: run, {'output': 'earlier'}, r'holds an earlier evaluation'),
])
def test_bad_input_is_refused_before_any_work(run, tmp_path, make, flags, message):
  workdir = make(run, tmp_path)
  output = flags.pop('output', None)
  if output == 'file':
    output = tmp_path / 'out.json'
    output.write_text('{}')
  elif output == 'earlier':
    output = tmp_path / 'earlier'
    output.mkdir()
    (output / 'per_class.csv').write_text('class\n')
  before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob('*'))
  with pytest.raises(ConfigError, match=message) as error:
    evaluate.check(str(workdir), flags.get('which', 'best'), flags.get('split', 'test'),
                   None if output is None else str(output))
  assert '\n' not in str(error.value)
  assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob('*')) == before


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path):
  done = subprocess.run([sys.executable, '-m', 'resnet_jax.evaluate',
                         f'--workdir={tmp_path / "nowhere"}', f'--output={tmp_path / "out"}'],
                        cwd=REPO, capture_output=True, text=True, timeout=120)
  assert done.returncode == 2
  assert done.stderr.strip().splitlines()[-1].startswith('error: ')
  assert 'holds no run' in done.stderr and not (tmp_path / 'out').exists()
