"""Schedules at and around every boundary, the plateau logic and the update rule of optim.py."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import cifar10
from resnet_jax.config import Optim, section
from resnet_jax.train import optim
from tests.tiny import optimizer_of


def config(**overrides) -> ml_collections.ConfigDict:
  base = cifar10.get_config('resnet8')
  base.update(overrides)
  return base


def schedule_of(config) -> optax.Schedule:
  return optim.learning_rate_schedule(section(config, Optim), config.num_train_steps)


def rates(schedule, steps) -> list[float]:
  return [float(schedule(jnp.asarray(s))) for s in steps]


def test_paper_piecewise_schedule():
  """He 2015 sec. 4.2: 0.1, /10 at 32k and 48k iterations."""
  schedule = schedule_of(config())
  steps = [0, 1, 31_999, 32_000, 32_001, 47_999, 48_000, 48_001, 63_999]
  expected = [0.1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.001, 0.001, 0.001]
  np.testing.assert_allclose(rates(schedule, steps), expected, rtol=1e-6)


def test_piecewise_with_resnet110_warmup():
  """0.01 for the first 400 iterations, then back to 0.1 (He 2015 sec. 4.2, ResNet-110)."""
  assert cifar10.get_config('resnet110').warmup_steps == 400
  schedule = schedule_of(cifar10.get_config('resnet110'))
  steps = [0, 399, 400, 401, 31_999, 32_000, 47_999, 48_000]
  expected = [0.01, 0.01, 0.1, 0.1, 0.1, 0.01, 0.01, 0.001]
  np.testing.assert_allclose(rates(schedule, steps), expected, rtol=1e-6)


def test_per_boundary_factors_of_the_keras_recipe():
  keras = cifar10.get_config('resnet20,keras')
  epoch = 50_000 // 32
  schedule = schedule_of(keras)
  steps = [0, 81 * epoch - 1, 81 * epoch, 121 * epoch - 1, 121 * epoch, 161 * epoch,
           181 * epoch - 1, 181 * epoch, 200 * epoch - 1]
  expected = [1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-6, 1e-6, 5e-7, 5e-7]
  np.testing.assert_allclose(rates(schedule, steps), expected, rtol=1e-5)


def test_cosine_with_linear_warmup():
  total, warmup, peak = 1000, 100, 0.1
  schedule = schedule_of(config(
      schedule='cosine', num_train_steps=total, warmup_steps=warmup, warmup_learning_rate=0.0,
      learning_rate=peak))
  steps = [0, 50, 99, 100, 101, 550, 999, 1000]

  def reference(s):
    if s < warmup:
      return peak * s / warmup
    return 0.5 * peak * (1 + math.cos(math.pi * (s - warmup) / (total - warmup)))
  np.testing.assert_allclose(rates(schedule, steps), [reference(s) for s in steps],
                             rtol=1e-5, atol=1e-8)


def test_constant_schedule_ignores_boundaries():
  schedule = schedule_of(config(schedule='constant'))
  np.testing.assert_allclose(rates(schedule, [0, 32_000, 60_000]), [0.1] * 3, rtol=1e-7)


def test_plateau_cuts_after_patience_and_stops_at_min_lr():
  """Keras ReduceLROnPlateau: no improvement > min_delta for `patience` evaluations -> x factor."""
  cfg = config(optimizer='adam', learning_rate=1e-3, schedule='plateau', lr_boundaries=(),
               plateau_factor=0.5, plateau_patience=2, plateau_min_delta=0.01,
               plateau_min_lr=2e-4)
  optimizer = optimizer_of(cfg)
  opt_state = optimizer.tx.init({'w': jnp.zeros(3)})
  # 1.0 sets the best; 0.995 is within min_delta (no improvement); 0.5 improves.
  losses = [1.0, 0.995, 1.2, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1]
  expected = [1e-3, 1e-3, 5e-4, 5e-4, 5e-4, 2.5e-4, 2.5e-4, 2e-4, 2e-4, 2e-4]
  observe, rate = jax.jit(optimizer.observe), jax.jit(optimizer.learning_rate)
  seen = []
  for loss in losses:
    opt_state = observe(opt_state, loss)
    seen.append(float(rate(opt_state, 0)))
  np.testing.assert_allclose(seen, expected, rtol=1e-6)


def test_plateau_scale_multiplies_the_update():
  cfg = config(optimizer='sgd', momentum=0.0, weight_decay=0.0, schedule='plateau',
               lr_boundaries=(), plateau_factor=0.1, plateau_patience=1)
  optimizer = optimizer_of(cfg)
  params = {'w': jnp.ones(2)}
  opt_state = optimizer.tx.init(params)
  opt_state = optimizer.observe(opt_state, 1.0)
  opt_state = optimizer.observe(opt_state, 2.0)  # no improvement for 1 evaluation: x0.1
  updates, _ = optimizer.tx.update({'w': jnp.ones(2)}, opt_state, params)
  np.testing.assert_allclose(updates['w'], [-0.01, -0.01], rtol=1e-6)


@pytest.mark.parametrize('nesterov', [False, True])
def test_sgd_momentum_with_l2_term_on_every_parameter(nesterov):
  """v <- m v + (g + wd p); p <- p - lr v (Nesterov: p <- p - lr (g + wd p + m v))."""
  lr, m, wd = 0.1, 0.9, 1e-2
  cfg = config(learning_rate=lr, momentum=m, weight_decay=wd, nesterov=nesterov,
               lr_boundaries=(100,))
  tx = optimizer_of(cfg).tx
  p = {'kernel': np.array([1.0, -2.0]), 'bias': np.array([0.5])}
  grads = [{'kernel': np.array([0.3, 0.1]), 'bias': np.array([-1.0])},
           {'kernel': np.array([-0.2, 0.4]), 'bias': np.array([2.0])}]
  params = jax.tree.map(jnp.asarray, p)
  opt_state = tx.init(params)
  velocity = jax.tree.map(np.zeros_like, p)
  for g in grads:
    updates, opt_state = tx.update(jax.tree.map(jnp.asarray, g), opt_state, params)
    params = jax.tree.map(lambda a, u: a + u, params, updates)
    d = jax.tree.map(lambda gi, pi: gi + wd * pi, g, p)
    velocity = jax.tree.map(lambda v, di: m * v + di, velocity, d)
    step = jax.tree.map(lambda v, di: di + m * v, velocity, d) if nesterov else velocity
    p = jax.tree.map(lambda pi, s: pi - lr * s, p, step)
  for name in p:
    np.testing.assert_allclose(params[name], p[name], rtol=1e-6)


def test_unknown_optimizer_and_schedule_are_one_line_errors():
  with pytest.raises(ValueError, match="optimizer='rmsprop' is unknown") as error:
    optimizer_of(config(optimizer='rmsprop'))
  assert '\n' not in str(error.value)
  with pytest.raises(ValueError, match="schedule='linear' is unknown"):
    optimizer_of(config(schedule='linear'))
  three_factors = ml_collections.ConfigDict({**config().to_dict(), 'lr_decay_factor': (0.1,) * 3})
  with pytest.raises(ValueError, match='3 factors for 2 lr_boundaries'):
    optimizer_of(three_factors)
