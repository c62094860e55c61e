"""The SLURM launcher of the study runner (--launcher=slurm): one sbatch job array per study.

The runner hands over the study's jobs (runner.make_job: each one's command is exactly what the
local launcher runs). Finished runs and runs whose task is still in the queue are left out; the
others become the tasks of one array, written to DIR/slurm/<study>.sbatch and submitted with
sbatch. Task k runs its command with srun in the repository, its output appended to the run's
log (DIR/<model>/seed<k>.log, as locally), and records its state for `--status`
(status.write_state's format). SIGTERM (the time limit, STOP_WARNING_SECONDS ahead; preemption;
`scancel --signal=TERM`) makes the run checkpoint and exit 143; the task then requeues itself,
as `scontrol requeue ARRAYID_K` (scancel with a signal never requeues; the SLURM_JOB_ID of a task
can be the array's own, which would requeue every task), and the requeued task resumes the run
from its checkpoint. DIR/slurm/jobs.json keeps the SLURM task id of every run submitted.
"""

import dataclasses
import json
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from resnet_jax.files import atomic_write_text, one_line
from resnet_jax.study import status
from resnet_jax.study.runs import is_finished

SLURM_DIR = 'slurm'  # DIR/slurm: the script, slurm's own output per task, jobs.json
JOBS_FILE = 'jobs.json'
STOP_WARNING_SECONDS = 300  # SIGTERM this long before the time limit: time to checkpoint


@dataclasses.dataclass(frozen=True)
class SlurmOptions:
  """The --slurm_* flags: sbatch options of every task (None: the cluster's default)."""

  partition: str | None = None
  time: str | None = None
  gpus_per_task: int | None = None
  cpus_per_task: int | None = None
  extra: tuple[str, ...] = ()  # further sbatch options, e.g. ('--account=abc', '--qos=low')

  def directives(self) -> list[str]:
    """The sbatch options these flags give."""
    given = (('partition', self.partition), ('time', self.time),
             ('gpus-per-task', self.gpus_per_task), ('cpus-per-task', self.cpus_per_task))
    return [f'--{name}={value}' for name, value in given if value is not None] + list(self.extra)


def check_cluster(options: SlurmOptions) -> None:
  """One-line ValueError, before anything is submitted, when sbatch is not on PATH or sinfo does
  not list --slurm_partition."""
  if shutil.which('sbatch') is None:
    raise ValueError('--launcher=slurm: sbatch is not on PATH; run on a SLURM login node or use '
                     '--launcher=local')
  if options.partition is None:
    return
  result = subprocess.run(['sinfo', '--noheader', '--format=%R'], capture_output=True, text=True)
  if result.returncode != 0:
    raise ValueError(f"--launcher=slurm: sinfo failed: {one_line(result.stderr)}")
  partitions = sorted(set(result.stdout.split()))
  if options.partition not in partitions:
    raise ValueError(f'--slurm_partition={options.partition!r}: sinfo lists '
                     f'{", ".join(partitions) or "no partition"}')


def _task(index: int, job) -> str:
  return (f'  {index}) run={shlex.quote(job.name)}\n'
          f'     command=({shlex.join(job.command)}) ;;')


def script_text(name: str, workdir: Path, jobs: Sequence, repo: Path, env: dict[str, str],
                options: SlurmOptions) -> str:
  """The sbatch script of study `name`: a job array with one task per job of `jobs`
  (runner.Job), run in `repo` with the variables `env` set, under `options`."""
  directives = [f'--job-name={name}', f'--array=0-{len(jobs) - 1}',
                f'--output={workdir / SLURM_DIR}/%A_%a.out', '--open-mode=append', '--requeue',
                f'--signal=TERM@{STOP_WARNING_SECONDS}', *options.directives()]
  exports = [f'export {key}={shlex.quote(value)}' for key, value in env.items()]
  folder = shlex.quote(f'{workdir}/')
  return '\n'.join([
      '#!/bin/bash',
      f'# The {name} study: one task per run (model/seed), each running exactly the command of',
      '# the local runner. A run stopped by a signal checkpoints, exits 128 + the signal and',
      '# is requeued to resume.',
      *[f'#SBATCH {shlex.quote(directive)}' for directive in directives],
      'set -u',
      'case "$SLURM_ARRAY_TASK_ID" in',
      *[_task(index, job) for index, job in enumerate(jobs)],
      'esac',
      f'cd {shlex.quote(str(repo))}',
      *exports,
      f'log={folder}"$run".log state={folder}"$run"{status.STATE_SUFFIX}',
      'job="${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"',
      'record() {  # the run\'s state for --status, written whole',
      '  printf \'%s\\n\' "$1" > "$state.tmp" && mv "$state.tmp" "$state"',
      '}',
      'mkdir -p "$(dirname "$log")"',
      f'record "{{\\"state\\": \\"{status.RUNNING}\\", \\"slurm_job\\": \\"$job\\"}}"',
      'printf \'$\' >> "$log"; printf \' %q\' "${command[@]}" >> "$log"; echo >> "$log"',
      "trap ':' TERM  # preemption and the time limit signal this shell too: wait for the run",
      'srun --ntasks=1 --cpus-per-task="${SLURM_CPUS_PER_TASK:-1}" --open-mode=append \\',
      '  --output="$log" "${command[@]}" &',
      'pid=$!',
      'while :; do wait "$pid"; code=$?; kill -0 "$pid" 2>/dev/null || break; done',
      f'record "{{\\"state\\": \\"{status.EXITED}\\", \\"exit\\": $code, '
      '\\"slurm_job\\": \\"$job\\"}"',
      f'case "$code" in {"|".join(map(str, sorted(status.STOPPED_STATUSES)))})',
      '  scontrol requeue "$job" ;;  # this task only; the run resumes from its new checkpoint',
      'esac',
      'exit "$code"',
      '',
  ])


def read_submitted(workdir: Path) -> dict[str, str]:
  """{run: SLURM task id 'ARRAYID_K'} of every run submitted from `workdir` ({} if none)."""
  path = workdir / SLURM_DIR / JOBS_FILE
  return json.loads(path.read_text()) if path.exists() else {}


def _queued(workdir: Path, name: str) -> set[str]:
  """The runs whose SLURM task (read_submitted) squeue still lists, pending or running."""
  result = subprocess.run(['squeue', '--noheader', '--array', '--format=%i', f'--name={name}'],
                          capture_output=True, text=True)
  if result.returncode != 0:
    raise ValueError(f"--launcher=slurm: squeue failed: {one_line(result.stderr)}")
  tasks = set(result.stdout.split())
  return {run for run, task in read_submitted(workdir).items() if task in tasks}


def submit(name: str, workdir: Path, jobs: Sequence, repo: Path, env: dict[str, str],
           options: SlurmOptions) -> list[str]:
  """Submits one array of the jobs neither finished nor queued; returns the runs submitted."""
  queued = _queued(workdir, name)
  todo = []
  for job in jobs:
    skip = 'finished' if is_finished(job.run_dir) else 'queued' if job.name in queued else None
    print(f'{job.name}: {skip}, skipped' if skip else f'{job.name}: to submit', flush=True)
    if not skip:
      todo.append(job)
  if not todo:
    return []
  script = workdir / SLURM_DIR / f'{name}.sbatch'
  script.parent.mkdir(parents=True, exist_ok=True)
  atomic_write_text(script, script_text(name, workdir, todo, repo, env, options))
  result = subprocess.run(['sbatch', '--parsable', str(script)], capture_output=True, text=True)
  if result.returncode != 0:
    raise ValueError(f"sbatch {script} failed: {one_line(result.stderr)}")
  array_id = result.stdout.strip().split(';')[0]
  submitted = {job.name: f'{array_id}_{index}' for index, job in enumerate(todo)}
  atomic_write_text(workdir / SLURM_DIR / JOBS_FILE,
                    json.dumps({**read_submitted(workdir), **submitted}, indent=2) + '\n')
  print(f'submitted job array {array_id} ({len(todo)} tasks): {script}', flush=True)
  return list(submitted)
