"""The data objects the loop trains on: in-memory (CIFAR-sized) and streamed (ImageNet-sized),
both of the loop's seam, Data."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from resnet_jax import parallel
from resnet_jax import config as config_lib
from resnet_jax.data import order, sources
from resnet_jax.data.augment import augment, given_stats, normalize, pixel_stats
from resnet_jax.errors import ConfigError
from resnet_jax.train import steps


@runtime_checkable
class Data(Protocol):
  """What the loop asks of a data set, the seam for new sources. Batches are pytrees of global
  arrays sharded with parallel.batch_sharding."""

  num_classes: int
  class_names: tuple[str, ...]  # label order
  image_shape: tuple[int, int, int]  # (H, W, C)
  eval_splits: tuple[str, ...]  # config.Data.eval_splits
  prepare: steps.Prepare  # used inside the jitted steps (static)

  def arrays(self, split: str) -> Any:
    """The pytree of device arrays passed to every step of that split ({} if none)."""

  def train_batch(self, step: int) -> Any:
    """The global batch of steps step .. step + K - 1 (K = steps_per_call): leaves [B, ...] for
    K = 1, [K, B, ...] otherwise; called for consecutive steps from the restored step on."""

  def eval_batches(self, split: str) -> Iterable[Any]:
    """Global batches covering the split once, each with a bool 'mask' [B] of real examples."""


def prepare_in_memory(arrays, batch, rng, train: bool, *, augment_images: bool = True):
  """InMemoryData's batches: `arrays` holds the split's uint8 images and labels and the
  normalisation statistics; batch['index'] (int32 [B]) is gathered, augmented (train:
  pad-crop-flip, He 2015 sec. 4.2) and normalised inside the jit."""
  images = arrays['images'][batch['index']]
  labels = arrays['labels'][batch['index']]
  if train and augment_images:
    images = augment(rng, images)
  images = normalize(images.astype(jnp.float32), arrays['mean'], arrays['std'])
  return images, labels


class InMemoryData:
  """Every split on the devices as uint8; batches are index vectors into it.

  With one process each split is replicated on every device. With several, each
  process has loaded only its rows (sources.load_dataset with parallel.process_rows)
  and a split is one array sharded over 'data' along examples
  (parallel.shard_examples); the steps gather batches by global index either way.
  """

  def __init__(self, dataset: sources.Dataset, data: config_lib.Data, seed: int,
               steps_per_call: int, mesh: Mesh):
    if len(dataset.train) < data.batch_size:
      raise ValueError(f'batch_size={data.batch_size} exceeds the {len(dataset.train)} '
                       'training examples; lower batch_size')
    mean, std = (given_stats(data) if data.normalization == 'given' else
                 _pixel_stats(dataset.train, data.normalization))
    stats = parallel.replicate({'mean': mean, 'std': std}, mesh)
    splits = {'train': dataset.train, 'val': dataset.val, 'test': dataset.test}
    self._splits = {name: split for name, split in splits.items() if split is not None}

    def place(split: sources.Split):
      examples = {'images': split.images, 'labels': split.labels}
      if jax.process_count() == 1:
        return parallel.replicate(examples, mesh)
      return parallel.shard_examples(examples, len(split), mesh)
    self._arrays = {name: {**place(s), **stats} for name, s in self._splits.items()}
    self.num_classes, self.class_names = dataset.num_classes, tuple(dataset.class_names)
    self.image_shape = tuple(dataset.train.images.shape[1:])
    self.eval_splits = data.eval_splits
    self.prepare = functools.partial(prepare_in_memory, augment_images=data.augment)
    self._seed, self._batch_size = seed, data.batch_size
    self._eval_batch_size, self._steps_per_call = data.eval_batch_size, steps_per_call
    self._train_sharding = parallel.batch_sharding(mesh, steps_per_call > 1)
    self._eval_sharding = parallel.batch_sharding(mesh)

  def arrays(self, split: str):
    return self._arrays[split]

  def train_batch(self, step: int):
    index = order.train_batch_indices_many(
        self._seed, step, self._steps_per_call, len(self._splits['train']), self._batch_size)
    if self._steps_per_call == 1:
      index = index[0]
    return parallel.shard_global_batch({'index': index}, self._train_sharding)

  def eval_batches(self, split: str) -> Iterator:
    for index, mask in order.eval_batches(len(self._splits[split]), self._eval_batch_size):
      yield parallel.shard_global_batch({'index': index, 'mask': mask}, self._eval_sharding)


def prepare_streamed(arrays, batch, rng, train: bool):
  """Streamed batches arrive augmented and normalised: {'image', 'label'[, 'mask']}."""
  del arrays, rng, train
  return batch['image'], batch['label']


class StreamedData:
  """A streaming pipeline (resnet_jax.data.streaming) behind the loop's seam.

  Per-process batches, already augmented and normalised by tf.data, are assembled into
  global arrays sharded over 'data'; K = steps_per_call consecutive batches are stacked
  on a leading axis for the fused multi-step call.
  """

  def __init__(self, stream, steps_per_call: int, mesh: Mesh):
    self._stream = stream
    self.num_classes, self.class_names = stream.num_classes, tuple(stream.class_names)
    self.image_shape = (stream.image_size, stream.image_size, 3)
    self.eval_splits = tuple(stream.eval_splits)
    self.prepare = prepare_streamed
    self._steps_per_call = steps_per_call
    self._train_sharding = parallel.batch_sharding(mesh, steps_per_call > 1)
    self._eval_sharding = parallel.batch_sharding(mesh)
    self._batches, self._next_step = iter(()), None

  def arrays(self, split: str) -> dict:
    del split
    return {}

  def train_batch(self, step: int):
    if step != self._next_step:
      self._batches = self._stream.train_iter(step)
    batches = [next(self._batches) for _ in range(self._steps_per_call)]
    self._next_step = step + self._steps_per_call
    batch = batches[0] if self._steps_per_call == 1 else jax.tree.map(
        lambda *leaves: np.stack(leaves), *batches)
    return parallel.shard_local_batch(batch, self._train_sharding)

  def eval_batches(self, split: str) -> Iterator:
    for batch in self._stream.eval_iter(split):
      yield parallel.shard_local_batch(batch, self._eval_sharding)


def _pixel_stats(train: sources.Split, mode: str) -> tuple[np.ndarray, np.ndarray]:
  """pixel_stats of the whole training split, also when each process holds only its rows.

  Several processes combine their own statistics weighted by their number of rows:
  the mean directly, the per-channel std through the second moment std^2 + mean^2
  ('per_pixel_mean' keeps std 1).
  """
  if jax.process_count() == 1:
    return pixel_stats(train.images, mode)
  count = len(train.images)  # this process's rows; a process without any gets weight 0
  images = train.images if count else np.zeros((1, *train.images.shape[1:]), np.uint8)
  mean, std = pixel_stats(images, mode)
  every = parallel.process_allgather({'mean': mean, 'std': std, 'count': np.int32(count)})
  weights = (every['count'] / len(train)).reshape(-1, *([1] * mean.ndim))
  global_mean = np.sum(weights * every['mean'], axis=0)
  if mode != 'per_channel':
    return global_mean.astype(np.float32), std
  second = np.sum(weights * (np.square(every['std'].astype(np.float64)) + np.square(every['mean'])),
                  axis=0)
  global_std = np.sqrt(np.maximum(second - np.square(global_mean), 0.0))
  return global_mean.astype(np.float32), global_std.astype(np.float32)


def load_data(run: config_lib.Run, mesh: Mesh) -> Data:
  """The data object of run.data and run.pipeline (seeded with run.loop.seed, in batches of
  run.loop.steps_per_call steps); data errors become ConfigError (nothing written yet).

  With several processes each loads its own rows of in-memory data, and all of them
  fail together when one does (so none waits for the others forever).
  """
  error = None
  try:
    data = _load_data(run, mesh)
  except ValueError as caught:
    error = caught
  failed = parallel.process_allgather(np.int32(error is not None))
  if error is not None:
    raise ConfigError(str(error)) from None
  if failed.any():
    raise ConfigError(f'loading the data failed on process(es) {np.flatnonzero(failed).tolist()}; '
                      'see their error')
  return data


def _load_data(run: config_lib.Run, mesh: Mesh) -> Data:
  seed, steps_per_call = run.loop.seed, run.loop.steps_per_call
  if isinstance(run.pipeline, config_lib.Streaming):
    from resnet_jax.data import streaming  # pylint: disable=import-outside-toplevel
    stream = streaming.load_streaming(run.data, run.pipeline, seed, run.model.half_precision)
    return StreamedData(stream, steps_per_call, mesh)
  rows = None if jax.process_count() == 1 else functools.partial(parallel.process_rows, mesh=mesh)
  return InMemoryData(sources.load_dataset(run.data, run.pipeline, rows), run.data, seed,
                      steps_per_call, mesh)
