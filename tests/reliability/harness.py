"""Shared by the reliability tests: the CLI in subprocesses, kills, metrics and checkpoints.

Every subprocess shares one persistent XLA cache (per test session), so only the
first run of each configuration pays for compilation.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from resnet_jax.train import checkpoint, metrics

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CRASHING_MAIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'crashing_main.py')
TIMEOUT = 300
TIMING_FIELDS = ('wall_time', 'images_per_sec')


def env(cache_dir, devices: int = 1, **extra: str) -> dict:
  """The environment of a CLI subprocess: `devices` forced CPU devices, a shared XLA cache."""
  flags = ' '.join(f for f in os.environ.get('XLA_FLAGS', '').split()
                   if not f.startswith('--xla_force_host_platform_device_count'))
  return {**os.environ, 'PYTHONPATH': ROOT, 'JAX_PLATFORMS': 'cpu',
          'XLA_FLAGS': f'{flags} --xla_force_host_platform_device_count={devices}'.strip(),
          'JAX_COMPILATION_CACHE_DIR': str(cache_dir),
          'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0', **extra}


def command(workdir, model: str = 'resnet8', crash: tuple[str, int] | None = None,
            **fields) -> list[str]:
  """`python -m resnet_jax.main` (or crashing_main.py with crash=(point, step)) with overrides."""
  program = ['-m', 'resnet_jax.main'] if crash is None else [
      CRASHING_MAIN, crash[0], str(crash[1])]
  return [sys.executable, *program, f'--config=configs/cifar10.py:{model}',
          f'--workdir={workdir}', *(f'--config.{k}={v}' for k, v in fields.items())]


def run(args: list[str], environment: dict) -> subprocess.CompletedProcess:
  return subprocess.run(args, cwd=ROOT, env=environment, capture_output=True, text=True,
                        timeout=TIMEOUT)


def start(args: list[str], environment: dict, log_path) -> subprocess.Popen:
  """Starts a CLI subprocess with stdout and stderr going to `log_path`."""
  with open(log_path, 'w') as log:
    return subprocess.Popen(args, cwd=ROOT, env=environment, stdout=log,
                            stderr=subprocess.STDOUT)


def finish(process: subprocess.Popen, log_path) -> None:
  """Waits for a process from start() and checks that it succeeded."""
  status = process.wait(timeout=TIMEOUT)
  with open(log_path) as log:
    assert status == 0, log.read()[-3000:]


def signal_at_step(process: subprocess.Popen, workdir, step: int, signum: int) -> int:
  """Sends `signum` once this run logged a train row at `step` or later; returns the exit status.

  Rows left by earlier runs in workdir do not count: only rows after a start or resume
  event beyond those already in metrics.jsonl.
  """
  path = os.path.join(workdir, metrics.METRICS_FILE)
  earlier_events = len(events(metrics.read_rows(path)))
  deadline = time.monotonic() + TIMEOUT
  while process.poll() is None and time.monotonic() < deadline:
    ours = _rows_after_event(metrics.read_rows(path), earlier_events)
    if any(r['step'] >= step and 'train_loss' in r for r in ours):
      process.send_signal(signum)
      break
    time.sleep(0.02)
  return process.wait(timeout=TIMEOUT)


def _rows_after_event(all_rows: list[dict], n: int) -> list[dict]:
  """The rows after event row number n (from 0); none if there is no such event yet."""
  positions = [i for i, r in enumerate(all_rows) if 'event' in r]
  return all_rows[positions[n] + 1:] if len(positions) > n else []


def rows(workdir) -> list[dict]:
  return metrics.read_rows(os.path.join(workdir, metrics.METRICS_FILE))


def comparable(all_rows: list[dict]) -> list[dict]:
  """The rows that must be identical between runs: no events, no timings."""
  return [{k: v for k, v in r.items() if k not in TIMING_FIELDS}
          for r in all_rows if 'event' not in r]


def assert_same_metrics(rows: list[dict], reference_rows: list[dict], examples: dict[str, int],
                        rtol: float = 1e-5) -> None:
  """Equal steps and learning rates, losses within rtol, errors within one example.

  examples: the number of examples behind each error, e.g. {'train': 80, 'test': 25}.
  """
  ours, theirs = comparable(rows), comparable(reference_rows)
  assert [sorted(r) for r in ours] == [sorted(r) for r in theirs]
  for a, b in zip(ours, theirs):
    assert (a['step'], a.get('learning_rate')) == (b['step'], b.get('learning_rate'))
    for split, count in examples.items():
      if f'{split}_loss' in a:
        assert a[f'{split}_loss'] == pytest.approx(b[f'{split}_loss'], rel=rtol), a['step']
        assert abs(a[f'{split}_error'] - b[f'{split}_error']) <= 1.001 / count, a['step']


def events(all_rows: list[dict]) -> list[tuple[int, str]]:
  return [(r['step'], r['event']) for r in all_rows if 'event' in r]


def steps_on_disk(workdir) -> list[int]:
  """Checkpointed steps; none when the run was killed before its first checkpoint."""
  folder = os.path.join(workdir, checkpoint.CHECKPOINT_DIR)
  if not os.path.isdir(folder):
    return []
  return sorted(int(p) for p in os.listdir(folder) if p.isdigit())


def saved_state(workdir, step: int) -> dict[str, np.ndarray]:
  """The arrays of a checkpoint's state as numpy, keyed by path, read onto one device.

  The shapes come from the checkpoint's metadata, so no model is built; any number of
  devices or processes may have written it.
  """
  path = os.path.join(os.path.abspath(workdir), checkpoint.CHECKPOINT_DIR, str(step), 'state')
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  with ocp.StandardCheckpointer() as reader:
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                          reader.metadata(path).item_metadata)
    tree = reader.restore(path, target)
  return checkpoint.host_arrays(tree)


def files(root) -> dict[str, bytes]:
  """Every file under root with its contents (for 'nothing was changed' checks)."""
  found = {}
  for folder, _, names in os.walk(root):
    for name in names:
      path = os.path.join(folder, name)
      with open(path, 'rb') as f:
        found[os.path.relpath(path, root)] = f.read()
  return found


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


SIGNALS = {'SIGTERM': signal.SIGTERM, 'SIGINT': signal.SIGINT}
