"""In-memory CIFAR-sized data sources: tfds, image folders and synthetic data.

`load_dataset(data, in_memory)` returns every split as uint8 arrays held in host memory;
the train loop moves batches to the device and augments them there
(`resnet_jax.data.augment`). The optional validation split follows He et al.
2015, sec. 4.2 ("45k/5k train/val split"): it is carved out of the training set
by a fixed permutation that does not depend on the run's seed, so every run of
a study is validated on the same examples. The optional train and test subsets
(train_subset, test_subset) are fixed in the same way, for quick studies on a CPU.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import pathlib
import socket
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image

from resnet_jax.config import Data, InMemory
from resnet_jax.data import folders
from resnet_jax.data.names import IN_MEMORY_DATASETS, TFDS_IN_MEMORY
from resnet_jax.files import one_line

VAL_SPLIT_KEY = 2015  # fixed seed of the train/val permutation (never the run's seed)
SYNTHETIC_KEY = 2016  # fixed seed of the synthetic images and labels
SUBSET_KEY = 2017  # fixed seed of the train/test subsets (never the run's seed)
TFDS_READ_BATCH = 4096
DECODE_CHUNK = 256
DOWNLOAD_CHECK_SECONDS = 10  # how long to try a download host before calling it unreachable
DEFAULT_PORTS = {'https': 443, 'http': 80}

# A process's share of a split of n examples: the range [start, stop) of them it keeps
# (stop may pass n). Runs of several processes pass resnet_jax.parallel.process_rows.
Rows = Callable[[int], tuple[int, int]]


@dataclasses.dataclass(frozen=True, eq=False)
class Split:
  """Examples of one split: images uint8 [n, H, W, C], labels int32 [n].

  len(split) is the split's number of examples, `size`. A process of a run of several
  processes holds only the examples start .. start + n - 1 (load_dataset's `rows`);
  otherwise start = 0 and n = size.
  """

  images: np.ndarray
  labels: np.ndarray
  start: int = 0
  size: int | None = None

  def __post_init__(self):
    if self.size is None:
      object.__setattr__(self, 'size', len(self.labels))

  def __len__(self) -> int:
    return self.size


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
  """All splits of a data set held in host memory; `val` is None without a split."""

  train: Split
  val: Split | None
  test: Split
  num_classes: int
  class_names: tuple[str, ...]


def load_dataset(data: Data, in_memory: InMemory, rows: Rows | None = None) -> Dataset:
  """Loads data.dataset into memory and carves out data.val_split examples.

  train and test keep in_memory's subsets (subset_indices); synthetic data take
  in_memory.synthetic_size, num_classes and data.image_size. With `rows` every split keeps
  only this process's contiguous range of examples: image folders decode only those files;
  tfds and synthetic data are read whole and cut.
  """
  name = data.dataset
  if name not in IN_MEMORY_DATASETS:
    raise ValueError(f'dataset={name!r} is not an in-memory source; choose one of '
                     f'{IN_MEMORY_DATASETS}')
  subsets = Subsets(train=in_memory.train_subset, test=in_memory.test_subset)
  if name == 'image_folder':
    return load_image_folder(data.data_dir, val_split=data.val_split, rows=rows, subsets=subsets)
  if name in TFDS_IN_MEMORY:
    dataset = _load_tfds(name, data.data_dir, data.tfds_manual_dir)
  else:
    dataset = synthetic_dataset(in_memory.synthetic_size, data.image_size,
                                in_memory.num_classes)
  return keep_rows(keep_subsets(split_validation(dataset, data.val_split), subsets), rows)


@dataclasses.dataclass(frozen=True)
class Subsets:
  """How many examples of the train and test splits to keep; 0 keeps the whole split."""

  train: int = 0
  test: int = 0


def subset_indices(size: int, keep: int, name: str) -> np.ndarray:
  """Sorted indices of `keep` of a split's `size` examples (all of them when keep is 0).

  They are the first `keep` of a permutation seeded with SUBSET_KEY, never with the
  run's seed, so every run of a study trains and is tested on the same examples, and
  a smaller subset is part of a larger one. `name` is the config field, for the error.
  """
  if keep < 0 or keep > size:
    raise ValueError(f'{name}={keep} must be in [0, {size}] (the split has {size} examples); '
                     f'set {name}=0 for the whole split')
  if keep == 0:
    return np.arange(size)
  return np.sort(np.random.default_rng(SUBSET_KEY).permutation(size)[:keep])


def keep_subsets(dataset: Dataset, subsets: Subsets) -> Dataset:
  """The train and test splits cut to their subsets (subset_indices); val is left whole."""
  train = subset_indices(len(dataset.train), subsets.train, 'train_subset')
  test = subset_indices(len(dataset.test), subsets.test, 'test_subset')
  if subsets == Subsets():
    return dataset
  return dataclasses.replace(
      dataset, train=_take(dataset.train, train), test=_take(dataset.test, test))


def validation_indices(num_train: int, val_split: int) -> tuple[np.ndarray, np.ndarray]:
  """Sorted (train, val) indices into the training set; val has `val_split` of them.

  val is the last `val_split` examples of a permutation seeded with VAL_SPLIT_KEY,
  never with the run's seed, so the validation set is the same for every run.
  """
  if val_split < 0 or val_split >= num_train:
    raise ValueError(
        f'val_split={val_split} must be in [0, {num_train}) (the train split has '
        f'{num_train} examples); set val_split=0 for no validation split')
  if val_split == 0:
    return np.arange(num_train), np.arange(0)
  permutation = np.random.default_rng(VAL_SPLIT_KEY).permutation(num_train)
  return np.sort(permutation[:-val_split]), np.sort(permutation[-val_split:])


def split_validation(dataset: Dataset, val_split: int) -> Dataset:
  """Moves `val_split` training examples (validation_indices) to val; both keep their order."""
  train_idx, val_idx = validation_indices(len(dataset.train), val_split)
  if val_split == 0:
    return dataset
  return dataclasses.replace(
      dataset, train=_take(dataset.train, train_idx), val=_take(dataset.train, val_idx))


def _take(split: Split, indices: np.ndarray) -> Split:
  return Split(images=split.images[indices], labels=split.labels[indices])


def keep_rows(dataset: Dataset, rows: Rows | None) -> Dataset:
  """Every split cut to this process's examples rows(len(split)); all of them if rows is None."""
  if rows is None:
    return dataset

  def cut(split: Split | None) -> Split | None:
    if split is None:
      return None
    start, stop = _clip(rows, len(split))
    return Split(images=split.images[start:stop].copy(), labels=split.labels[start:stop].copy(),
                 start=start, size=len(split))
  return dataclasses.replace(
      dataset, train=cut(dataset.train), val=cut(dataset.val), test=cut(dataset.test))


def _clip(rows: Rows | None, size: int) -> tuple[int, int]:
  """rows(size) within [0, size]; the whole range without rows."""
  if rows is None:
    return 0, size
  start, stop = rows(size)
  return min(start, size), min(stop, size)


# --- tensorflow-datasets --------------------------------------------------------------


def _load_tfds(name: str, data_dir: str, manual_dir: str) -> Dataset:
  """Prepares `name` with tfds and reads both splits whole.

  Offline copies follow tfds' documented manual download: put the official
  archive (e.g. cifar-10-binary.tar.gz from www.cs.toronto.edu/~kriz) in
  `manual_dir`; it is passed as `tfds.download.DownloadConfig(manual_dir=...)`
  and tfds uses it instead of downloading (after checking its checksum).
  """
  # Imported here: image folders and synthetic data need neither tfds nor TensorFlow.
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  # pylint: disable-next=import-outside-toplevel
  from tensorflow_datasets.core.download.download_manager import NonMatchingChecksumError
  builder = tfds.builder(name, data_dir=data_dir or None)
  if manual_dir and not builder.is_prepared():
    _check_manual_dir(builder, manual_dir)
  elif not builder.is_prepared():
    _check_download_hosts(builder)
  download_config = tfds.download.DownloadConfig(manual_dir=manual_dir or None)
  try:
    builder.download_and_prepare(download_config=download_config)
  except NonMatchingChecksumError as error:
    raise ValueError(
        f'{name}: an archive in tfds_manual_dir={manual_dir!r} is not the official one '
        '(wrong checksum); download it again') from error
  label = builder.info.features['label']
  return Dataset(
      train=_read_tfds_split(builder, 'train'),
      val=None,
      test=_read_tfds_split(builder, 'test'),
      num_classes=label.num_classes,
      class_names=tuple(label.names),
  )


def _check_manual_dir(builder, manual_dir: str) -> None:
  """One-line error when `manual_dir` lacks the archives tfds will look for there."""
  if not os.path.isdir(manual_dir):
    raise ValueError(f'tfds_manual_dir={manual_dir!r} is not a directory')
  for url, info in (builder.url_infos or {}).items():
    if info.filename and not os.path.exists(os.path.join(manual_dir, info.filename)):
      raise ValueError(
          f'tfds_manual_dir={manual_dir!r} has no {info.filename}; put the official '
          f'archive from {url} there')


def _check_download_hosts(builder) -> None:
  """One-line error when tfds would download from a host this machine cannot reach (tfds
  itself retries for minutes before it gives up). Downloads through a proxy are not checked."""
  for url, info in (builder.url_infos or {}).items():
    parsed = urllib.parse.urlparse(url)
    host, port = parsed.hostname, parsed.port or DEFAULT_PORTS.get(parsed.scheme)
    if not host or not port or _proxied(parsed.scheme, host):
      continue
    if not reachable(host, port):
      raise ValueError(
          f'{builder.name} must be downloaded from {host}, which is unreachable: put the '
          f'official archive {info.filename or url} (from {url}) in a folder and set '
          'tfds_manual_dir to it, or use dataset=image_folder')


def _proxied(scheme: str, host: str) -> bool:
  """True when the environment sends requests for `host` through a proxy (as tfds' do)."""
  proxies = urllib.request.getproxies()
  return bool(proxies.get(scheme) or proxies.get('all')) and not urllib.request.proxy_bypass(host)


def reachable(host: str, port: int) -> bool:
  """True when a TCP connection to host:port opens (DOWNLOAD_CHECK_SECONDS per address tried,
  after the name lookup)."""
  try:
    socket.create_connection((host, port), timeout=DOWNLOAD_CHECK_SECONDS).close()
  except OSError:
    return False
  return True


def _read_tfds_split(builder, split: str) -> Split:
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  batches = list(tfds.as_numpy(builder.as_dataset(split=split, batch_size=TFDS_READ_BATCH)))
  return Split(
      images=np.concatenate([b['image'] for b in batches]).astype(np.uint8),
      labels=np.concatenate([b['label'] for b in batches]).astype(np.int32),
  )


# --- image folders ------------------------------------------------------------------


def load_image_folder(
    data_dir: str,
    num_workers: int | None = None,
    val_split: int = 0,
    rows: Rows | None = None,
    subsets: Subsets = Subsets(),
) -> Dataset:
  """Reads the image folder data_dir (resnet_jax.data.folders: train/ and test/ or val/) into
  memory.

  Grey-scale, palette and RGBA images are converted to RGB (alpha dropped). All images must
  share one size. Files are decoded by a thread pool of `num_workers` threads (default: the
  cores this process may use; Pillow releases the GIL while decoding). `val_split` training
  examples become the validation split (validation_indices), and train and test keep only their
  `subsets` (subset_indices); with `rows` only this process's examples of each split are decoded.
  """
  try:
    listing = folders.scan(data_dir)
  except ValueError as error:
    raise ValueError(f'image_folder: {error}') from None
  files = {'train': listing.train, 'test': listing.test}
  train_idx, val_idx = validation_indices(len(listing.train.paths), val_split)
  train_idx = train_idx[subset_indices(len(train_idx), subsets.train, 'train_subset')]
  test_idx = subset_indices(len(listing.test.paths), subsets.test, 'test_subset')
  first = listing.train.paths[0]
  size = _image_size(first)

  def decode(split: str, indices: np.ndarray) -> Split:
    start, stop = _clip(rows, len(indices))
    kept = indices[start:stop]
    images = _decode([files[split].paths[i] for i in kept], first, size, num_workers)
    return Split(images=images, labels=files[split].labels[kept], start=start, size=len(indices))
  return Dataset(
      train=decode('train', train_idx),
      val=decode('train', val_idx) if val_split else None,
      test=decode('test', test_idx),
      num_classes=len(listing.class_names), class_names=listing.class_names)


def _decode(
    paths: Sequence[pathlib.Path],
    first: pathlib.Path,
    size: tuple[int, int],
    num_workers: int | None,
) -> np.ndarray:
  """Decodes the images (all of `size`, like `first`) in parallel into uint8 [N, H, W, 3]."""
  images = np.empty((len(paths), size[1], size[0], 3), np.uint8)
  chunks = range(0, len(paths), DECODE_CHUNK)
  with concurrent.futures.ThreadPoolExecutor(num_workers or _usable_cores()) as pool:
    futures = [pool.submit(_decode_chunk, paths, images, start, first) for start in chunks]
    try:
      for future in futures:  # in file order, so the first bad file is reported
        future.result()
    finally:
      for future in futures:
        future.cancel()
  return images


def _usable_cores() -> int:
  """The cores this process may run on (a study runner may pin it to some), else all of them."""
  if hasattr(os, 'sched_getaffinity'):
    return len(os.sched_getaffinity(0))
  return os.cpu_count() or 1


def _image_size(path: pathlib.Path) -> tuple[int, int]:
  try:
    with Image.open(path) as image:
      return image.size
  except (OSError, ValueError) as error:
    raise ValueError(f'image_folder: cannot read image {path}: {one_line(error)}') from None


def _decode_chunk(
    paths: Sequence[pathlib.Path], images: np.ndarray, start: int, first: pathlib.Path) -> None:
  """Decodes paths[start:start + DECODE_CHUNK] as RGB into the matching rows of images."""
  height, width = images.shape[1:3]
  for i in range(start, min(start + DECODE_CHUNK, len(paths))):
    try:
      with Image.open(paths[i]) as image:
        if image.size != (width, height):
          raise ValueError(
              f'image_folder: {paths[i]} is {image.size[0]}x{image.size[1]} but the first '
              f'image {first} is {width}x{height}; resize all images to one size')
        images[i] = np.asarray(image if image.mode == 'RGB' else image.convert('RGB'))
    except OSError as error:
      raise ValueError(f'image_folder: cannot read image {paths[i]}: {one_line(error)}') from None


# --- synthetic ----------------------------------------------------------------------


def synthetic_dataset(num_examples: int, image_size: int, num_classes: int) -> Dataset:
  """Deterministic random uint8 images and labels for benchmarks and smoke runs.

  Train has `num_examples` examples, test num_examples // 5 (at least 1, the
  CIFAR train:test ratio); the data depend on nothing but the arguments.
  """
  if num_examples < 1 or image_size < 1 or num_classes < 2:
    raise ValueError(
        f'synthetic data needs synthetic_size >= 1, image_size >= 1 and num_classes >= 2; got '
        f'{num_examples}, {image_size}, {num_classes}')
  rng = np.random.default_rng(SYNTHETIC_KEY)

  def split(n: int) -> Split:
    return Split(
        images=rng.integers(0, 256, (n, image_size, image_size, 3), dtype=np.uint8),
        labels=rng.integers(0, num_classes, n, dtype=np.int32))

  train = split(num_examples)
  test = split(max(1, num_examples // 5))
  return Dataset(train=train, val=None, test=test, num_classes=num_classes,
                 class_names=tuple(str(i) for i in range(num_classes)))
