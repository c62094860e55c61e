"""The training state: parameters, batch-norm statistics, optimiser state and step."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state
from jax.sharding import Mesh

from resnet_jax import config as config_lib
from resnet_jax import models, parallel


class TrainState(train_state.TrainState):
  """flax's TrainState plus the 'batch_stats' collection (running BN statistics)."""

  batch_stats: Any


def network(model: config_lib.Model, num_classes: int) -> nn.Module:
  """The network of a Model section with `num_classes` outputs."""
  return models.get_model(model.model, num_classes,
                          dtype=jnp.bfloat16 if model.half_precision else jnp.float32,
                          zero_init_residual=model.zero_init_residual,
                          scan_blocks=model.scan_blocks, remat_blocks=model.remat_blocks)


def init_key(seed: int) -> jax.Array:
  """The parameter-initialisation key, of XLA's RngBitGenerator ('rbg').

  Compiling the initialisers of a deep network with (partitionable) threefry
  takes several times longer (resnet8 on CPU: 5.9 s vs 1.6 s of CPU time); the
  initial parameters then depend on the backend, never on the device count.
  """
  return jax.random.key(seed, impl='rbg')


def train_key(seed: int) -> jax.Array:
  """The key that, folded with the step number, drives augmentation and dropout."""
  return jax.random.fold_in(jax.random.key(seed), 1)


def create_train_state(
    model: nn.Module,
    tx: optax.GradientTransformation,
    image_shape: tuple[int, int, int],
    seed: int,
    mesh: Mesh,
) -> TrainState:
  """Initialises the model for [N, *image_shape] inputs, replicated over the mesh."""
  def init() -> TrainState:
    variables = model.init(init_key(seed), jnp.zeros((1, *image_shape), jnp.float32), train=False)
    return TrainState.create(
        apply_fn=model.apply, params=variables['params'],
        batch_stats=variables.get('batch_stats', {}), tx=tx)
  return jax.jit(init, out_shardings=parallel.replicated(mesh))()


def param_count(state: TrainState) -> int:
  return sum(x.size for x in jax.tree.leaves(state.params))
