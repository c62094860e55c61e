"""Where a result came from: the git commit, the accelerator and the installed versions."""

from __future__ import annotations

import importlib.metadata
import json
import platform
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
VERSIONED_PACKAGES = ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'ml-collections',
                      'numpy', 'tensorflow-cpu', 'tensorflow', 'tensorflow-datasets', 'matplotlib',
                      'torch')
_DEVICE_PROBE = '''import json, jax
d = jax.devices()
print(json.dumps({"backend": jax.default_backend(), "count": len(d), "kind": d[0].device_kind,
                  "memory_bytes": (d[0].memory_stats() or {}).get("bytes_limit")}))'''


def git_commit() -> dict:
  """HEAD's commit and whether tracked files differ from it."""
  def git(*args: str) -> str:
    result = subprocess.run(('git', *args), cwd=REPO_ROOT, capture_output=True, text=True,
                            check=True)
    return result.stdout.strip()

  try:
    return {'commit': git('rev-parse', 'HEAD'),
            'dirty': bool(git('status', '--porcelain', '--untracked-files=no'))}
  except (OSError, subprocess.CalledProcessError):
    return {'commit': None, 'dirty': None}


def device_info(env: dict[str, str] | None = None) -> dict:
  """The accelerator a process started with `env` sees (backend, count, kind, memory_bytes where
  the backend reports it), asked of a separate process so that this one holds none."""
  result = subprocess.run((sys.executable, '-c', _DEVICE_PROBE), capture_output=True, text=True,
                          env=env, cwd=REPO_ROOT)
  if result.returncode:
    return {'error': result.stderr.strip().splitlines()[-1:]}
  return json.loads(result.stdout.splitlines()[-1])


def versions() -> dict[str, str]:
  """Python, the platform and the installed VERSIONED_PACKAGES."""
  found = {'python': platform.python_version(), 'platform': platform.platform()}
  for package in VERSIONED_PACKAGES:
    try:
      found[package] = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      continue
  return found
