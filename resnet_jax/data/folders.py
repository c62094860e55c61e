"""Image folders, one layout and one set of rules for the in-memory and the streaming pipeline:
root/train/<class>/<image> and root/test/<class>/<image> (val/ where there is no test/).

Classes are the sorted sub-folder names of train/ (label = position in that order), and the
evaluation folder must hold the same classes. Images are the files with an IMAGE_EXTENSIONS
extension (any case), sorted by class then name; names starting with '.' are skipped.
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif')  # what Pillow and tf.io both decode
EVAL_FOLDERS = ('test', 'val')  # the first that exists is the evaluation split
LAYOUT = 'expected data_dir/{train,test}/<class>/<image files> (or val/ for test/)'


@dataclasses.dataclass(frozen=True)
class Split:
  paths: list[pathlib.Path]
  labels: np.ndarray  # int32, one per path


@dataclasses.dataclass(frozen=True)
class Listing:
  class_names: tuple[str, ...]
  train: Split
  test: Split  # from test/, else val/


def scan(root: str) -> Listing:
  """The images of root's train and evaluation folders, without reading them; a ValueError
  naming the folder and the expected layout when it does not fit."""
  base = pathlib.Path(root)
  if not root or not (base / 'train').is_dir():
    raise ValueError(f'{base / "train"} is not a directory; {LAYOUT}')
  eval_name = next((name for name in EVAL_FOLDERS if (base / name).is_dir()), None)
  if eval_name is None:
    raise ValueError(f'{base} has no val/ or test/ folder; {LAYOUT}')
  train, test = _classes(base / 'train'), _classes(base / eval_name)
  if set(train) != set(test):
    raise ValueError(
        f'train/ and {eval_name}/ of {base} have different classes: only in train '
        f'{sorted(set(train) - set(test))}, only in {eval_name} {sorted(set(test) - set(train))}')
  class_names = tuple(train)
  return Listing(class_names, _split(train, class_names), _split(test, class_names))


def _classes(folder: pathlib.Path) -> dict[str, list[pathlib.Path]]:
  """Sorted class name -> sorted image paths of one split folder."""
  names = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith('.'))
  if not names:
    raise ValueError(f'{folder} has no class folders; {LAYOUT}')
  listing = {}
  for name in names:
    files = sorted(p for p in (folder / name).iterdir()
                   if p.is_file() and not p.name.startswith('.')
                   and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
      raise ValueError(f'class folder {folder / name} has no files with an image extension '
                       f'({", ".join(IMAGE_EXTENSIONS)}); {LAYOUT}')
    listing[name] = files
  return listing


def _split(listing: dict[str, list[pathlib.Path]], class_names: tuple[str, ...]) -> Split:
  paths = [path for name in class_names for path in listing[name]]
  labels = np.repeat(np.arange(len(class_names), dtype=np.int32),
                     [len(listing[name]) for name in class_names])
  return Split(paths, labels)
