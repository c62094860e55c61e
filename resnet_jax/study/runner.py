"""Runs the degradation study (He et al. 2015, Fig. 1, Fig. 6, Table 6) and draws its results.

    python experiments/degradation.py --workdir=DIR [--preset=paper|quick] [--seeds=N]
        [--models=plain20,resnet20,...] [--parallel=K] [--dataset=...] [--data_dir=...]
        [--config.FIELD=VALUE ...] [--plot-only]

Every (model, seed) trains in its own process, `python -m resnet_jax.main
--config=configs/degradation.py:MODEL --workdir=DIR/MODEL/seedK --config.seed=K ...`, so runs are
isolated and resumable: a finished run (metrics.jsonl ends with the "end" event) is skipped, an
interrupted one resumes from its checkpoint; stop the runner at any moment and start it again.
At the end the figures (DIR/figures) and the table (DIR/results.md, .csv) are drawn from the
runs' metrics.jsonl. DIR/run_info.json records each invocation's command, git commit, device
and library versions.

Presets: 'paper' is the sec. 4.2 recipe for the nine networks of Fig. 6 / Table 6. 'quick' keeps
the shape of the schedule (lr /10 at 1/2 and 3/4 of training) on QUICK_STEPS steps of batch 64
(RESNET_JAX_QUICK_STEPS shrinks it further, for tests and the notebook) for plain20, plain56,
resnet20 and resnet56, evaluated on the test set only; it finishes on a 2-core CPU in minutes
and still shows plain-56 above plain-20 in training error.
"""

import argparse
import dataclasses
import importlib.metadata
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from configs import degradation
from resnet_jax.study import figures, is_finished, parse_model, read_metrics, tables, write_atomic

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_FILE = "configs/degradation.py"
QUICK_STEPS = 300
QUICK_STEPS_ENV = "RESNET_JAX_QUICK_STEPS"
QUICK_MODELS = ("plain20", "plain56", "resnet20", "resnet56")
PRESETS = ("paper", "quick")
POLL_SECONDS = 0.5
STOP_GRACE_SECONDS = 60
VERSIONED_PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "ml-collections",
                      "numpy", "tensorflow-cpu", "tensorflow", "tensorflow-datasets", "matplotlib")


class _Parser(argparse.ArgumentParser):
  """argparse whose errors are one-line ValueErrors instead of usage text and exit 2."""

  def error(self, message: str):
    raise ValueError(f"{message} (see --help)")


def _parser() -> argparse.ArgumentParser:
  parser = _Parser(prog="experiments/degradation.py", description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True, type=Path, help="study folder (DIR)")
  parser.add_argument("--preset", default="paper", help=f"one of {PRESETS}")
  parser.add_argument("--seeds", default=1, type=int, help="runs per model, seeds 0..N-1")
  parser.add_argument("--models", default="", help="comma list (default: the preset's models)")
  parser.add_argument("--parallel", default=1, type=int, help="runs trained at the same time")
  parser.add_argument("--dataset", default=None, help="config.dataset of every run")
  parser.add_argument("--data_dir", default=None, help="config.data_dir of every run")
  parser.add_argument("--plot-only", action="store_true", help="only redraw figures and table")
  return parser


@dataclasses.dataclass(frozen=True)
class Study:
  """What to run: the validated flags."""

  workdir: Path
  preset: str
  seeds: int
  models: tuple[str, ...]
  parallel: int
  plot_only: bool
  config_flags: tuple[str, ...]  # --config.FIELD=VALUE given to every run


def parse_flags(argv: list[str]) -> Study:
  """Parses and checks the runner's flags; any bad flag is a one-line ValueError."""
  args, rest = _parser().parse_known_args(argv)
  unknown = [arg for arg in rest if not (arg.startswith("--config.") and "=" in arg)]
  if unknown:
    raise ValueError(f"unknown flags {unknown}: use the flags of --help or --config.FIELD=VALUE")
  if args.preset not in PRESETS:
    raise ValueError(f"unknown --preset={args.preset!r}: use one of {', '.join(PRESETS)}")
  if args.seeds < 1:
    raise ValueError(f"--seeds={args.seeds}: give at least 1 seed per model")
  if args.parallel < 1:
    raise ValueError(f"--parallel={args.parallel}: give at least 1 run at a time")
  models = tuple(dict.fromkeys(filter(None, args.models.split(",")))) or _preset_models(args.preset)
  for model in models:
    parse_model(model)
  data_flags = [f"--config.{name}={value}" for name, value in
                (("dataset", args.dataset), ("data_dir", args.data_dir)) if value is not None]
  return Study(args.workdir.resolve(), args.preset, args.seeds, models, args.parallel,
               args.plot_only, tuple(data_flags + rest))


def _preset_models(preset: str) -> tuple[str, ...]:
  return degradation.PAPER_MODELS if preset == "paper" else QUICK_MODELS


def quick_steps() -> int:
  """QUICK_STEPS, or the value of RESNET_JAX_QUICK_STEPS (for tests and the notebook)."""
  value = os.environ.get(QUICK_STEPS_ENV, str(QUICK_STEPS))
  if not value.isdigit() or int(value) < 4:
    raise ValueError(f"{QUICK_STEPS_ENV}={value!r}: give a whole number of train steps >= 4")
  return int(value)


def preset_overrides(preset: str, model: str) -> dict:
  """Config fields the preset changes for `model` (none for 'paper').

  'quick' scales every step count of the paper's schedule by steps / 64k, so the lr drops stay
  at 1/2 and 3/4 of training, with batch 64, about 30 log rows and 3 evaluations and
  checkpoints (at multiples of the log interval, as the loop requires). It evaluates on the
  test set only (val_split=0): on a 2-core CPU evaluation costs as much as training.
  """
  if preset == "paper":
    return {}
  config, steps = degradation.get_config(model), quick_steps()
  scale = steps / config.num_train_steps
  log_every = max(1, steps // 30)
  eval_every = log_every * max(1, round(steps / (3 * log_every)))
  return {
      "num_train_steps": steps,
      "lr_boundaries": tuple(round(boundary * scale) for boundary in config.lr_boundaries),
      "warmup_steps": round(config.warmup_steps * scale),
      "batch_size": 64,
      "val_split": 0,
      "log_every_steps": log_every,
      "eval_every_steps": eval_every,
      "checkpoint_every_steps": eval_every,
  }


def _config_flags(study: Study, model: str) -> list[str]:
  """The preset's overrides for `model`, except fields the user set, then the user's flags."""
  given = {flag.removeprefix("--config.").split("=", 1)[0] for flag in study.config_flags}
  preset = preset_overrides(study.preset, model)
  kept = [f"--config.{name}={value}" for name, value in preset.items() if name not in given]
  return kept + list(study.config_flags)


@dataclasses.dataclass(frozen=True)
class Job:
  """One training run: its folder, command and log file."""

  model: str
  seed: int
  run_dir: Path
  command: tuple[str, ...]

  @property
  def name(self) -> str:
    return f"{self.model}/seed{self.seed}"

  @property
  def log_file(self) -> Path:
    return self.run_dir.with_suffix(".log")


def make_jobs(study: Study) -> list[Job]:
  """Every (model, seed) of the study, seed-major so that a first seed of each model ends early."""
  jobs = []
  for seed in range(study.seeds):
    for model in study.models:
      run_dir = study.workdir / model / f"seed{seed}"
      command = (sys.executable, "-m", "resnet_jax.main", f"--config={CONFIG_FILE}:{model}",
                 f"--workdir={run_dir}", f"--config.seed={seed}", *_config_flags(study, model))
      jobs.append(Job(model, seed, run_dir, command))
  return jobs


def child_env(parallel: int) -> dict[str, str]:
  """The environment of each run: on one accelerator K runs share its memory, so none
  preallocates and each may take at most 90%/K of it (ignored on the CPU)."""
  env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")
  if parallel > 1:
    env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{0.9 / parallel:.3f}"
  return env


def _describe(job: Job) -> str:
  if not (job.run_dir / "metrics.jsonl").exists():
    return "start"
  steps = [row["step"] for row in read_metrics(job.run_dir / "metrics.jsonl")]
  return f"resume (logged up to step {max(steps, default=0)})"


def _launch(job: Job, env: dict[str, str]) -> subprocess.Popen:
  job.log_file.parent.mkdir(parents=True, exist_ok=True)
  with open(job.log_file, "a") as log:
    log.write(f"$ {shlex.join(job.command)}\n")
    log.flush()
    return subprocess.Popen(job.command, cwd=REPO_ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)


def _stop(running: dict[Job, subprocess.Popen]) -> None:
  """Asks every run to stop (SIGTERM), then kills what is left after STOP_GRACE_SECONDS."""
  for process in running.values():
    process.terminate()
  deadline = time.monotonic() + STOP_GRACE_SECONDS
  for process in running.values():
    try:
      process.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
      process.kill()
      process.wait()


def run_jobs(jobs: list[Job], parallel: int) -> list[str]:
  """Trains the unfinished jobs, `parallel` at a time; returns one line per failed run.

  Interrupting (Ctrl-C, SIGTERM) stops the runs in flight; each resumes on the next call.
  """
  env, failures, running = child_env(parallel), [], {}
  pending = [job for job in jobs if not is_finished(job.run_dir)]
  for job in jobs:
    if job not in pending:
      print(f"{job.name}: finished, skipped", flush=True)
  try:
    while pending or running:
      while pending and len(running) < parallel:
        job = pending.pop(0)
        print(f"{job.name}: {_describe(job)} -> {job.log_file}", flush=True)
        running[job] = _launch(job, env)
      time.sleep(POLL_SECONDS)
      for job, process in list(running.items()):
        if process.poll() is None:
          continue
        del running[job]
        done = process.returncode == 0 and is_finished(job.run_dir)
        status = "done" if done else f"FAILED (exit {process.returncode})"
        print(f"{job.name}: {status}", flush=True)
        if not done:
          failures.append(f"{job.name} (exit {process.returncode}, see {job.log_file})")
  finally:
    _stop(running)
  return failures


def _git_commit() -> dict:
  def git(*args: str) -> str:
    result = subprocess.run(("git", *args), cwd=REPO_ROOT, capture_output=True, text=True,
                            check=True)
    return result.stdout.strip()

  try:
    return {"commit": git("rev-parse", "HEAD"),
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
  except (OSError, subprocess.CalledProcessError):
    return {"commit": None, "dirty": None}


def _device(env: dict[str, str]) -> dict:
  """The accelerator the runs see, asked of a separate process so that this one holds none."""
  probe = ("import json, jax; d = jax.devices(); print(json.dumps({'backend': "
           "jax.default_backend(), 'count': len(d), 'kind': d[0].device_kind}))")
  result = subprocess.run((sys.executable, "-c", probe), capture_output=True, text=True, env=env,
                          cwd=REPO_ROOT)
  if result.returncode:
    return {"error": result.stderr.strip().splitlines()[-1:]}
  return json.loads(result.stdout.splitlines()[-1])


def _versions() -> dict[str, str]:
  versions = {"python": platform.python_version(), "platform": platform.platform()}
  for package in VERSIONED_PACKAGES:
    try:
      versions[package] = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      continue
  return versions


def record_invocation(study: Study, argv: list[str], jobs: list[Job]) -> dict:
  """Appends this invocation (command, commit, device, versions, run commands) to
  DIR/run_info.json and returns it."""
  path = study.workdir / "run_info.json"
  info = json.loads(path.read_text()) if path.exists() else {"invocations": []}
  invocation = {
      "command": shlex.join(["python", "experiments/degradation.py", *argv]),
      "environment": {name: os.environ[name] for name in (QUICK_STEPS_ENV,) if name in os.environ},
      "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
      "preset": study.preset,
      "git": _git_commit(),
      "device": _device(child_env(study.parallel)),
      "versions": _versions(),
      "runs": {job.name: shlex.join(job.command[1:]) for job in jobs},
  }
  info["invocations"].append(invocation)
  write_atomic(path, json.dumps(info, indent=2) + "\n")
  return invocation


def draw_results(workdir: Path) -> list[Path]:
  """Draws the figures and writes the table of the runs found in `workdir`."""
  return [*figures.draw_figures(workdir), *tables.write_tables(workdir)]


class RunsFailed(RuntimeError):
  """Some runs of the study ended without their "end" event."""


def run_study(argv: list[str]) -> list[Path]:
  """Runs (or with --plot-only only redraws) the study of `argv`; returns the files drawn.

  Raises RunsFailed, before drawing anything, when a run fails.
  """
  study = parse_flags(argv)
  if not study.plot_only:
    jobs = make_jobs(study)
    study.workdir.mkdir(parents=True, exist_ok=True)
    record_invocation(study, argv, jobs)
    failures = run_jobs(jobs, study.parallel)
    if failures:
      raise RunsFailed(f"{len(failures)} runs failed: {'; '.join(failures)}; fix and run the same "
                       "command again (--plot-only draws the finished runs)")
  return draw_results(study.workdir)


def _interrupt(signum, frame):
  raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> None:
  """Command-line entry: bad flags, failed runs and interruptions end it with one line."""
  signal.signal(signal.SIGTERM, _interrupt)
  try:
    paths = run_study(sys.argv[1:] if argv is None else argv)
  except (ValueError, RunsFailed) as error:
    raise SystemExit(f"degradation: {error}") from None
  except KeyboardInterrupt:
    raise SystemExit("degradation: interrupted; run the same command again to resume") from None
  print(*paths, sep="\n")
