"""--launcher=slurm: bad input before anything is submitted, the sbatch script, and the tiny study
on a real one-node SLURM cluster on localhost (munged, slurmctld, slurmd), with one task cut by
`scancel --signal=TERM` that is requeued and resumes to the metrics of an uninterrupted run."""

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from resnet_jax.study import runner, slurm
from resnet_jax.study.status import state_file, status_table
from resnet_jax.study.studies import DEGRADATION
from tests.study.test_runner import FIGURES, REPO, TINY_FLAGS, bad_input, checkpointed

DAEMONS = ('munged', 'slurmctld', 'slurmd')
TINY_STEPS = 48  # RESNET_JAX_QUICK_STEPS: log every step, evaluate and checkpoint every 4
CUT_AFTER = 8  # an early checkpoint step of the tiny study: 40 steps left for the signal to land
REQUEUE_WAIT_SECONDS = 60
STUDY_SECONDS = 240
# SLURM holds a requeued job until the credentials of its last start have expired (120 s by
# default); a start before that is refused ('Job credential revoked').
CRED_EXPIRE_SECONDS = 10


def _fake_slurm(tmp_path: Path) -> Path:
  """A bin folder whose sinfo lists partitions debug and gpu, and whose sbatch records a call."""
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  scripts = {'sinfo': 'printf "debug\\ngpu\\ngpu\\n"',
             'sbatch': f'touch {tmp_path}/submitted; echo 1',
             'squeue': 'true'}
  for name, body in scripts.items():
    (bin_dir / name).write_text(f'#!/bin/sh\n{body}\n')
    (bin_dir / name).chmod(0o755)
  return bin_dir


def test_slurm_without_sbatch_on_path_is_bad_input(tmp_path, monkeypatch, capsys):
  monkeypatch.setenv('PATH', str(tmp_path))
  text = bad_input(capsys, [f"--workdir={tmp_path / 'study'}", '--launcher=slurm'])
  assert text == ('degradation: --launcher=slurm: sbatch is not on PATH; run on a SLURM login '
                  'node or use --launcher=local')
  assert not (tmp_path / 'study').exists()


@pytest.mark.parametrize('flags, message', [
    (['--launcher=slurm', '--slurm_partition=gpus'],
     "--slurm_partition='gpus': sinfo lists debug, gpu"),
    (['--launcher=slurm', '--parallel=2'], '--parallel=2 is for --launcher=local'),
    (['--slurm_partition=gpu'], '--slurm_partition needs --launcher=slurm'),
    (['--launcher=pbs'], "unknown --launcher='pbs': use one of local, slurm"),
    (['--launcher=slurm', '--slurm_time=1:00:00', '--slurm_cpus_per_task=many'],
     "argument --slurm_cpus_per_task: invalid int value: 'many'"),
])
def test_bad_slurm_flags_exit_2_before_anything_is_submitted(tmp_path, monkeypatch, capsys, flags,
                                                             message):
  monkeypatch.setenv('PATH', f"{_fake_slurm(tmp_path)}:{os.environ['PATH']}")
  text = bad_input(capsys, [f"--workdir={tmp_path / 'study'}", *flags])
  assert message in text, text
  assert not (tmp_path / 'study').exists() and not (tmp_path / 'submitted').exists()


def _tasks(script: str) -> dict[int, tuple[str, list[str]]]:
  """{task id: (run, command)} of an sbatch script of slurm.script_text."""
  found = re.findall(r'^  (\d+)\) run=(\S+)\n     command=\((.*)\) ;;$', script, re.MULTILINE)
  return {int(task): (run, shlex.split(command)) for task, run, command in found}


def test_the_paper_preset_script_runs_each_run_with_the_local_runners_command(tmp_path):
  spec = DEGRADATION
  options = slurm.SlurmOptions('gpu', '12:00:00', 1, 8, ('--account=abc', '--qos=low'))
  study = runner.parse_flags(spec, [f'--workdir={tmp_path}', '--seeds=5', '--launcher=slurm',
                                    '--slurm_partition=gpu', '--slurm_time=12:00:00',
                                    '--slurm_gpus_per_task=1', '--slurm_cpus_per_task=8',
                                    '--slurm_extra=--account=abc --qos=low'])
  assert study.slurm_options == options
  jobs = runner.make_jobs(study)
  script = slurm.script_text(spec.name, tmp_path, jobs, REPO, runner.run_variables(1), options)
  directives = re.findall(r'^#SBATCH (.*)$', script, re.MULTILINE)
  assert directives == [f'--job-name={spec.name}', f'--array=0-{len(jobs) - 1}',
                        f'--output={tmp_path}/slurm/%A_%a.out', '--open-mode=append',
                        '--requeue', f'--signal=TERM@{slurm.STOP_WARNING_SECONDS}',
                        '--partition=gpu', '--time=12:00:00', '--gpus-per-task=1',
                        '--cpus-per-task=8', '--account=abc', '--qos=low']
  assert len(jobs) == 5 * len(spec.presets['paper'].models)
  assert _tasks(script) == {task: (job.name, list(job.command)) for task, job in enumerate(jobs)}
  assert 'export XLA_PYTHON_CLIENT_PREALLOCATE=false' in script


def _free_port() -> int:
  with socket.socket() as sock:
    sock.bind(('localhost', 0))
    return sock.getsockname()[1]


def _slurm_conf(root: Path, sockets: Path) -> str:
  return '\n'.join([
      'ClusterName=resnetjaxtest', 'SlurmctldHost=localhost',
      f'SlurmctldPort={_free_port()}', f'SlurmdPort={_free_port()}',
      'SlurmUser=root', 'SlurmdUser=root', 'AuthType=auth/munge', 'CredType=cred/munge',
      f'AuthInfo=socket={sockets}/munge.socket,cred_expire={CRED_EXPIRE_SECONDS}',
      f'StateSaveLocation={root}/state',
      f'SlurmdSpoolDir={sockets}/spool', f'SlurmctldPidFile={root}/slurmctld.pid',
      f'SlurmdPidFile={root}/slurmd.pid', f'SlurmctldLogFile={root}/slurmctld.log',
      f'SlurmdLogFile={root}/slurmd.log', 'ProctrackType=proctrack/linuxproc',
      'TaskPlugin=task/none', 'JobAcctGatherType=jobacct_gather/none',
      'SelectType=select/cons_tres', 'SelectTypeParameters=CR_CPU',
      'SlurmdParameters=config_overrides', 'MpiDefault=none', 'ReturnToService=2',
      'JobRequeue=1', f'NodeName=localhost CPUs={os.cpu_count()} State=UNKNOWN',
      'PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP', ''])


def _wait(condition, seconds: float, what: str, logs: Path | None = None):
  """Polls condition until it holds; a timeout names `what` and shows the last lines of every
  log under `logs` (the runs' and the SLURM tasks')."""
  deadline = time.monotonic() + seconds
  while not (found := condition()):
    assert time.monotonic() < deadline, f'timed out waiting for {what}{_log_tails(logs)}'
    time.sleep(0.2)
  return found


def _log_tails(logs: Path | None, lines: int = 15) -> str:
  paths = sorted([*logs.rglob('*.log'), *logs.rglob('*.out')]) if logs else []
  return ''.join(f"\n--- {path}\n" + '\n'.join(path.read_text().splitlines()[-lines:])
                 for path in paths)


def _stop_daemons(root: Path, env: dict[str, str]) -> None:
  """Cancels every job and waits for their ends (the daemons must be up for that), then stops
  each daemon by its pid file, the last started first."""
  if (root / 'slurmctld.pid').exists():
    subprocess.run(['scancel', '--full', '--user=root'], env=env, capture_output=True)
    for _ in range(100):
      queue = subprocess.run(['squeue', '--noheader'], env=env, capture_output=True, text=True)
      if queue.returncode or not queue.stdout.strip():
        break
      time.sleep(0.2)
  for daemon in reversed(DAEMONS):
    pid_file = root / f'{daemon}.pid'
    if not pid_file.exists():
      continue
    pid = int(pid_file.read_text())
    try:
      os.kill(pid, signal.SIGTERM)
      for _ in range(50):
        time.sleep(0.1)
        os.kill(pid, 0)
      os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
      pass


@pytest.fixture
def cluster(tmp_path):
  """A one-node SLURM cluster on localhost, its logs and state in tmp_path/cluster; yields the
  environment its client commands (sbatch, squeue, scancel) need. The daemons' Unix sockets go in
  a short folder under /tmp: slurmd's step sockets (spool/localhost_<job>.<step>) fail under a
  deep pytest tmp_path, whose path outgrows a socket's 108 characters."""
  missing = [daemon for daemon in DAEMONS if not shutil.which(daemon, path=f"{os.environ['PATH']}"
                                                             ':/usr/sbin:/sbin')]
  if missing or os.geteuid() != 0:
    pytest.skip(f"needs {', '.join(missing)} (apt-get install slurm-wlm munge)" if missing else
                'needs root to start slurmd')
  root = tmp_path / 'cluster'
  (root / 'state').mkdir(parents=True)
  with tempfile.TemporaryDirectory(prefix='slurm-', dir='/tmp') as sockets:
    yield from _start_cluster(root, Path(sockets))


def _start_cluster(root: Path, sockets: Path):
  """Starts munged, slurmctld and slurmd; yields their clients' environment, then stops them."""
  (sockets / 'spool').mkdir()
  key = root / 'munge.key'
  key.write_bytes(os.urandom(1024))
  key.chmod(0o400)
  (root / 'slurm.conf').write_text(_slurm_conf(root, sockets))
  env = dict(os.environ, SLURM_CONF=str(root / 'slurm.conf'),
             PATH=f"{os.environ['PATH']}:/usr/sbin:/sbin")
  try:
    subprocess.run(['munged', f'--key-file={key}', f'--socket={sockets}/munge.socket', '--force',
                    f'--pid-file={root}/munged.pid', f'--log-file={root}/munged.log',
                    f'--seed-file={root}/munge.seed'], env=env, check=True)
    subprocess.run(['slurmctld', '-i'], env=env, check=True)
    subprocess.run(['slurmd', '-N', 'localhost'], env=env, check=True)
    _wait(lambda: subprocess.run(['sinfo', '--noheader', '--format=%t'], env=env,
                                 capture_output=True, text=True).stdout.split() == ['idle'],
          30, 'the node to be idle')
    yield env
  finally:
    _stop_daemons(root, env)


def _study(workdir: Path, env: dict[str, str], *flags: str) -> subprocess.CompletedProcess:
  command = [sys.executable, 'experiments/degradation.py', f'--workdir={workdir}', *TINY_FLAGS,
             *flags]
  env = dict(env, **{runner.QUICK_STEPS_ENV: str(TINY_STEPS)})
  return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def _squeue(env: dict[str, str], *flags: str) -> list[str]:
  return subprocess.run(['squeue', '--noheader', '--array', *flags], env=env, capture_output=True,
                        text=True, check=True).stdout.split()


def _rows(run_dir: Path) -> list[dict]:
  return [json.loads(line) for line in (run_dir / 'metrics.jsonl').read_text().splitlines()]


def _metrics(run_dir: Path) -> list[dict]:
  """The logged numbers of a run, without its timings."""
  return [{key: value for key, value in row.items() if key not in ('wall_time', 'images_per_sec')}
          for row in _rows(run_dir) if 'event' not in row]


def test_tiny_study_on_slurm_with_a_task_cut_by_sigterm_requeued_and_resumed(tmp_path, cluster):
  env, cut, straight = cluster, tmp_path / 'cut', tmp_path / 'straight'
  # 1. Two studies: plain8 and resnet8, whose resnet8 is cut, and resnet8 alone, not cut.
  submitted = _study(cut, env, '--launcher=slurm')
  assert submitted.returncode == 0, submitted.stderr
  assert 'submitted job array' in submitted.stdout
  assert _study(straight, env, '--launcher=slurm', '--models=resnet8').returncode == 0
  jobs = slurm.read_submitted(cut)
  assert sorted(jobs) == ['plain8/seed0', 'resnet8/seed0']
  script = (cut / 'slurm' / 'degradation.sbatch').read_text()
  assert '#SBATCH --job-name=degradation' in script and '#SBATCH --array=0-1' in script

  # 2. Once resnet8 has saved a checkpoint of step CUT_AFTER or later, SIGTERM to its task: the run
  # checkpoints and exits 143, the task requeues itself, and --status says it will resume.
  resnet = cut / 'resnet8' / 'seed0'
  _wait(lambda: checkpointed(resnet) >= CUT_AFTER, STUDY_SECONDS, 'the cut', tmp_path)
  task = jobs['resnet8/seed0']
  subprocess.run(['scancel', '--signal=TERM', task], env=env, check=True)
  _wait(lambda: json.loads(state_file(resnet).read_text()).get('exit') == 143,
        REQUEUE_WAIT_SECONDS, 'the run to stop', tmp_path)
  _wait(lambda: task in _squeue(env, '--states=PENDING', '--format=%i'), REQUEUE_WAIT_SECONDS,
        'the requeue', tmp_path)
  table = status_table(cut, jobs)
  print(table)
  assert re.search(rf'^resnet8/seed0 +pending +{task} +stopped \(exit 143\) at step \d+, '
                   'resumes$', table, re.MULTILINE), table

  # 3. Every task ends; the resumed run logged exactly what the uninterrupted one did.
  _wait(lambda: not _squeue(env, '--format=%i'), STUDY_SECONDS, 'every task to end', tmp_path)
  for run_dir in (cut / 'plain8' / 'seed0', resnet, straight / 'resnet8' / 'seed0'):
    assert _rows(run_dir)[-1]['event'] == 'end', run_dir
  assert [row['event'] for row in _rows(resnet) if 'event' in row] == ['start', 'resume', 'end']
  assert 'stopped by SIGTERM at step' in resnet.with_suffix('.log').read_text()
  started = [sum(line.startswith('$ ') for line in path.read_text().splitlines())
             for path in (cut / 'plain8' / 'seed0.log', resnet.with_suffix('.log'))]
  assert started == [1, 2]  # plain8 ran once; only the cut task was requeued
  assert _metrics(resnet) == _metrics(straight / 'resnet8' / 'seed0')
  status = _study(cut, env, '--status')
  assert status.returncode == 0, status.stderr
  assert status.stdout.splitlines()[-1] == '2 finished'

  # 4. The same command submits nothing: both runs are finished.
  again = _study(cut, env, '--launcher=slurm')
  assert again.returncode == 0, again.stderr
  assert 'plain8/seed0: finished, skipped' in again.stdout
  assert 'resnet8/seed0: finished, skipped' in again.stdout
  assert 'submitted job array' not in again.stdout and slurm.read_submitted(cut) == jobs

  # 5. --plot-only draws every figure from the finished runs.
  drawn = _study(cut, env, '--launcher=slurm', '--plot-only')
  assert drawn.returncode == 0, drawn.stderr
  for name in FIGURES:
    assert (cut / 'figures' / f'{name}.png').stat().st_size > 0
