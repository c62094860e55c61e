"""Example order: a pure function of (seed, epoch); eval batches cover every example once."""

import numpy as np
import pytest

from resnet_jax.data import order


def test_epoch_permutation_is_a_permutation_fixed_by_seed_and_epoch():
  first = order.epoch_permutation(seed=3, epoch=1, n=1000)
  assert first.dtype == np.int32
  np.testing.assert_array_equal(np.sort(first), np.arange(1000))
  np.random.seed(123)  # the global numpy state must not matter
  np.testing.assert_array_equal(order.epoch_permutation(3, 1, 1000), first)
  assert not np.array_equal(order.epoch_permutation(3, 2, 1000), first)
  assert not np.array_equal(order.epoch_permutation(4, 1, 1000), first)


def test_train_batch_indices_slice_the_epoch_permutation_and_drop_the_remainder():
  n, batch_size = 103, 10  # 10 steps per epoch, 3 examples dropped each epoch
  for epoch in range(3):
    permutation = order.epoch_permutation(7, epoch, n)
    steps = [order.train_batch_indices(7, epoch * 10 + i, n, batch_size) for i in range(10)]
    np.testing.assert_array_equal(np.concatenate(steps), permutation[:100])
    assert all(s.dtype == np.int32 and s.shape == (batch_size,) for s in steps)
  np.testing.assert_array_equal(
      order.train_batch_indices(7, 10, n, batch_size), order.epoch_permutation(7, 1, n)[:10])


def test_train_batch_indices_do_not_depend_on_call_history():
  """A resumed run asks for step 25 first; it must see what an uninterrupted run sees."""
  sequential = [order.train_batch_indices(5, s, 50, 8) for s in range(40)]
  for step in (25, 3, 39, 0, 25):
    np.testing.assert_array_equal(order.train_batch_indices(5, step, 50, 8), sequential[step])


def test_many_steps_equal_single_steps_across_epoch_boundaries():
  n, batch_size = 37, 5  # 7 steps per epoch
  many = order.train_batch_indices_many(11, 4, 20, n, batch_size)
  assert many.shape == (20, batch_size) and many.dtype == np.int32
  single = np.stack([order.train_batch_indices(11, s, n, batch_size) for s in range(4, 24)])
  np.testing.assert_array_equal(many, single)
  assert order.train_batch_indices_many(11, 4, 0, n, batch_size).shape == (0, batch_size)


@pytest.mark.parametrize('n,batch_size', [(10, 3), (9, 3), (1, 4), (5, 8), (0, 2)])
def test_eval_batches_cover_every_example_once_with_masks(n, batch_size):
  batches = list(order.eval_batches(n, batch_size))
  assert len(batches) == -(-n // batch_size)
  for indices, mask in batches:
    assert indices.shape == mask.shape == (batch_size,)
    assert indices.dtype == np.int32 and mask.dtype == bool
    assert np.all(indices[~mask] == 0)
  covered = np.concatenate([i[m] for i, m in batches]) if batches else np.array([], np.int32)
  np.testing.assert_array_equal(covered, np.arange(n))
  assert sum(int((~m).sum()) for _, m in batches) == (-n) % batch_size


@pytest.mark.parametrize('call', [
    lambda: order.train_batch_indices(0, 0, n=4, batch_size=5),
    lambda: order.train_batch_indices(0, 0, n=4, batch_size=0),
    lambda: order.train_batch_indices(-1, 0, n=4, batch_size=2),
    lambda: order.train_batch_indices_many(0, -1, 2, n=4, batch_size=2),
    lambda: order.epoch_permutation(0, -1, 4),
    lambda: list(order.eval_batches(4, 0)),
])
def test_bad_arguments_raise_one_line_errors(call):
  with pytest.raises(ValueError) as error:
    call()
  assert '\n' not in str(error.value)
