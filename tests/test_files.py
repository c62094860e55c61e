"""resnet_jax/files.py: a file is replaced whole or not at all; errors read in one line."""

import os

import pytest

from resnet_jax import files


def test_atomic_write_replaces_whole_file(tmp_path):
  path = tmp_path / 'f.json'
  files.atomic_write_text(path, 'old')
  files.atomic_write_text(str(path), 'new')
  assert path.read_text() == 'new'
  assert os.listdir(tmp_path) == ['f.json']


def test_atomic_write_gives_the_permissions_of_open(tmp_path):
  files.atomic_write_text(tmp_path / 'atomic', 'x')
  (tmp_path / 'plain').write_text('x')
  modes = [os.stat(tmp_path / name).st_mode & 0o777 for name in ('atomic', 'plain')]
  assert modes[0] == modes[1]  # mkstemp alone gives 0o600, whatever the umask


def test_a_failing_write_leaves_the_old_file_and_no_temporary(tmp_path):
  path = tmp_path / 'f.bin'
  files.atomic_write(path, lambda f: f.write(b'old'), binary=True)

  def half_then_fail(f):
    f.write(b'half')
    raise OSError('disk full')

  with pytest.raises(OSError, match='disk full'):
    files.atomic_write(path, half_then_fail, binary=True)
  assert path.read_bytes() == b'old'
  assert os.listdir(tmp_path) == ['f.bin']


@pytest.mark.parametrize('error, text', [
    (ValueError('a\n  b\tc'), 'a b c'),
    (KeyError(), 'KeyError'),
])
def test_one_line(error, text):
  assert files.one_line(error) == text
