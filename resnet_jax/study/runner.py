"""Runs a study (resnet_jax/study/studies.py) and draws its results: one runner for every study.

    python experiments/<study>.py --workdir=DIR [--preset=paper|short|quick] [--seeds=N]
        [--models=MODEL,...] [--parallel=K] [--dataset=...] [--data_dir=...]
        [--config.FIELD=VALUE ...] [--launcher=local|slurm [--slurm_partition=P ...]]
        [--plot-only | --status]

Every (model, seed) trains in its own process, `python -m resnet_jax.main
--config=<the study's config file>:MODEL --workdir=DIR/MODEL/seedK --config.seed=K ...`, so runs
are isolated and resumable: a finished run (metrics.jsonl ends with the 'end' event) is skipped,
an interrupted one resumes from its checkpoint; stop the runner at any moment and start it again.
Before any run starts, every run's config is built from the flags (a bad flag is a one-line
error) and checked against the config.json of a run already in its folder, so a study is never
resumed or skipped with another preset's runs. At the end the figures (DIR/figures), the table
(DIR/results.md, .csv) and the study's analyses are drawn from the runs' files; --plot-only only
redraws them. DIR/run_info.json records each invocation's command, git commit, device and
versions. --parallel=K trains K runs at once, the deepest first: on a GPU or TPU they share the
accelerator's memory; on the CPU each is pinned to its own 1/K of the cores (cpu_slots).
--launcher=slurm submits the unfinished runs, the same commands, as one SLURM job array instead
(study/slurm.py) and returns; --status prints where every run stands (study/status.py), and
--plot-only draws the runs finished so far.

A preset (studies.Preset) shortens the paper's recipe: preset_overrides scales every step count
of the schedule by steps / 64k and sets the data subsets; RESNET_JAX_QUICK_STEPS shrinks the
'quick' preset further, for tests and the notebook.
"""

import argparse
import dataclasses
import functools
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import ml_collections
from absl import flags as absl_flags
from ml_collections import config_flags

from resnet_jax.models import parse_name
from resnet_jax.study import figures, slurm, status, tables
from resnet_jax.study.runs import is_finished, read_config
from resnet_jax.study.studies import StudySpec
from resnet_jax import config as config_lib
from resnet_jax.config import RESULT_FIELDS
from resnet_jax.errors import BAD_INPUT_STATUS, RunsFailed, exit_with
from resnet_jax.files import atomic_write_text, one_line
from resnet_jax.provenance import device_info, git_commit, versions
from resnet_jax.stop import STOP_SIGNALS
from resnet_jax.train.metrics import METRICS_FILE, read_rows

REPO_ROOT = Path(__file__).resolve().parents[2]
QUICK_STEPS_ENV = 'RESNET_JAX_QUICK_STEPS'
RUNNER_FIELDS = ('model', 'seed')  # set per run from --models and --seeds
LAUNCHERS = ('local', 'slurm')  # --launcher: train here, or submit to SLURM (study/slurm.py)
POLL_SECONDS = 0.5
STOP_GRACE_SECONDS = 60


class _Parser(argparse.ArgumentParser):
  """argparse whose errors are one-line ValueErrors instead of usage text and exit 2."""

  def error(self, message: str):
    raise ValueError(f'{message} (see --help)')


def _parser(spec: StudySpec) -> argparse.ArgumentParser:
  parser = _Parser(prog=spec.script, description=spec.title)
  parser.add_argument('--workdir', required=True, type=Path, help='study folder (DIR)')
  parser.add_argument('--preset', default='paper', help=f'one of {", ".join(spec.presets)}')
  parser.add_argument('--seeds', default=1, type=int, help='runs per model, seeds 0..N-1')
  parser.add_argument('--models', default='', help="comma list (default: the preset's models)")
  parser.add_argument('--parallel', default=1, type=int, help='runs trained at the same time')
  parser.add_argument('--dataset', default=None, help='config.dataset of every run')
  parser.add_argument('--data_dir', default=None, help='config.data_dir of every run')
  parser.add_argument('--launcher', default='local', help=f'one of {", ".join(LAUNCHERS)}')
  parser.add_argument('--slurm_partition', default=None, help='sbatch --partition')
  parser.add_argument('--slurm_time', default=None, help='sbatch --time of a task, e.g. 12:00:00')
  for name in ('gpus', 'cpus'):
    parser.add_argument(f'--slurm_{name}_per_task', default=None, type=int,
                        help=f'sbatch --{name}-per-task')
  parser.add_argument('--slurm_extra', default='', help="more sbatch options, e.g. '--qos=low'")
  shown = parser.add_mutually_exclusive_group()
  shown.add_argument('--plot-only', action='store_true', help='only redraw figures and table')
  shown.add_argument('--status', action='store_true', help='print where every run stands')
  return parser


@dataclasses.dataclass(frozen=True)
class Study:
  """What to run: the study and its validated flags."""

  spec: StudySpec
  workdir: Path
  preset: str
  seeds: int
  models: tuple[str, ...]
  parallel: int
  plot_only: bool
  config_flags: tuple[str, ...]  # --config.FIELD=VALUE given to every run
  show_status: bool = False
  slurm_options: slurm.SlurmOptions | None = None  # None: --launcher=local


def parse_flags(spec: StudySpec, argv: list[str]) -> Study:
  """Parses and checks the flags of a run of study `spec`; any bad flag is a one-line
  ValueError."""
  args, rest = _parser(spec).parse_known_args(argv)
  _check_config_flags(spec, rest)
  if args.preset not in spec.presets:
    raise ValueError(f'unknown --preset={args.preset!r}: use one of {", ".join(spec.presets)}')
  if args.seeds < 1:
    raise ValueError(f'--seeds={args.seeds}: give at least 1 seed per model')
  if args.parallel < 1:
    raise ValueError(f'--parallel={args.parallel}: give at least 1 run at a time')
  slurm_options = _slurm_options(args)
  models = (tuple(dict.fromkeys(filter(None, args.models.split(','))))
            or spec.presets[args.preset].models)
  for model in models:
    spec.check_model(model)
  data_flags = [f'--config.{name}={value}' for name, value in
                (('dataset', args.dataset), ('data_dir', args.data_dir)) if value is not None]
  return Study(spec, args.workdir.resolve(), args.preset, args.seeds, models, args.parallel,
               args.plot_only, tuple(data_flags + rest), args.status, slurm_options)


def _slurm_options(args: argparse.Namespace) -> slurm.SlurmOptions | None:
  """The sbatch options of --launcher=slurm (None for --launcher=local)."""
  if args.launcher not in LAUNCHERS:
    raise ValueError(f'unknown --launcher={args.launcher!r}: use one of {", ".join(LAUNCHERS)}')
  given = [name for name, value in vars(args).items() if name.startswith('slurm_') and value]
  if args.launcher == 'local':
    if given:
      raise ValueError(f'--{given[0]} needs --launcher=slurm')
    return None
  if args.parallel != 1:
    raise ValueError(f'--parallel={args.parallel} is for --launcher=local: SLURM runs every '
                     'task at once that the cluster allows')
  return slurm.SlurmOptions(args.slurm_partition, args.slurm_time, args.slurm_gpus_per_task,
                            args.slurm_cpus_per_task, tuple(shlex.split(args.slurm_extra)))


def _check_config_flags(spec: StudySpec, rest: list[str]) -> None:
  """The flags left by argparse must be --config.FIELD=VALUE of fields the runs have."""
  unknown = [arg for arg in rest if not (arg.startswith('--config.') and '=' in arg)]
  if unknown:
    raise ValueError(f'unknown flags {unknown}: use the flags of --help or --config.FIELD=VALUE')
  fields = [_field(arg) for arg in rest]
  owned = [field for field in fields if field in RUNNER_FIELDS]
  if owned:
    raise ValueError(f'--config.{owned[0]} is set by the runner: use --models and --seeds')
  missing = sorted(set(fields) - set(resolve_config(spec, spec.models[0], [])))
  if missing:
    raise ValueError(f'unknown config fields {missing}: use fields of {spec.config_file}')


def _field(flag: str) -> str:
  return flag.removeprefix('--config.').split('=', 1)[0]


def preset_steps(spec: StudySpec, preset: str) -> int:
  """The preset's iterations; for 'quick' the value of RESNET_JAX_QUICK_STEPS when it is set."""
  steps = spec.presets[preset].steps
  value = os.environ.get(QUICK_STEPS_ENV, str(steps)) if preset == 'quick' else str(steps)
  if not value.isdigit() or int(value) < 4:
    raise ValueError(f'{QUICK_STEPS_ENV}={value!r}: give a whole number of train steps >= 4')
  return int(value)


def preset_overrides(spec: StudySpec, preset: str, model: str) -> dict:
  """Config fields the preset changes for `model` (none for 'paper').

  Every step count of the paper's schedule is scaled by steps / 64k, so the lr drops stay at
  1/2 and 3/4 of training; batch size and learning rate stay the paper's. About `log_rows` log
  rows, and an evaluation and a checkpoint at every multiple of the log interval that gives at
  least `evaluations` of them (the loop also evaluates at the end). The test subset is evaluated
  in one batch, and there is no validation split.
  """
  shortened = spec.presets[preset]
  if not shortened.steps:
    return {}
  config, steps = resolve_config(spec, model, []), preset_steps(spec, preset)
  scale = steps / config.num_train_steps
  log_every = max(1, steps // shortened.log_rows)
  eval_every = log_every * max(1, steps // (shortened.evaluations * log_every))
  return {
      'num_train_steps': steps,
      'lr_boundaries': tuple(round(boundary * scale) for boundary in config.lr_boundaries),
      'warmup_steps': round(config.warmup_steps * scale),
      'val_split': 0,
      'log_every_steps': log_every,
      'eval_every_steps': eval_every,
      'checkpoint_every_steps': eval_every,
      'train_subset': shortened.train_subset,
      'test_subset': shortened.test_subset,
      'eval_batch_size': shortened.test_subset,
  }


def _config_flags(study: Study, model: str) -> list[str]:
  """The preset's overrides for `model`, except fields the user set, then the user's flags."""
  given = {_field(flag) for flag in study.config_flags}
  preset = preset_overrides(study.spec, study.preset, model)
  kept = [f'--config.{name}={value}' for name, value in preset.items() if name not in given]
  return kept + list(study.config_flags)


def resolve_config(spec: StudySpec, model: str, flags: Sequence[str]) -> ml_collections.ConfigDict:
  """The config `python -m resnet_jax.main --config=<spec.config_file>:MODEL *flags` trains
  with, built here without training: a bad value is a one-line ValueError before any run."""
  argv = [spec.name, f'--config={REPO_ROOT / spec.config_file}:{model}', *flags]
  values = absl_flags.FlagValues()
  config_flags.DEFINE_config_file('config', flag_values=values, sys_argv=argv)
  try:
    values(argv)
  except absl_flags.Error as error:
    raise ValueError(f"{one_line(error)}; fix the flag's value") from None
  config_lib.validate(values.config)
  return values.config


def check_run_dir(run_dir: Path, config: ml_collections.ConfigDict) -> None:
  """One-line ValueError when run_dir holds a run whose RESULT_FIELDS differ from `config`'s
  (another preset, seed count or flags): it would be skipped or resumed as if it were this one."""
  saved = read_config(run_dir)
  if not saved:
    return
  ours = json.loads(json.dumps(config.to_dict()))  # tuples as JSON lists, as in config.json
  differ = [f'{name}={saved.get(name)!r} (now {ours.get(name)!r})' for name in RESULT_FIELDS
            if saved.get(name) != ours.get(name)]
  if differ:
    raise ValueError(f'{run_dir} holds a run with {", ".join(differ)}: use another --workdir, '
                     'or the preset and flags that run was started with')


@dataclasses.dataclass(frozen=True)
class Job:
  """One training run: its folder, command and log file."""

  model: str
  seed: int
  run_dir: Path
  command: tuple[str, ...]

  @property
  def name(self) -> str:
    return f'{self.model}/seed{self.seed}'

  @property
  def log_file(self) -> Path:
    return self.run_dir.with_suffix('.log')


def make_job(study: Study, model: str, seed: int) -> Job:
  """The run of (model, seed), its config checked against what its folder already holds."""
  run_dir = study.workdir / model / f'seed{seed}'
  flags = [f'--config.seed={seed}', *_config_flags(study, model)]
  check_run_dir(run_dir, resolve_config(study.spec, model, flags))
  command = (sys.executable, '-m', 'resnet_jax.main', f'--config={study.spec.config_file}:{model}',
             f'--workdir={run_dir}', *flags)
  return Job(model, seed, run_dir, command)


def make_jobs(study: Study) -> list[Job]:
  """Every (model, seed) of the study, seed-major so that a first seed of each model ends early;
  with --parallel > 1 the deepest first within a seed, so that the longest runs do not end last
  alone."""
  def order(model: str) -> int:
    return -parse_name(model).depth if study.parallel > 1 else 0
  return [make_job(study, model, seed) for seed in range(study.seeds)
          for model in sorted(study.models, key=order)]


def run_variables(parallel: int) -> dict[str, str]:
  """The variables each run gets on top of the runner's environment: on one accelerator K runs
  share its memory, so none preallocates and each may take at most 90%/K of it (ignored on the
  CPU)."""
  variables = {'XLA_PYTHON_CLIENT_PREALLOCATE': 'false'}
  if parallel > 1:
    variables['XLA_PYTHON_CLIENT_MEM_FRACTION'] = f'{0.9 / parallel:.3f}'
  return variables


def child_env(parallel: int) -> dict[str, str]:
  """The environment of each run: the runner's, with run_variables(parallel)."""
  return dict(os.environ, **run_variables(parallel))


def cpu_slots(parallel: int, backend: str) -> list[frozenset[int]] | None:
  """The CPU cores of each of `parallel` run slots when the runs train on the CPU, else None.

  XLA:CPU sizes its thread pool by the cores a process may use. K runs each pinned to its own
  contiguous 1/K of the cores beat K runs sharing all of them, and beat one run on all of them,
  as one run's threads keep the cores only partly busy (benchmarks/RESULTS.md).
  """
  if parallel == 1 or backend != 'cpu' or not hasattr(os, 'sched_setaffinity'):
    return None
  cores = sorted(os.sched_getaffinity(0))
  if parallel > len(cores):
    raise ValueError(f'--parallel={parallel} is more than the {len(cores)} CPU cores the runs can '
                     f'use; give at most {len(cores)}')
  bounds = [len(cores) * slot // parallel for slot in range(parallel + 1)]
  return [frozenset(cores[start:stop]) for start, stop in zip(bounds, bounds[1:])]


def _describe(job: Job) -> str:
  rows = read_rows(job.run_dir / METRICS_FILE)
  if not rows:
    return 'start'
  return f"resume (logged up to step {max(row['step'] for row in rows)})"


def _launch(job: Job, env: dict[str, str], cores: frozenset[int] | None) -> subprocess.Popen:
  """Starts the run in its own session, so that a Ctrl-C reaches only the runner, which stops
  it with one SIGTERM (a second signal would end it before its checkpoint is saved); pinned to
  `cores` when given."""
  job.log_file.parent.mkdir(parents=True, exist_ok=True)
  pin = None if cores is None else functools.partial(os.sched_setaffinity, 0, cores)
  with open(job.log_file, 'a') as log:
    log.write(f'$ {shlex.join(job.command)}\n')
    log.flush()
    process = subprocess.Popen(job.command, cwd=REPO_ROOT, env=env, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=pin)
  status.write_state(job.run_dir, status.RUNNING)
  return process


def _stop(running: dict[Job, subprocess.Popen]) -> None:
  """Asks every run to stop (SIGTERM), then kills what is left after STOP_GRACE_SECONDS."""
  for process in running.values():
    process.terminate()
  deadline = time.monotonic() + STOP_GRACE_SECONDS
  for job, process in running.items():
    try:
      process.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
      process.kill()
      process.wait()
    status.write_state(job.run_dir, status.EXITED, process.returncode)


def _collect(running: dict[Job, subprocess.Popen], slots: dict[Job, int]) -> list[str]:
  """Removes the runs that ended from `running` and `slots`; returns one line per failed one."""
  failures = []
  for job, process in list(running.items()):
    if process.poll() is None:
      continue
    del running[job], slots[job]
    status.write_state(job.run_dir, status.EXITED, process.returncode)
    done = process.returncode == 0 and is_finished(job.run_dir)
    outcome = 'done' if done else f'FAILED (exit {process.returncode})'
    print(f'{job.name}: {outcome}', flush=True)
    if not done:
      failures.append(f'{job.name} (exit {process.returncode}, see {job.log_file})')
  return failures


def run_jobs(jobs: list[Job], parallel: int,
             cores: list[frozenset[int]] | None = None) -> list[str]:
  """Trains the unfinished jobs, `parallel` at a time, the run of slot k pinned to cores[k] when
  cores are given (cpu_slots); returns one line per failed run.

  Interrupting (Ctrl-C, SIGTERM, SIGHUP) stops the runs in flight; each resumes on the next call.
  """
  env, failures, running, slots = child_env(parallel), [], {}, {}
  pending = [job for job in jobs if not is_finished(job.run_dir)]
  for job in jobs:
    if job not in pending:
      print(f'{job.name}: finished, skipped', flush=True)
  try:
    while pending or running:
      while pending and len(running) < parallel:
        job = pending.pop(0)
        slots[job] = min(set(range(parallel)) - set(slots.values()))
        print(f'{job.name}: {_describe(job)} -> {job.log_file}', flush=True)
        running[job] = _launch(job, env, None if cores is None else cores[slots[job]])
      time.sleep(POLL_SECONDS)
      failures += _collect(running, slots)
  finally:
    _stop(running)
  return failures


def record_invocation(workdir: Path, argv: list[str], jobs: list[Job], device: dict,
                      script: str, **settings) -> dict:
  """Appends this invocation of `script` (command, commit, device, versions, run commands and
  any `settings`, e.g. the preset) to workdir/run_info.json and returns it."""
  path = workdir / status.RUN_INFO_FILE
  info = json.loads(path.read_text()) if path.exists() else {'invocations': []}
  invocation = {
      'command': shlex.join(['python', script, *argv]),
      'environment': {name: os.environ[name] for name in (QUICK_STEPS_ENV,) if name in os.environ},
      'started': time.strftime('%Y-%m-%dT%H:%M:%S%z'),
      **settings,
      'git': git_commit(),
      'device': device,
      'versions': versions(),
      'runs': {job.name: shlex.join(job.command[1:]) for job in jobs},
  }
  info['invocations'].append(invocation)
  atomic_write_text(path, json.dumps(info, indent=2) + '\n')
  return invocation


def draw_results(spec: StudySpec, workdir: Path) -> list[Path]:
  """Draws the figures, writes the table and runs the analyses of the runs found in `workdir`."""
  drawn = [*figures.draw_figures(workdir, spec.figures),
           *tables.write_tables(workdir, spec.paper, spec.paper_source, spec.models)]
  return drawn + [path for analysis in spec.analyses for path in analysis(workdir)]


def run_locally(study: Study, argv: list[str]) -> None:
  """Trains the study's unfinished runs here, --parallel at a time.

  Raises RunsFailed when a run fails.
  """
  jobs = make_jobs(study)
  device = device_info(child_env(study.parallel))
  cores = cpu_slots(study.parallel, device.get('backend', ''))
  study.workdir.mkdir(parents=True, exist_ok=True)
  record_invocation(study.workdir, argv, jobs, device, study.spec.script, preset=study.preset)
  failures = run_jobs(jobs, study.parallel, cores)
  if failures:
    raise RunsFailed(f'{len(failures)} runs failed: {"; ".join(failures)}; fix and run the same '
                     'command again (--plot-only draws the finished runs)')


def submit_to_slurm(study: Study, argv: list[str]) -> None:
  """Submits the study's unfinished runs as one SLURM job array (study/slurm.py) and returns."""
  slurm.check_cluster(study.slurm_options)
  jobs = make_jobs(study)
  study.workdir.mkdir(parents=True, exist_ok=True)
  record_invocation(study.workdir, argv, jobs, {'launcher': 'slurm'}, study.spec.script,
                    preset=study.preset)
  slurm.submit(study.spec.name, study.workdir, jobs, REPO_ROOT, run_variables(1),
               study.slurm_options)
  print(f'{study.spec.script} --workdir={study.workdir} --status shows where the runs stand; '
        '--plot-only draws those finished', flush=True)


def run_study(spec: StudySpec, argv: list[str]) -> list[Path]:
  """Runs study `spec` with the flags `argv` here, or submits it to SLURM, or only prints its
  status or redraws its results; returns the files drawn.

  Raises RunsFailed, before drawing anything, when a local run fails.
  """
  study = parse_flags(spec, argv)
  if study.show_status:
    print(status.status_table(study.workdir, slurm.read_submitted(study.workdir)))
    return []
  if study.slurm_options is not None and not study.plot_only:
    submit_to_slurm(study, argv)
    return []
  if not study.plot_only:
    run_locally(study, argv)
  return draw_results(spec, study.workdir)


def _interrupt(signum: int, frame) -> None:
  raise KeyboardInterrupt(f'signal {signum}')


def main(spec: StudySpec, argv: list[str] | None = None) -> None:
  """Command-line entry of study `spec`: bad input (exit status 2), failed runs and interruptions
  (exit status 1) end it with one line."""
  previous = {signum: signal.signal(signum, _interrupt) for signum in STOP_SIGNALS}
  try:
    paths = run_study(spec, sys.argv[1:] if argv is None else argv)
  except ValueError as error:
    exit_with(f'{spec.name}: {error}', BAD_INPUT_STATUS)
  except RunsFailed as error:
    raise SystemExit(f'{spec.name}: {error}') from None
  except KeyboardInterrupt:
    raise SystemExit(f'{spec.name}: interrupted; run the same command again to resume') from None
  finally:
    for signum, handler in previous.items():
      signal.signal(signum, handler)
  if paths:
    print(*paths, sep='\n')
