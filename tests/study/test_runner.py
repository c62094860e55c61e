"""The degradation runner: flags, presets, and a tiny study that trains, is cut, skips, resumes."""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from resnet_jax.study import runner, status
from resnet_jax.study.studies import DEGRADATION
from resnet_jax.study.runs import is_finished

REPO = Path(__file__).resolve().parents[2]
TINY_STEPS = 120  # RESNET_JAX_QUICK_STEPS: log every 4, evaluate and checkpoint every 12 steps
CUT_AFTER = 36  # a checkpoint step of the tiny study
TINY_TEST_SUBSET = 40  # of the 51 synthetic test images
TINY_FLAGS = ['--preset=quick', '--models=plain8,resnet8', '--dataset=synthetic',
              '--config.synthetic_size=256', '--config.val_split=64', '--config.batch_size=16',
              '--config.eval_batch_size=64', '--config.log_grad_norms=True',
              '--config.train_subset=0', f'--config.test_subset={TINY_TEST_SUBSET}']
FIGURES = ('figure1', 'figure6', 'error_vs_depth', 'grad_norms')
# configs/degradation.py:plain20 under the quick preset: sec. 4.2's recipe on 250 steps of batch
# 128, lr /10 at 1/2 and 3/4 of them, subsets of the training and test sets (as resnet_jax.train
# writes it to config.json).
QUICK_PLAIN20 = {'model': 'plain20', 'seed': 0, 'dataset': 'cifar10', 'val_split': 0,
                 'batch_size': 128, 'num_train_steps': 250, 'learning_rate': 0.1,
                 'lr_boundaries': [125, 188], 'warmup_steps': 0, 'weight_decay': 1e-4,
                 'train_subset': 10000, 'test_subset': 1000}


def bad_input(capsys, argv: list[str], spec=DEGRADATION) -> str:
  """The one line runner.main(spec) prints for bad input `argv`, after checking it exits 2."""
  with pytest.raises(SystemExit) as error:
    runner.main(spec, argv)
  assert error.value.code == 2
  lines = capsys.readouterr().err.splitlines()
  assert len(lines) == 1 and lines[0].startswith(f'{spec.name}: '), lines
  return lines[0]


def _rows(path: Path) -> list[dict]:
  return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize('flags, message', [
    (['--preset=fast'], r"unknown --preset='fast': use one of paper, short, quick"),
    (['--models=plain20,resnet21'], r"unknown model 'resnet21': use plain<d> or resnet<d> with d"),
    (['--models=resnet50'], r"unknown model 'resnet50'"),
    (['--models=resnet20_b'], r"unknown model 'resnet20_b'"),
    (['--seeds=0'], r'--seeds=0: give at least 1 seed per model'),
    (['--seeds=two'], r"argument --seeds: invalid int value: 'two' \(see --help\)"),
    (['--parallel=0'], r'--parallel=0: give at least 1 run at a time'),
    (['--epochs=3'], r"unknown flags \['--epochs=3'\]"),
    (['--config.seed'], r"unknown flags \['--config.seed'\]: use .* --config.FIELD=VALUE"),
    (['--config.seed=3'], r'--config.seed is set by the runner: use --models and --seeds'),
    (['--config.batch_sise=32'], r"unknown config fields \['batch_sise'\]: use fields of"),
    (['--config.batch_size=big'], r'flag --config.batch_size=big: invalid literal .*; fix the'),
])
def test_bad_flags_are_one_line_errors_before_any_run(tmp_path, capsys, flags, message):
  workdir = tmp_path / 'study'
  text = bad_input(capsys, [f'--workdir={workdir}', *flags])
  assert re.search(message, text), text
  assert not workdir.exists()


def test_bad_quick_steps_is_an_error_before_any_run(tmp_path, monkeypatch, capsys):
  monkeypatch.setenv(runner.QUICK_STEPS_ENV, 'ten')
  text = bad_input(capsys, [f"--workdir={tmp_path / 'study'}", '--preset=quick'])
  assert text.startswith("degradation: RESNET_JAX_QUICK_STEPS='ten': give a whole")
  assert not (tmp_path / 'study').exists()


def test_cli_prints_one_line_and_exits_2_on_bad_input(tmp_path):
  result = subprocess.run([sys.executable, 'experiments/degradation.py',
                           f"--workdir={tmp_path / 'study'}", '--models=plain21'],
                          cwd=REPO, capture_output=True, text=True)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
      "degradation: unknown model 'plain21': use plain<d> or resnet<d> with d = 6n+2 "
      '(e.g. plain20, resnet56)']
  assert not (tmp_path / 'study').exists()


@pytest.mark.parametrize('steps', [12, 120, 300, 640])
def test_quick_preset_keeps_the_shape_of_the_paper_schedule(monkeypatch, steps):
  monkeypatch.setenv(runner.QUICK_STEPS_ENV, str(steps))
  quick = runner.preset_overrides(DEGRADATION, 'quick', 'resnet110')
  # the paper: 64k steps, lr /10 at 32k and 48k, 400 warm-up steps for ResNet-110 (sec. 4.2)
  assert quick['num_train_steps'] == steps
  assert quick['lr_boundaries'] == (round(steps / 2), round(steps * 3 / 4))
  assert quick['warmup_steps'] == round(400 * steps / 64000)
  assert quick['checkpoint_every_steps'] % quick['log_every_steps'] == 0
  evaluated = {*range(quick['eval_every_steps'], steps + 1, quick['eval_every_steps']), steps}
  assert len(evaluated) >= 10  # the loop evaluates every eval_every_steps and at the end
  assert 'batch_size' not in quick and 'learning_rate' not in quick  # the paper's 128 and 0.1
  assert runner.preset_overrides(DEGRADATION, 'paper', 'resnet110') == {}


@pytest.mark.parametrize('preset, steps, boundaries, log_every, eval_every, subsets', [
    # issue 11: batch 128 and lr 0.1 everywhere; quick fits 20 minutes on a 2-core CPU
    ('quick', 250, (125, 188), 10, 20, (10_000, 1000)),
    # a quarter of the paper's 64k, on all the training images, 32 evaluations
    ('short', 16_000, (8000, 12_000), 100, 500, (0, 2000)),
])
def test_short_presets_are_the_paper_recipe_shrunk(monkeypatch, preset, steps, boundaries,
                                                   log_every, eval_every, subsets):
  monkeypatch.delenv(runner.QUICK_STEPS_ENV, raising=False)
  overrides = runner.preset_overrides(DEGRADATION, preset, 'plain56')
  config = runner.resolve_config(DEGRADATION, 'plain56',
                                 [f'--config.{name}={value}' for name, value in overrides.items()])
  assert (config.batch_size, config.learning_rate, config.weight_decay) == (128, 0.1, 1e-4)
  assert (config.num_train_steps, tuple(config.lr_boundaries)) == (steps, boundaries)
  assert (config.log_every_steps, config.eval_every_steps) == (log_every, eval_every)
  assert (config.train_subset, config.test_subset) == subsets
  assert config.eval_batch_size == config.test_subset and config.val_split == 0
  assert DEGRADATION.presets[preset].models == ('plain20', 'plain56', 'resnet20', 'resnet56')


def test_jobs_run_every_model_and_seed_in_its_own_workdir(tmp_path):
  study = runner.parse_flags(DEGRADATION, [f'--workdir={tmp_path}', '--seeds=2', '--preset=quick',
                              '--models=plain20,resnet20,plain20', '--dataset=image_folder',
                              '--data_dir=/data/cifar10', '--config.batch_size=32'])
  jobs = runner.make_jobs(study)
  assert [(job.model, job.seed) for job in jobs] == [
      ('plain20', 0), ('resnet20', 0), ('plain20', 1), ('resnet20', 1)]
  job = jobs[3]
  assert job.run_dir == tmp_path / 'resnet20' / 'seed1'
  assert job.command[1:7] == ('-m', 'resnet_jax.main', '--config=configs/degradation.py:resnet20',
                              f"--workdir={tmp_path / 'resnet20' / 'seed1'}", '--config.seed=1',
                              '--config.num_train_steps=250')
  assert '--config.lr_boundaries=(125, 188)' in job.command
  assert job.command[-3:] == ('--config.dataset=image_folder', '--config.data_dir=/data/cifar10',
                              '--config.batch_size=32')
  assert sum(arg.startswith('--config.batch_size=') for arg in job.command) == 1  # the user's
  paper = runner.make_jobs(runner.parse_flags(DEGRADATION, [f'--workdir={tmp_path}']))
  assert [job.model for job in paper] == [
      'plain20', 'plain32', 'plain44', 'plain56',
      'resnet20', 'resnet32', 'resnet44', 'resnet56', 'resnet110']
  assert all(not arg.startswith('--config.num_train_steps') for job in paper for arg in job.command)
  assert not list(tmp_path.iterdir())  # making jobs writes nothing


def _finished_run(workdir: Path, saved_config: dict) -> Path:
  run_dir = workdir / 'plain20' / 'seed0'
  run_dir.mkdir(parents=True)
  (run_dir / 'config.json').write_text(json.dumps(saved_config))
  rows = [{'event': 'start', 'step': 0, 'wall_time': 0.0, 'model': 'plain20', 'params': 1,
           'dataset': 'cifar10', 'batch_size': 128, 'num_train_steps': 250},
          {'step': 250, 'wall_time': 1.0, 'train_loss': 1.0, 'train_error': 0.5},
          {'step': 250, 'wall_time': 1.0, 'test_loss': 1.0, 'test_error': 0.5},
          {'event': 'end', 'step': 250, 'wall_time': 1.0}]
  (run_dir / 'metrics.jsonl').write_text(''.join(json.dumps(row) + '\n' for row in rows))
  return run_dir


def test_a_run_of_another_preset_is_an_error_before_any_work(tmp_path, monkeypatch, capsys):
  monkeypatch.delenv(runner.QUICK_STEPS_ENV, raising=False)
  workdir = tmp_path / 'study'
  _finished_run(workdir, QUICK_PLAIN20)
  text = bad_input(capsys, [f'--workdir={workdir}', '--models=plain20'])  # the paper preset
  assert text.startswith(f"degradation: {workdir / 'plain20' / 'seed0'} holds a run with ")
  for differ in ('val_split=0 (now 5000)', 'train_subset=10000 (now 0)',
                 'test_subset=1000 (now 0)', 'num_train_steps=250 (now 64000)',
                 'lr_boundaries=[125, 188] (now [32000, 48000])'):
    assert differ in text
  assert sorted(path.name for path in workdir.iterdir()) == ['plain20']


def test_a_finished_run_of_the_same_preset_is_skipped(tmp_path, monkeypatch, capsys):
  monkeypatch.delenv(runner.QUICK_STEPS_ENV, raising=False)
  workdir = tmp_path / 'study'
  run_dir = _finished_run(workdir, QUICK_PLAIN20)
  runner.main(DEGRADATION, [f'--workdir={workdir}', '--preset=quick', '--models=plain20'])
  assert 'plain20/seed0: finished, skipped' in capsys.readouterr().out
  assert not run_dir.with_suffix('.log').exists()  # never launched
  assert (workdir / 'results.csv').exists() and (workdir / 'figures' / 'figure6.png').exists()


def test_a_run_without_the_subset_fields_is_another_study(tmp_path, capsys):
  older = {name: value for name, value in QUICK_PLAIN20.items() if not name.endswith('_subset')}
  workdir = tmp_path / 'study'
  _finished_run(workdir, older)
  text = bad_input(capsys, [f'--workdir={workdir}', '--preset=quick', '--models=plain20'])
  assert re.search(r'holds a run with train_subset=None \(now 10000\), '
                   r'test_subset=None \(now 1000\)', text), text


def test_parallel_jobs_start_deepest_first_within_each_seed(tmp_path):
  study = runner.parse_flags(DEGRADATION, [f'--workdir={tmp_path}', '--seeds=2', '--preset=quick',
                              '--parallel=2', '--models=resnet20,plain56,resnet56,plain20'])
  assert [(job.model, job.seed) for job in runner.make_jobs(study)] == [
      ('plain56', 0), ('resnet56', 0), ('resnet20', 0), ('plain20', 0),
      ('plain56', 1), ('resnet56', 1), ('resnet20', 1), ('plain20', 1)]


PINNING = hasattr(os, 'sched_setaffinity')


@pytest.mark.skipif(not PINNING, reason='no CPU affinity on this platform')
def test_cpu_slots_split_the_cores_only_for_parallel_cpu_runs(monkeypatch):
  monkeypatch.setattr(os, 'sched_getaffinity', lambda pid: {4, 0, 2, 1, 3})
  assert runner.cpu_slots(2, 'cpu') == [{0, 1}, {2, 3, 4}]
  assert runner.cpu_slots(5, 'cpu') == [{0}, {1}, {2}, {3}, {4}]
  assert runner.cpu_slots(1, 'cpu') is None and runner.cpu_slots(3, 'gpu') is None
  with pytest.raises(ValueError, match=r'^--parallel=6 is more than the 5 CPU cores the runs can '
                     r'use; give at most 5$'):
    runner.cpu_slots(6, 'cpu')


@pytest.mark.skipif(not PINNING or len(os.sched_getaffinity(0)) < 2, reason='needs 2 CPU cores')
def test_parallel_cpu_runs_are_pinned_to_their_slot(tmp_path):
  # Each fake run records the cores it may use, holds its slot for argv[2] seconds and finishes.
  record = ('import json, os, pathlib, sys, time; run = pathlib.Path(sys.argv[1]); '
            'run.mkdir(parents=True); (run / "cores.json").write_text(json.dumps(sorted('
            'os.sched_getaffinity(0)))); time.sleep(float(sys.argv[2])); (run / "metrics.jsonl")'
            '.write_text(\'{"step": 1, "event": "end"}\\n\')')
  jobs = [runner.Job(model, 0, tmp_path / model / 'seed0',
                     (sys.executable, '-c', record, str(tmp_path / model / 'seed0'), seconds))
          for model, seconds in (('plain8', '0'), ('resnet8', '3'), ('plain14', '0'))]
  cores = runner.cpu_slots(2, 'cpu')
  assert runner.run_jobs(jobs, parallel=2, cores=cores) == []
  used = [set(json.loads((job.run_dir / 'cores.json').read_text())) for job in jobs]
  assert used == [cores[0], cores[1], cores[0]]  # the third takes the slot the first freed


def test_failed_runs_are_reported_while_the_others_finish(tmp_path, capsys):
  finish = ('import pathlib, sys; run = pathlib.Path(sys.argv[1]); run.mkdir(parents=True); '
            "(run / 'metrics.jsonl').write_text('{\"step\": 1, \"event\": \"end\"}\\n')")
  good = runner.Job('resnet8', 0, tmp_path / 'resnet8' / 'seed0',
                    (sys.executable, '-c', finish, str(tmp_path / 'resnet8' / 'seed0')))
  bad = runner.Job('plain8', 0, tmp_path / 'plain8' / 'seed0', (sys.executable, '-c', 'exit(3)'))
  assert runner.run_jobs([bad, good], parallel=2) == [
      f"plain8/seed0 (exit 3, see {tmp_path / 'plain8' / 'seed0.log'})"]
  assert is_finished(good.run_dir) and 'resnet8/seed0: done' in capsys.readouterr().out
  assert runner.run_jobs([good], parallel=1) == []  # finished: skipped, not run again
  assert 'resnet8/seed0: finished, skipped' in capsys.readouterr().out


def _runner(workdir: Path) -> subprocess.Popen:
  env = dict(os.environ, **{runner.QUICK_STEPS_ENV: str(TINY_STEPS)})
  command = [sys.executable, 'experiments/degradation.py', f'--workdir={workdir}', *TINY_FLAGS]
  return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, start_new_session=True)


def _train_steps(path: Path) -> list[int]:
  return [row['step'] for row in _rows(path) if 'train_loss' in row]


def checkpointed(run_dir: Path) -> int:
  """The latest step checkpointed in run_dir, or -1. A wait for a cut polls this, not "is step K
  there": a run keeps only its latest two, so a late poll would wait for a step already deleted.
  (orbax renames a checkpoint folder to its step once the save has finished.)"""
  folder = run_dir / 'checkpoints'
  if not folder.is_dir():
    return -1
  return max((int(path.name) for path in folder.iterdir() if path.name.isdigit()), default=-1)


def test_tiny_study_trains_is_cut_then_skips_the_finished_run_and_resumes_the_other(tmp_path):
  workdir = tmp_path / 'study'
  resnet_dir = workdir / 'resnet8' / 'seed0'
  # 1. plain8 trains to the end; resnet8 is cut by a Ctrl-C (SIGINT to the runner's process
  # group) once it has a complete checkpoint of step CUT_AFTER or later. The runner alone gets
  # the SIGINT and stops resnet8 with one SIGTERM, on which it saves a checkpoint where it stands
  # (a second signal would kill it).
  first = _runner(workdir)
  deadline = time.monotonic() + 240
  while checkpointed(resnet_dir) < CUT_AFTER and first.poll() is None and (
      time.monotonic() < deadline):
    time.sleep(0.05)
  os.killpg(first.pid, signal.SIGINT)
  out, err = first.communicate(timeout=120)
  assert first.returncode == 1 and err.strip().splitlines()[-1] == (
      'degradation: interrupted; run the same command again to resume'), err
  assert 'stopped by SIGTERM at step' in (workdir / 'resnet8' / 'seed0.log').read_text()
  assert _rows(workdir / 'plain8' / 'seed0' / 'metrics.jsonl')[-1]['event'] == 'end'
  cut_at = checkpointed(resnet_dir)
  assert CUT_AFTER <= cut_at < TINY_STEPS
  assert _rows(resnet_dir / 'metrics.jsonl')[-1].get('event') != 'end'

  # 2. The same command skips plain8 (not launched again) and resumes resnet8 from its checkpoint.
  plain_log = (workdir / 'plain8' / 'seed0.log').read_text()
  second = _runner(workdir)
  out, err = second.communicate(timeout=300)
  assert second.returncode == 0, err
  assert 'plain8/seed0: finished, skipped' in out
  assert 'resnet8/seed0: resume (logged up to step' in out
  assert (workdir / 'plain8' / 'seed0.log').read_text() == plain_log
  rows = _rows(resnet_dir / 'metrics.jsonl')
  assert rows[-1]['event'] == 'end'
  assert [row['step'] for row in rows if row.get('event') == 'resume'] == [cut_at]
  # rows logged past the checkpoint were dropped and logged again, once
  assert _train_steps(resnet_dir / 'metrics.jsonl') == list(range(4, TINY_STEPS + 1, 4))

  # 3. Every figure and both tables, drawn from the metrics files.
  for name in FIGURES:
    assert (workdir / 'figures' / f'{name}.png').stat().st_size > 0
    assert (workdir / 'figures' / f'{name}.svg').stat().st_size > 0
  with open(workdir / 'results.csv') as f:
    table = {row['model']: row for row in csv.DictReader(f)}
  for model in ('plain8', 'resnet8'):
    rows = _rows(workdir / model / 'seed0' / 'metrics.jsonl')
    final_test = [row['test_error'] for row in rows if 'test_error' in row][-1]
    assert float(table[model]['test_error_mean']) == pytest.approx(100 * final_test, abs=1e-4)
    wrong = [row['test_error'] * TINY_TEST_SUBSET for row in rows if 'test_error' in row]
    assert wrong == pytest.approx(np.round(wrong), abs=1e-6)  # errors counted on the subset
    assert table[model]['iterations'] == table[model]['num_train_steps'] == str(TINY_STEPS)
  assert '| resnet8 | 1 |' in (workdir / 'results.md').read_text()
  # Fig. 7 from each run's last checkpoint: the stem and six 3x3 layers of an 8-layer network.
  found = json.loads((workdir / 'figures' / 'layer_responses.json').read_text())
  assert sorted(found) == ['plain8', 'resnet8']
  assert all(entry['step'] == TINY_STEPS and len(entry['std']) == 7 for entry in found.values())
  assert (workdir / 'figures' / 'layer_responses.png').stat().st_size > 0

  # 4. run_info.json: one record per invocation.
  info = json.loads((workdir / 'run_info.json').read_text())
  assert len(info['invocations']) == 2
  last = info['invocations'][-1]
  assert last['command'].startswith('python experiments/degradation.py --workdir=')
  assert '--models=plain8,resnet8' in last['command']
  assert last['environment'] == {runner.QUICK_STEPS_ENV: str(TINY_STEPS)}
  assert len(last['git']['commit']) == 40 and last['device']['backend'] == 'cpu'
  assert {'jax', 'flax', 'optax', 'numpy'} <= set(last['versions'])
  assert last['runs']['resnet8/seed0'].startswith(
      '-m resnet_jax.main --config=configs/degradation.py:resnet8 --workdir=')

  # 5. A run saved before a config field existed (here scan_blocks) still gets its Fig. 7.
  config_file = workdir / 'resnet8' / 'seed0' / 'config.json'
  saved = json.loads(config_file.read_text())
  del saved['scan_blocks']
  config_file.write_text(json.dumps(saved))
  runner.main(DEGRADATION, [f'--workdir={workdir}', '--plot-only'])
  redrawn = json.loads((workdir / 'figures' / 'layer_responses.json').read_text())
  assert redrawn['resnet8'] == found['resnet8']


def test_plot_only_without_runs_is_a_one_line_error(tmp_path, capsys):
  text = bad_input(capsys, [f"--workdir={tmp_path / 'missing'}", '--plot-only'])
  assert re.match(r'^degradation: no runs in .*metrics.jsonl$', text), text
  assert not (tmp_path / 'missing').exists()


def test_plot_only_redraws_without_training(fake_study, capsys):
  workdir, _ = fake_study(seeds=1)
  runner.main(DEGRADATION, [f'--workdir={workdir}', '--plot-only'])
  drawn = capsys.readouterr().out.split()
  assert drawn == [str(workdir / 'figures' / f'{name}{suffix}') for name in FIGURES
                   for suffix in ('.png', '.svg')] + [str(workdir / 'results.md'),
                                                      str(workdir / 'results.csv')]
  assert all(Path(path).exists() for path in drawn)
  assert not (workdir / 'run_info.json').exists()


def test_status_prints_every_run_of_a_half_finished_study(fake_study, capsys):
  workdir, _ = fake_study(models=('plain20', 'resnet20'), seeds=2, num_steps=320)
  # asked for by the last invocation: resnet56/seed0 too, not started yet
  runs = ['plain20/seed0', 'resnet20/seed0', 'plain20/seed1', 'resnet20/seed1', 'resnet56/seed0']
  (workdir / 'run_info.json').write_text(json.dumps({'invocations': [{'runs': dict.fromkeys(
      runs)}]}))
  (workdir / 'slurm').mkdir()
  (workdir / 'slurm' / 'jobs.json').write_text(json.dumps(
      {run: f'12_{task}' for task, run in enumerate(runs)}))
  for run, state, code in (('plain20/seed1', 'exited', 1), ('resnet20/seed0', 'exited', 143),
                           ('resnet20/seed1', 'running', None)):
    metrics = workdir / run / 'metrics.jsonl'
    metrics.write_text(''.join(metrics.read_text().splitlines(keepends=True)[:-12]))  # no 'end'
    status.write_state(workdir / run, state, code, f'12_{runs.index(run)}')
  (workdir / 'plain20' / 'seed1.log').write_text('$ python -m resnet_jax.main ...\n'
                                                 'error: out of memory\n\n')
  runner.main(DEGRADATION, [f'--workdir={workdir}', '--status'])
  assert capsys.readouterr().out == (
      'run             state     slurm job  detail\n'
      'plain20/seed0   finished  12_0       step 320\n'
      'resnet20/seed0  pending   12_1       stopped (exit 143) at step 160, resumes\n'
      'plain20/seed1   failed    12_2       exit 1: error: out of memory\n'
      'resnet20/seed1  running   12_3       step 160\n'
      'resnet56/seed0  pending   12_4       not started\n'
      '1 finished, 2 pending, 1 failed, 1 running\n')
  assert not (workdir / 'figures').exists()  # --status only reads
