"""A tiny image folder for tests that train on real files (data_dir/{train,test}/<class>/*.png)."""

from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ('red', 'green', 'blue')


def write_colour_folder(root: Path, train: int, test: int) -> Path:
  """`train` and `test` 8x8 PNGs per class of CLASSES, told apart by their dominant channel."""
  rng = np.random.default_rng(0)
  for split, count in (('train', train), ('test', test)):
    for label, name in enumerate(CLASSES):
      folder = root / split / name
      folder.mkdir(parents=True)
      for i in range(count):
        pixels = rng.integers(0, 80, (8, 8, 3))
        pixels[..., label] += 170
        Image.fromarray(pixels.astype(np.uint8)).save(folder / f'{i}.png')
  return root
