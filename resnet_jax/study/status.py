"""Where each run of a study stands, read from the study folder only: `--status` of the runner.

Each launcher records a run's process in DIR/<model>/seed<k>.state.json beside its log: `running`
when it starts (with its SLURM job id under --launcher=slurm), `exited` with its exit status when
it ends. A run is then

  finished  its metrics.jsonl ends with the 'end' event;
  running   its process started and has not ended;
  pending   not started yet, or stopped by a signal after its checkpoint (it resumes);
  failed    its process ended otherwise: the table gives the last line of its log.

A process killed outright (SIGKILL, a node lost) cannot record its end: it stays `running` until
its run starts again.
"""

import dataclasses
import json
from pathlib import Path

from resnet_jax.files import atomic_write_text
from resnet_jax.stop import STOP_SIGNALS
from resnet_jax.study.runs import is_finished
from resnet_jax.train.metrics import METRICS_FILE, read_rows

STATE_SUFFIX = '.state.json'
RUNNING, EXITED = 'running', 'exited'
STOPPED_STATUSES = frozenset(128 + signum for signum in STOP_SIGNALS)  # resnet_jax.main's exits
RUN_INFO_FILE = 'run_info.json'  # written by runner.record_invocation


def state_file(run_dir: Path) -> Path:
  """DIR/<model>/seed<k>.state.json of the run in DIR/<model>/seed<k>."""
  return run_dir.with_name(run_dir.name + STATE_SUFFIX)


def write_state(run_dir: Path, state: str, exit_status: int | None = None,
                slurm_job: str | None = None) -> None:
  """Records that the run's process is `state` (RUNNING or EXITED with `exit_status`)."""
  record = {'state': state, 'exit': exit_status, 'slurm_job': slurm_job}
  atomic_write_text(state_file(run_dir), json.dumps(
      {key: value for key, value in record.items() if value is not None}) + '\n')


def read_state(run_dir: Path) -> dict:
  """The run's last recorded state ({} when its process never started or the file is unreadable)."""
  try:
    return json.loads(state_file(run_dir).read_text())
  except (OSError, ValueError):
    return {}


@dataclasses.dataclass(frozen=True)
class RunStatus:
  """One row of the table: run 'model/seed<k>', its state, SLURM job id ('' if none), detail."""

  run: str
  state: str
  job: str
  detail: str


def _last_line(log_file: Path) -> str:
  lines = log_file.read_text(errors='replace').splitlines() if log_file.exists() else []
  return next((line.strip() for line in reversed(lines) if line.strip()), '(empty log)')


def run_status(workdir: Path, run: str, slurm_jobs: dict[str, str]) -> RunStatus:
  """Where run `run` ('model/seed<k>') of the study in `workdir` stands; `slurm_jobs` gives the
  SLURM task of each submitted run (slurm.read_submitted)."""
  run_dir = workdir / run
  state = read_state(run_dir)
  job = state.get('slurm_job') or slurm_jobs.get(run, '')
  steps = [row['step'] for row in read_rows(run_dir / METRICS_FILE)]
  at = f'step {max(steps)}' if steps else 'no step logged'
  if is_finished(run_dir):
    return RunStatus(run, 'finished', job, at)
  if state.get('state') == RUNNING:
    return RunStatus(run, 'running', job, at)
  if state.get('state') != EXITED:
    return RunStatus(run, 'pending', job, 'not started' if not steps else f'{at}, resumes')
  if state.get('exit') in STOPPED_STATUSES:
    return RunStatus(run, 'pending', job, f"stopped (exit {state['exit']}) at {at}, resumes")
  return RunStatus(run, 'failed', job,
                   f"exit {state.get('exit')}: {_last_line(run_dir.with_suffix('.log'))}")


def study_runs(workdir: Path) -> list[str]:
  """Every run of the study: those its invocations asked for (run_info.json), in their order,
  then any other DIR/<model>/seed<k> folder."""
  info_path = workdir / RUN_INFO_FILE
  info = json.loads(info_path.read_text()) if info_path.exists() else {'invocations': []}
  asked = [run for invocation in info['invocations'] for run in invocation.get('runs', {})]
  found = sorted(f'{path.parent.name}/{path.name}' for path in workdir.glob('*/seed[0-9]*')
                 if path.is_dir())
  return list(dict.fromkeys(asked + found))


def status_table(workdir: Path, slurm_jobs: dict[str, str]) -> str:
  """The table `--status` prints: one row per run (study_runs), then a count per state. A folder
  without any run is a one-line ValueError."""
  runs = study_runs(workdir)
  if not runs:
    raise ValueError(f'no runs in {workdir}: start the study first (without --status)')
  rows = [run_status(workdir, run, slurm_jobs) for run in runs]
  header = RunStatus('run', 'state', 'slurm job', 'detail')
  widths = [max(len(getattr(row, field)) for row in [header, *rows])
            for field in ('run', 'state', 'job')]
  lines = [f'{row.run:<{widths[0]}}  {row.state:<{widths[1]}}  {row.job:<{widths[2]}}  '
           f'{row.detail}'.rstrip() for row in [header, *rows]]
  counts = {}
  for row in rows:
    counts[row.state] = counts.get(row.state, 0) + 1
  return '\n'.join(lines + [', '.join(f'{count} {state}' for state, count in counts.items())])
