"""Learning-rate schedules and optax optimisers.

Recipes:
- 'piecewise' (He et al. 2015, sec. 4.2): SGD, momentum 0.9, lr 0.1 divided by 10
  at 32k and 48k iterations, 64k iterations in all; ResNet-110 first warms up at
  0.01 for 400 iterations and then jumps to 0.1 (warmup_steps, warmup_learning_rate).
- 'cosine': linear warm-up from warmup_learning_rate to learning_rate, then cosine
  decay to 0 at num_train_steps (optax.warmup_cosine_decay_schedule).
- 'plateau' (the Keras CIFAR-10 ResNet example): a piecewise-constant schedule
  (there epoch-based: x0.1 after epochs 80, 120, 160 and x0.5 after 180) times a
  scale that ReduceLROnPlateau-style logic (optax.contrib.reduce_on_plateau) cuts by
  plateau_factor whenever the validation loss has not improved by plateau_min_delta
  for plateau_patience evaluations, down to plateau_min_lr. Unlike Keras, where the
  LearningRateScheduler callback resets the rate every epoch, the two compose.
- 'constant': learning_rate throughout (after the optional constant warm-up).

Weight decay is the paper's L2 term added to the gradient (wd * param) before
momentum or Adam, on every parameter (kernels, biases and batch-norm scales and
offsets), as in Caffe/fb.resnet.torch and torchvision's reference recipe.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import optax
from optax.contrib import ReduceLROnPlateauState, reduce_on_plateau

from resnet_jax.config import Optim

OPTIMIZERS = ('sgd', 'adam')
SCHEDULES = ('piecewise', 'cosine', 'plateau', 'constant')


def _is_plateau_state(node) -> bool:
  return isinstance(node, ReduceLROnPlateauState)


@dataclasses.dataclass(frozen=True)
class Optimizer:
  """The optax transformation plus what the train loop needs to report and drive it.

  tx: the full update rule (L2 term, momentum/Adam, schedule, plateau scale).
  schedule: step -> base learning rate (before the plateau scale).
  plateau: the reduce_on_plateau transformation whose state lives in opt_state,
    or None when schedule != 'plateau'.
  """

  tx: optax.GradientTransformation
  schedule: optax.Schedule
  plateau: optax.GradientTransformationExtraArgs | None = None

  def learning_rate(self, opt_state: optax.OptState, step: jax.Array) -> jax.Array:
    """The rate the update at `step` (0-based) uses: schedule(step) * plateau scale."""
    scales = [s.scale for s in jax.tree.leaves(opt_state, is_leaf=_is_plateau_state)
              if _is_plateau_state(s)]
    rate = self.schedule(step)
    return rate * scales[0] if scales else jnp.asarray(rate, jnp.float32)

  def observe(self, opt_state: optax.OptState, value: jax.Array) -> optax.OptState:
    """Feeds one evaluation's loss to the plateau logic; a no-op for other schedules."""
    if self.plateau is None:
      return opt_state

    def update(node):
      if _is_plateau_state(node):
        return self.plateau.update(None, node, value=value)[1]
      return node
    return jax.tree.map(update, opt_state, is_leaf=_is_plateau_state)


def piecewise_schedule(
    learning_rate: float,
    boundaries: Sequence[int],
    decay_factors: float | Sequence[float],
    warmup_steps: int = 0,
    warmup_learning_rate: float = 0.0,
) -> optax.Schedule:
  """Constant warm-up, then learning_rate times the factors of the boundaries passed.

  The update at step s (0-based) uses the warm-up rate while s < warmup_steps and
  is multiplied by a boundary's factor once s >= boundary (He 2015 sec. 4.2: 0.1,
  /10 at 32k and 48k; 0.01 for the first 400 iterations of ResNet-110).
  """
  factors = _per_boundary(decay_factors, boundaries)
  main = optax.piecewise_constant_schedule(
      learning_rate, {b - warmup_steps: f for b, f in zip(boundaries, factors)})
  if warmup_steps == 0:
    return main
  return optax.join_schedules(
      [optax.constant_schedule(warmup_learning_rate), main], [warmup_steps])


def _per_boundary(decay_factors: float | Sequence[float], boundaries: Sequence[int]) -> list[float]:
  if isinstance(decay_factors, (int, float)):
    return [float(decay_factors)] * len(boundaries)
  if len(decay_factors) != len(boundaries):
    raise ValueError(
        f'lr_decay_factor has {len(decay_factors)} factors for {len(boundaries)} lr_boundaries; '
        'give one factor, or one per boundary')
  return [float(f) for f in decay_factors]


def learning_rate_schedule(optim: Optim, num_train_steps: int) -> optax.Schedule:
  """The base schedule named by optim.schedule (rates per update step); 'cosine' decays to 0 at
  num_train_steps."""
  if optim.schedule not in SCHEDULES:
    raise ValueError(f'schedule={optim.schedule!r} is unknown; choose one of {SCHEDULES}')
  if optim.schedule == 'cosine':
    return optax.warmup_cosine_decay_schedule(
        init_value=optim.warmup_learning_rate, peak_value=optim.learning_rate,
        warmup_steps=optim.warmup_steps, decay_steps=num_train_steps)
  boundaries = () if optim.schedule == 'constant' else tuple(optim.lr_boundaries)
  return piecewise_schedule(
      optim.learning_rate, boundaries, optim.lr_decay_factor,
      optim.warmup_steps, optim.warmup_learning_rate)


def plateau_transform(optim: Optim) -> optax.GradientTransformationExtraArgs:
  """Keras ReduceLROnPlateau semantics: absolute min_delta, patience in evaluations."""
  if not (0 < optim.plateau_factor < 1 and optim.plateau_min_delta > 0
          and optim.plateau_patience >= 1 and optim.plateau_cooldown >= 0
          and optim.plateau_min_lr >= 0):
    raise ValueError(
        f'plateau_factor={optim.plateau_factor} must be in (0, 1), plateau_min_delta='
        f'{optim.plateau_min_delta} > 0, plateau_patience={optim.plateau_patience} >= 1, '
        f'plateau_cooldown={optim.plateau_cooldown} >= 0, plateau_min_lr='
        f'{optim.plateau_min_lr} >= 0')
  return reduce_on_plateau(
      factor=optim.plateau_factor, patience=optim.plateau_patience, rtol=0.0,
      atol=optim.plateau_min_delta, cooldown=optim.plateau_cooldown,
      min_scale=optim.plateau_min_lr / optim.learning_rate)


def scale_by_plateau(
    plateau: optax.GradientTransformationExtraArgs) -> optax.GradientTransformation:
  """Multiplies updates by the plateau scale; only Optimizer.observe changes that scale."""
  def update(updates, state, params=None):
    del params
    return jax.tree.map(lambda u: state.scale * u, updates), state
  return optax.GradientTransformation(plateau.init, update)


def create_optimizer(optim: Optim, num_train_steps: int) -> Optimizer:
  """SGD with momentum (optionally Nesterov) or Adam, with the L2 term and the schedule."""
  schedule = learning_rate_schedule(optim, num_train_steps)
  if optim.optimizer == 'sgd':
    direction = optax.trace(decay=optim.momentum, nesterov=optim.nesterov)
  elif optim.optimizer == 'adam':
    direction = optax.scale_by_adam()
  else:
    raise ValueError(f'optimizer={optim.optimizer!r} is unknown; choose one of {OPTIMIZERS}')
  chain = [optax.add_decayed_weights(optim.weight_decay), direction,
           optax.scale_by_learning_rate(schedule)]
  plateau = plateau_transform(optim) if optim.schedule == 'plateau' else None
  if plateau is not None:
    chain.append(scale_by_plateau(plateau))
  return Optimizer(tx=optax.chain(*chain), schedule=schedule, plateau=plateau)
