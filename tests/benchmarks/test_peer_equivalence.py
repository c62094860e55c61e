"""The PyTorch peer computes our function, so the throughput race is fair.

Weights go from our model to the peer through resnet_jax.interop.pytorch.to_torch; in float32 the
eval-mode logits agree to a relative error below 1e-5 (resnet20 with option-A shortcuts, ResNet-50
v1.5 with projections and the max-pool stem), and our real jitted train step and the peer's step
give the same loss on the same batch, before and after one SGD update, and the same change of
every parameter over two steps (L2 term, momentum, learning rate).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax.traverse_util import flatten_dict, unflatten_dict

from benchmarks import torch_peer
from configs import cifar10
from resnet_jax import models, parallel
from resnet_jax.interop import pytorch as interop
from resnet_jax.train import inputs, steps
from resnet_jax.train import state as state_lib
from tests.tiny import optimizer_of

RTOL = 1e-5
# PyTorch's float32 CPU gradients of this batch are ~1e-3 (relative) off the float64 ones (ours
# ~1e-6; in float64 the two gradients agree to 1e-14), so the two-step updates differ by ~4e-3;
# a 10% different L2 term shows as 6e-2, no L2 term as 0.8.
UPDATE_RTOL = 1e-2


def relative_error(ours, theirs) -> float:
  ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
  return float(np.linalg.norm(ours - theirs) / np.linalg.norm(theirs))


def random_variables(name: str, seed: int) -> dict:
  """Random weights of our variable tree (shapes from jax.eval_shape; He-scaled kernels, BN scales,
  shifts and running statistics away from 1 and 0), drawn with numpy: XLA needs ~15 s to compile
  the threefry draws of ResNet-50's own initialiser on this CPU."""
  init = functools.partial(models.get_model(name).init, train=False)
  shapes = jax.eval_shape(init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  rng = np.random.default_rng(seed)
  draw = {'kernel': lambda s: rng.normal(0, np.sqrt(2 / np.prod(s[:-1])), s),
          'scale': lambda s: rng.uniform(0.5, 1.5, s), 'bias': lambda s: rng.normal(0, 0.1, s),
          'mean': lambda s: rng.normal(0, 0.1, s), 'var': lambda s: rng.uniform(0.5, 1.5, s)}
  flat = {key: draw[key.rsplit('/', 1)[-1]](leaf.shape).astype(np.float32)
          for key, leaf in flatten_dict(shapes, sep='/').items()}
  return unflatten_dict(flat, sep='/')


@pytest.mark.parametrize('name, size', [('resnet20', 32), ('resnet50_v1_5', 64)])
def test_same_logits_in_eval_mode(name, size):
  variables = random_variables(name, seed=1)
  peer = torch_peer.load_weights(torch_peer.build_model(name), interop.to_torch(variables, name))
  x = np.random.default_rng(2).normal(size=(2, size, size, 3)).astype(np.float32)
  ours = jax.jit(functools.partial(models.get_model(name).apply, train=False))(variables, x)
  with torch.no_grad():
    theirs = peer.eval()(torch.from_numpy(x).permute(0, 3, 1, 2))
  assert relative_error(ours, theirs.numpy()) < RTOL


def test_peer_refuses_models_it_lacks():
  with pytest.raises(ValueError, match='no PyTorch peer'):
    torch_peer.build_model('resnet20_b')


def our_loss(train_step, state, arrays, batch) -> tuple:
  state, metrics = train_step(state, arrays, batch)
  sums = jax.device_get(metrics['sums'])
  return state, float(sums['loss'] / sums['examples'])


def test_same_loss_before_and_after_one_train_step():
  """Our loop's train step (no augmentation) against the peer's, from the same weights."""
  name, batch_size = 'resnet20', 16
  config = cifar10.get_config(name)
  config.weight_decay = 0.05  # large, so that the L2 term shows in the update
  mesh = parallel.make_mesh()
  optimizer = optimizer_of(config)
  model = models.get_model(name)
  state = state_lib.create_train_state(model, optimizer.tx, (32, 32, 3), config.seed, mesh)
  rng = np.random.default_rng(3)
  host = {'images': rng.integers(0, 256, (batch_size, 32, 32, 3), dtype=np.uint8),
          'labels': rng.integers(0, 10, batch_size, dtype=np.int32),
          'mean': rng.uniform(0.4, 0.6, (32, 32, 3)).astype(np.float32),
          'std': np.full(3, 0.25, np.float32)}
  weights = interop.to_torch({'params': state.params, 'batch_stats': state.batch_stats}, name)
  peer = torch_peer.load_weights(torch_peer.build_model(name), weights)
  data = torch_peer.PeerData(
      torch.from_numpy(host['images']), torch.from_numpy(host['labels']).long(),
      torch.from_numpy(host['mean']), torch.from_numpy(host['std']))
  peer_step = torch_peer.make_train_step(peer, torch_peer.StepConfig(
      learning_rate=config.learning_rate, momentum=config.momentum,
      weight_decay=config.weight_decay, augment=False), data)
  train_step = steps.compile_train_step(
      mesh, prepare=functools.partial(inputs.prepare_in_memory, augment_images=False),
      learning_rate=optimizer.learning_rate, seed=config.seed)
  arrays = parallel.replicate(host, mesh)
  batch = parallel.shard_global_batch(
      {'index': np.arange(batch_size, dtype=np.int32)}, parallel.batch_sharding(mesh))
  index = torch.arange(batch_size)
  for _ in range(2):
    state, ours = our_loss(train_step, state, arrays, batch)
    theirs = float(peer_step(index)[0])
    assert ours == pytest.approx(theirs, rel=RTOL)
  updated = interop.to_torch({'params': state.params, 'batch_stats': state.batch_stats}, name)
  peer_weights = peer.state_dict()
  statistics = ('running_mean', 'running_var', 'num_batches_tracked')
  trained = [k for k in weights if not k.endswith(statistics)]
  ours_delta = np.concatenate([(updated[k] - weights[k]).ravel() for k in trained])
  peer_delta = np.concatenate([(peer_weights[k].numpy() - weights[k]).ravel() for k in trained])
  assert relative_error(ours_delta, peer_delta) < UPDATE_RTOL
