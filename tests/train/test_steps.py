"""The jitted train and eval steps, with a tiny flax network defined here."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import cifar10
from resnet_jax import parallel
from resnet_jax.data import order
from resnet_jax.data.augment import pixel_stats
from resnet_jax.models import get_model
from resnet_jax.train import inputs, optim, steps
from resnet_jax.train.state import create_train_state
from tests.tiny import optimizer_of

NUM_CLASSES = 6  # labels use 0..3; 6 outputs allow a top-5 error
N, SIZE, BATCH = 64, 8, 16


class TinyNet(nn.Module):
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    x = nn.Conv(8, (3, 3), dtype=self.dtype, name='stem_conv')(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype,
                     name='stem_bn')(x)
    x = nn.relu(x).mean(axis=(1, 2))
    return nn.Dense(NUM_CLASSES, dtype=self.dtype, name='head')(x)


def separable_images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Class c in 0..2 lights channel c, class 3 is dark; plus noise."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 4, n).astype(np.int32)
  images = rng.integers(0, 60, (n, SIZE, SIZE, 3))
  for c in range(3):
    images[labels == c, :, :, c] += 180
  return images.astype(np.uint8), labels


@pytest.fixture(scope='module')
def mesh():
  return parallel.make_mesh()


@pytest.fixture(scope='module')
def arrays(mesh):
  images, labels = separable_images(N)
  mean, std = pixel_stats(images, 'per_channel')
  return parallel.replicate({'images': images, 'labels': labels, 'mean': mean, 'std': std}, mesh)


def make_optimizer(**overrides) -> optim.Optimizer:
  config = cifar10.get_config('resnet8')
  config.update(overrides)
  return optimizer_of(config)


@pytest.fixture(scope='module')
def resnet_state(mesh):
  """resnet8 (a stem and 3 blocks) in a fresh state; copy it before a step, which donates it."""
  return create_train_state(get_model('resnet8', NUM_CLASSES), make_optimizer().tx,
                            (SIZE, SIZE, 3), 0, mesh)


def make_state(mesh, optimizer, dtype=jnp.float32):
  return create_train_state(TinyNet(dtype=dtype), optimizer.tx, (SIZE, SIZE, 3), 0, mesh)


def index_batch(mesh, step: int, num_steps: int = 1):
  index = order.train_batch_indices_many(0, step, num_steps, N, BATCH)
  index = index if num_steps > 1 else index[0]
  return parallel.shard_global_batch({'index': index}, parallel.batch_sharding(mesh, num_steps > 1))


def compile_step(mesh, optimizer, **kwargs):
  return steps.compile_train_step(
      mesh, prepare=inputs.prepare_in_memory, learning_rate=optimizer.learning_rate, seed=0,
      **kwargs)


def assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def test_steps_per_call_equals_single_steps(mesh, arrays):
  """K = 3 fused steps (lax.scan) give the state and summed metrics of 3 single steps."""
  optimizer = make_optimizer(lr_boundaries=(1, 2))  # the rate changes inside the window
  single, fused = compile_step(mesh, optimizer), compile_step(mesh, optimizer, steps_per_call=3)
  state, total = make_state(mesh, optimizer), None
  for step in range(3):
    state, metrics = single(state, arrays, index_batch(mesh, step))
    total = metrics if total is None else steps.accumulate(total, metrics)
  fused_state, fused_metrics = fused(make_state(mesh, optimizer), arrays, index_batch(mesh, 0, 3))
  assert int(fused_state.step) == int(state.step) == 3
  assert_trees_close(fused_state, state)
  assert_trees_close(fused_metrics, total)
  np.testing.assert_allclose(float(fused_metrics['last']['learning_rate']), 0.001, rtol=1e-5)


def test_training_loss_falls_on_a_separable_problem(mesh, arrays):
  optimizer = make_optimizer(lr_boundaries=(), weight_decay=0.0)
  train_step = compile_step(mesh, optimizer)
  state, losses = make_state(mesh, optimizer), []
  for step in range(60):
    state, metrics = train_step(state, arrays, index_batch(mesh, step))
    losses.append(float(metrics['sums']['loss'] / metrics['sums']['examples']))
  assert np.mean(losses[:3]) > 1.2  # about log(6) at the start
  assert np.mean(losses[-5:]) < 0.3 * np.mean(losses[:3])


def test_reported_rate_and_grad_norms_match_the_update(mesh, arrays):
  """Plain SGD: |kernel change| = learning_rate * |kernel gradient| at every step."""
  optimizer = make_optimizer(momentum=0.0, weight_decay=0.0, lr_boundaries=(1, 2))
  train_step = compile_step(mesh, optimizer, log_grad_norms=True)
  state = make_state(mesh, optimizer)
  for step, rate in enumerate([0.1, 0.01, 0.001]):
    before = jax.device_get(state.params)
    state, metrics = train_step(state, arrays, index_batch(mesh, step))
    last = jax.device_get(metrics['last'])
    np.testing.assert_allclose(last['learning_rate'], rate, rtol=1e-5)
    assert set(last['grad_norms']) == {'stem_conv', 'head'}  # kernels only, no BN
    for name, norm in last['grad_norms'].items():
      change = np.linalg.norm(jax.device_get(state.params)[name]['kernel'] - before[name]['kernel'])
      np.testing.assert_allclose(change, rate * norm, rtol=1e-4)


def test_streamed_batches_take_the_same_step_as_in_memory_ones(mesh, arrays):
  """prepare_streamed (identity on normalised images) vs prepare_in_memory without augmentation."""
  optimizer = make_optimizer()
  in_memory = steps.compile_train_step(
      mesh, prepare=lambda a, b, r, t: inputs.prepare_in_memory(a, b, r, t, augment_images=False),
      learning_rate=optimizer.learning_rate, seed=0)
  streamed = steps.compile_train_step(
      mesh, prepare=inputs.prepare_streamed, learning_rate=optimizer.learning_rate, seed=0)
  index = order.train_batch_indices(0, 0, N, BATCH)
  images, labels = separable_images(N)
  mean, std = pixel_stats(images, 'per_channel')
  batch = {'image': ((images[index] / 255.0 - mean) / std).astype(np.float32),
           'label': labels[index]}
  a, metrics_a = in_memory(make_state(mesh, optimizer), arrays, index_batch(mesh, 0))
  b, metrics_b = streamed(make_state(mesh, optimizer), {},
                          parallel.shard_global_batch(batch, parallel.batch_sharding(mesh)))
  assert_trees_close(a, b)
  assert_trees_close(metrics_a, metrics_b)


def test_eval_step_masks_padding_and_matches_numpy(mesh, arrays):
  optimizer = make_optimizer()
  state = make_state(mesh, optimizer)
  eval_step = steps.compile_eval_step(mesh, prepare=inputs.prepare_in_memory, top5=True)
  n = 20  # two batches of 16, the second padded with 12 masked examples
  total = None
  for index, mask in order.eval_batches(n, BATCH):
    batch = parallel.shard_global_batch({'index': index, 'mask': mask},
                                        parallel.batch_sharding(mesh))
    sums = eval_step(state, arrays, batch)
    total = sums if total is None else steps.accumulate(total, sums)
  total = jax.device_get(total['sums'])

  images, labels = separable_images(N)
  mean, std = pixel_stats(images, 'per_channel')
  x = (images[:n] / 255.0 - mean) / std
  logits = np.asarray(TinyNet().apply(
      {'params': state.params, 'batch_stats': state.batch_stats}, jnp.asarray(x), train=False),
      np.float64)
  log_probs = logits - logits.max(1, keepdims=True)
  log_probs -= np.log(np.exp(log_probs).sum(1, keepdims=True))
  top5 = np.argsort(-logits, axis=1)[:, :5]
  assert total['examples'] == n
  np.testing.assert_allclose(total['loss'], -log_probs[np.arange(n), labels[:n]].sum(), rtol=1e-5)
  assert total['wrong'] == np.sum(logits.argmax(1) != labels[:n])
  assert total['wrong_top5'] == np.sum(~(top5 == labels[:n, None]).any(1))


def test_label_smoothing_cross_entropy():
  logits = jnp.asarray([[2.0, -1.0, 0.5], [0.0, 0.0, 3.0]])
  labels = jnp.asarray([0, 1])
  alpha = 0.1
  targets = np.eye(3)[[0, 1]] * (1 - alpha) + alpha / 3
  log_probs = np.asarray(jax.nn.log_softmax(logits))
  np.testing.assert_allclose(steps.cross_entropy(logits, labels, alpha),
                             -(targets * log_probs).sum(1), rtol=1e-6)
  np.testing.assert_allclose(steps.cross_entropy(logits, labels),
                             -log_probs[[0, 1], [0, 1]], rtol=1e-6)


def test_half_precision_computes_in_bfloat16_with_float32_params(mesh, arrays):
  optimizer = make_optimizer()
  train_step = compile_step(mesh, optimizer)
  full, full_metrics = train_step(make_state(mesh, optimizer), arrays, index_batch(mesh, 0))
  half, half_metrics = train_step(make_state(mesh, optimizer, jnp.bfloat16), arrays,
                                  index_batch(mesh, 0))
  assert {x.dtype for x in jax.tree.leaves(half.params)} == {jnp.dtype(jnp.float32)}
  loss = lambda m: float(m['sums']['loss'] / m['sums']['examples'])  # noqa: E731
  assert loss(half_metrics) != loss(full_metrics)  # really computed in bfloat16
  np.testing.assert_allclose(loss(half_metrics), loss(full_metrics), rtol=2e-2)


def test_stream_barriers_on_the_cpu_backend_alone(mesh):
  assert steps.platform(mesh) == 'cpu' and steps.uses_stream_barriers('cpu')
  assert not steps.uses_stream_barriers('gpu') and not steps.uses_stream_barriers('tpu')


def test_cpu_train_step_keeps_barriers_on_the_stream_and_takes_the_same_step(
    mesh, arrays, resnet_state, monkeypatch):
  """On the CPU: resnet8's 4 stream barriers and their 4 transposes, which survive XLA:CPU's
  compilation. Built as for a GPU, the same step has none (the checks can fail) and the same
  loss, parameters and BN statistics."""
  optimizer, batch, results = make_optimizer(), index_batch(mesh, 0), {}
  for backend in ('cpu', 'gpu'):
    monkeypatch.setattr(steps, 'platform', lambda mesh, backend=backend: backend)
    state = jax.tree.map(jnp.copy, resnet_state)
    lowered = compile_step(mesh, optimizer).lower(state, arrays, batch)
    compiled = lowered.compile()
    counts = (lowered.as_text().count('stablehlo.optimization_barrier'),
              compiled.as_text().count('opt-barrier'))
    results[backend] = counts, compiled(state, arrays, batch)
  assert results['cpu'][0] == (8, 8) and results['gpu'][0] == (0, 0)
  assert_trees_close(results['cpu'][1], results['gpu'][1], rtol=1e-6, atol=1e-7)


def test_eval_step_has_no_stream_barriers(mesh, arrays, resnet_state):
  batch = parallel.shard_global_batch({'index': np.arange(BATCH), 'mask': np.ones(BATCH, bool)},
                                      parallel.batch_sharding(mesh))
  lowered = steps.compile_eval_step(mesh, prepare=inputs.prepare_in_memory).lower(
      resnet_state, arrays, batch)
  assert 'optimization_barrier' not in lowered.as_text()
