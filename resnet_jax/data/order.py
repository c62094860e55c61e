"""The order of training examples as a pure function of (seed, epoch), and eval batches.

Batch indices are computed on the host with numpy and sent to the device, so a
run resumed at step s sees exactly the batches an uninterrupted run sees from s
on. Each epoch is a fresh permutation of the training set; its last
n % batch_size examples are dropped, so every train batch is full (as in
flax/examples/imagenet). Evaluation never drops examples: the last batch is
padded and masked.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import numpy as np


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
  """The order of the n training examples in `epoch`: int32 [n], seeded with (seed, epoch)."""
  if seed < 0 or epoch < 0 or n < 0:
    raise ValueError(f'seed={seed}, epoch={epoch} and n={n} must be >= 0')
  return np.random.default_rng((seed, epoch)).permutation(n).astype(np.int32)


def train_batch_indices(seed: int, step: int, n: int, batch_size: int) -> np.ndarray:
  """Example indices int32 [batch_size] of train step `step` (counted from 0 over all epochs).

  epoch = step // (n // batch_size); the step takes the matching slice of that
  epoch's permutation, and the remainder of each epoch is dropped.
  """
  return train_batch_indices_many(seed, step, 1, n, batch_size)[0]


def train_batch_indices_many(
    seed: int, start_step: int, num_steps: int, n: int, batch_size: int) -> np.ndarray:
  """Indices int32 [num_steps, batch_size] of steps start_step .. start_step + num_steps - 1.

  Row i equals train_batch_indices(seed, start_step + i, n, batch_size); used
  when several train steps are fused into one compiled call.
  """
  if start_step < 0 or num_steps < 0:
    raise ValueError(f'start_step={start_step} and num_steps={num_steps} must be >= 0')
  steps_per_epoch = _steps_per_epoch(n, batch_size)
  epochs, batches = np.divmod(np.arange(start_step, start_step + num_steps), steps_per_epoch)
  out = np.empty((num_steps, batch_size), np.int32)
  for epoch in np.unique(epochs):
    rows = epochs == epoch
    out[rows] = _epoch_batches(seed, int(epoch), n, batch_size)[batches[rows]]
  return out


def eval_batches(n: int, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Yields (indices int32 [batch_size], mask bool [batch_size]) covering range(n) once.

  Examples come in order; the last batch is padded with index 0 and mask False,
  so the metrics of the masked positions must be ignored.
  """
  if n < 0 or batch_size < 1:
    raise ValueError(f'eval_batches needs n >= 0 and batch_size >= 1, got n={n}, '
                     f'batch_size={batch_size}')
  for start in range(0, n, batch_size):
    indices = np.arange(start, start + batch_size, dtype=np.int32)
    mask = indices < n
    yield np.where(mask, indices, 0).astype(np.int32), mask


def _steps_per_epoch(n: int, batch_size: int) -> int:
  if batch_size < 1 or n < batch_size:
    raise ValueError(
        f'batch_size={batch_size} must be in [1, {n}] (the training set has {n} examples)')
  return n // batch_size


@functools.lru_cache(maxsize=4)
def _epoch_batches(seed: int, epoch: int, n: int, batch_size: int) -> np.ndarray:
  """Read-only int32 [n // batch_size, batch_size]: the epoch's permutation, remainder dropped.

  Cached, so calling train_batch_indices step by step costs one permutation per epoch.
  """
  steps_per_epoch = _steps_per_epoch(n, batch_size)
  kept = epoch_permutation(seed, epoch, n)[:steps_per_epoch * batch_size]
  batches = kept.reshape(steps_per_epoch, batch_size)
  batches.flags.writeable = False
  return batches
