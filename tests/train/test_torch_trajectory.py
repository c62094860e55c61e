"""Our training is PyTorch's, step by step along a 20-step trajectory (He et al. 2015 sec. 4.2).

A PyTorch CIFAR ResNet and plain net (benchmarks/torch_peer.py, the common option-A layout) give
the initial weights, converted with from_torch. Our loop's jitted train step trains from them for
STEPS steps on augmented float batches. Every step is then checked against torch.optim.SGD's step
from the same state: PyTorch starts from our parameters, running statistics and momentum buffers
of that step, takes the same batch with lr 0.1, momentum 0.9, the L2 term 1e-4 * w added to every
gradient before the momentum and BN in train mode (momentum 0.1), and its loss, parameters and
running statistics after the step are compared with ours.

- float32 (our recipe as it runs): loss, parameters and running statistics agree to 1e-3
  relative at every step (measured: 1e-7, 7e-5 and 1.4e-4).
- float64 (both sides): the loss and the parameter update agree to 1e-9 (measured: 1e-16 and
  1e-14), so the rule is the same. The running variance differs by 1.4e-4: flax averages the
  batch variance, PyTorch the unbiased n/(n-1) estimate; evaluation alone sees it.
- The controls change one thing on the PyTorch side, a 10% larger weight decay or the BN
  momentum (flax's default 0.99 instead of PyTorch's 0.1), and break the float64 agreement.

Free trajectories are not compared over 20 steps: in these first steps at lr 0.1 any rounding
difference grows about 3x per step, so PyTorch's own float32 and float64 runs differ by 1e-3 in
loss by step 6 (and ours and PyTorch's in float64 by 5e-6 for resnet20, 3e-3 for plain20 after
20 steps, from rounding alone).
"""

import functools

import jax
import numpy as np
import optax
import pytest
import torch
import torch.nn.functional as F

from benchmarks import torch_peer
from configs import cifar10
from resnet_jax import models, parallel
from resnet_jax.data.augment import augment
from resnet_jax.interop import pytorch as interop
from resnet_jax.train import inputs, steps
from resnet_jax.train import state as state_lib
from tests.tiny import optimizer_of

STEPS = 20
BATCH = 16
RTOL = 1e-3
EXACT = 1e-9  # float64
STATISTICS = ('running_mean', 'running_var')
RECIPE = dict(weight_decay=1e-4, bn_momentum=0.1)
# PyTorch's intra-op threads and XLA's share the cores: with more than one, torch's float64
# steps run about 10x slower here (they wait on each other), with the same numbers.
torch.set_num_threads(1)


@functools.cache
def augmented_batches() -> tuple[tuple[np.ndarray, np.ndarray], ...]:
  """STEPS batches of random uint8 images, padded, cropped and flipped by our augmentation and
  standardised: float32 NHWC images and int32 labels."""
  rng = np.random.default_rng(1)
  batches = []
  for step in range(STEPS):
    images = rng.integers(0, 256, (BATCH, 32, 32, 3), dtype=np.uint8)
    crops = np.asarray(augment(jax.random.key(step), images), np.float32)
    batches.append(((crops / 255 - 0.5) / 0.25, rng.integers(0, 10, BATCH).astype(np.int32)))
  return tuple(batches)


@functools.cache
def initial_weights(name: str) -> dict:
  torch.manual_seed(0)
  return {key: value.numpy() for key, value in torch_peer.build_model(name).state_dict().items()}


def relative_error(ours, theirs) -> float:
  ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
  return float(np.linalg.norm(ours - theirs) / np.linalg.norm(theirs))


def as_torch(name: str, state: state_lib.TrainState) -> tuple[dict, dict]:
  """Our state as PyTorch's state_dict and its momentum buffers (optax.trace's `trace`)."""
  trace = next(s.trace for s in state.opt_state if isinstance(s, optax.TraceState))
  dtype = jax.tree.leaves(state.params)[0].dtype
  state_dict = interop.to_torch({'params': state.params, 'batch_stats': state.batch_stats}, name,
                                dtype)
  buffers = interop.to_torch({'params': trace, 'batch_stats': state.batch_stats}, name, dtype)
  return state_dict, {key: buffers[key] for key in state_dict if is_parameter(key)}


def is_parameter(key: str) -> bool:
  """True for a trained tensor of a state_dict, False for BN's running statistics and counter."""
  return not key.endswith((*STATISTICS, 'num_batches_tracked'))


@functools.cache
def our_trajectory(name: str, dtype: type = np.float32) -> tuple[tuple, tuple, tuple]:
  """Our loop's train step for STEPS steps from the initial weights, computing in `dtype`: the
  losses, and the state_dicts and momentum buffers before every step and after the last."""
  config = cifar10.get_config(name)
  mesh = parallel.make_mesh()
  losses, states, buffers = [], [], []
  with jax.enable_x64(dtype == np.float64):  # the schedule's rates too
    optimizer = optimizer_of(config)
    variables = jax.tree.map(lambda x: np.asarray(x, dtype),
                             interop.from_torch(initial_weights(name), name))
    state = jax.device_put(state_lib.TrainState.create(
        apply_fn=models.get_model(name, dtype=dtype).apply, params=variables['params'],
        batch_stats=variables['batch_stats'], tx=optimizer.tx), parallel.replicated(mesh))
    train_step = steps.compile_train_step(mesh, prepare=inputs.prepare_streamed,
                                          learning_rate=optimizer.learning_rate, seed=config.seed)
    for images, labels in augmented_batches():
      state_dict, momentum = as_torch(name, jax.device_get(state))
      states.append(state_dict)
      buffers.append(momentum)
      batch = parallel.shard_global_batch({'image': images.astype(dtype), 'label': labels},
                                          parallel.batch_sharding(mesh))
      state, metrics = train_step(state, {}, batch)
      sums = jax.device_get(metrics['sums'])
      losses.append(float(sums['loss'] / sums['examples']))
    states.append(as_torch(name, jax.device_get(state))[0])
  return tuple(losses), tuple(states), tuple(buffers)


class TorchTrainer:
  """torch.optim.SGD on the PyTorch network in float64, from a state_dict and momentum buffers."""

  def __init__(self, name: str, state_dict: dict, weight_decay: float, bn_momentum: float):
    self.model = torch_peer.load_weights(torch_peer.build_model(name).double(), state_dict)
    for module in self.model.modules():
      if isinstance(module, torch.nn.BatchNorm2d):
        module.momentum = bn_momentum
    self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9,
                                     weight_decay=weight_decay)

  def set_momentum(self, buffers: dict) -> None:
    for key, parameter in self.model.named_parameters():
      self.optimizer.state[parameter]['momentum_buffer'] = torch.from_numpy(buffers[key]).double()

  def step(self, images: np.ndarray, labels: np.ndarray) -> float:
    self.model.train()
    x = torch.from_numpy(images).double().permute(0, 3, 1, 2)
    loss = F.cross_entropy(self.model(x), torch.from_numpy(labels).long())
    self.optimizer.zero_grad()
    loss.backward()
    self.optimizer.step()
    return loss.item()

  def state_dict(self) -> dict:
    return {key: value.detach().numpy() for key, value in self.model.state_dict().items()}


def per_step_disagreement(name: str, dtype: type = np.float32, **recipe) -> dict:
  """Every step of our trajectory (computing in `dtype`) against PyTorch's step from the same
  state: the worst relative difference of the loss, of the parameters (all tensors) after the
  step, of their update and of a running statistic after the step."""
  losses, states, buffers = our_trajectory(name, dtype)
  worst = dict.fromkeys(('loss', 'params', 'update', 'statistics'), 0.0)
  for step, batch in enumerate(augmented_batches()):
    torch_side = TorchTrainer(name, states[step], **{**RECIPE, **recipe})
    torch_side.set_momentum(buffers[step])
    loss = torch_side.step(*batch)
    start, ours, theirs = states[step], states[step + 1], torch_side.state_dict()
    params = [key for key in theirs if is_parameter(key)]

    def joined(state_dict: dict, origin: dict | None = None):
      return np.concatenate([(state_dict[k] - (0 if origin is None else origin[k])).ravel()
                             for k in params])

    found = {'loss': abs(losses[step] - loss) / loss,
             'params': relative_error(joined(ours), joined(theirs)),
             'update': relative_error(joined(ours, start), joined(theirs, start)),
             'statistics': max(relative_error(ours[k], theirs[k]) for k in theirs
                               if k.endswith(STATISTICS))}
    worst = {key: max(worst[key], found[key]) for key in worst}
  return worst


@pytest.mark.parametrize('name', ['resnet20', 'plain20'])
def test_every_float32_step_is_pytorchs_step(name):
  worst = per_step_disagreement(name)
  assert max(worst['loss'], worst['params'], worst['statistics']) < RTOL, worst
  losses, states, _ = our_trajectory(name)
  assert len(losses) == STEPS
  assert relative_error(states[-1]['linear.weight'], states[0]['linear.weight']) > 0.1  # trained


@pytest.mark.parametrize('name', ['resnet20', 'plain20'])
def test_every_float64_step_is_pytorchs_step(name):
  worst = per_step_disagreement(name, np.float64)
  assert max(worst['loss'], worst['update']) < EXACT, worst
  assert worst['statistics'] < RTOL, worst


@pytest.mark.parametrize('change, broken', [
    (dict(weight_decay=1.1e-4), 'update'),  # 10% more
    (dict(bn_momentum=0.01), 'statistics'),
])
def test_the_comparison_fails_on_another_recipe(change, broken):
  assert per_step_disagreement('resnet20', np.float64, **change)[broken] > 10 * RTOL
