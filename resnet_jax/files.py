"""Files written whole or not at all, and errors told in one line: helpers every part shares."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import IO

_UMASK = os.umask(0o022)  # read once, at import: setting it later would race other threads
os.umask(_UMASK)


def atomic_write(path: str | os.PathLike, write: Callable[[IO], None],
                 binary: bool = False) -> None:
  """Calls `write` on a temporary file beside `path`, then renames it over `path`: a reader sees
  the old file or the new one, never half of one; on an error the old file stays as it was. The
  file gets the permissions of a plain open() (0666 less the umask), not mkstemp's 0600."""
  path = os.fspath(path)
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)),
                             prefix='.' + os.path.basename(path) + '.')
  try:
    os.fchmod(fd, 0o666 & ~_UMASK)
    with os.fdopen(fd, 'wb' if binary else 'w') as f:
      write(f)
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
  """Writes `text` to `path` atomically (atomic_write)."""
  atomic_write(path, lambda f: f.write(text))


def one_line(message: str | BaseException) -> str:
  """The message on one line; an error with no message gives its type's name."""
  text = ' '.join(str(message).split())
  return text or (type(message).__name__ if isinstance(message, BaseException) else '')
