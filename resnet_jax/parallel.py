"""Data parallelism: one mesh axis 'data' over every device of every process.

Parameters, optimiser state and in-memory data sets are replicated; batches are
sharded over 'data'. Under jax.jit the partitioner turns a mean over a sharded
batch axis into a global one, so batch normalisation sees the global batch and
gradients are all-reduced without any explicit collective in the model or step.
The same code runs on 1 CPU, forced host devices, a GPU, a TPU slice or several
processes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

DATA_AXIS = 'data'
COORDINATOR_ENV = 'JAX_COORDINATOR_ADDRESS'
NUM_PROCESSES_ENV, PROCESS_ID_ENV = 'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID'
CLUSTER_SIZE_ENVS = ('SLURM_NTASKS', 'OMPI_COMM_WORLD_SIZE')  # set by srun and mpirun


def distributed_requested(requested: bool = False) -> bool:
  """config.distributed, JAX_COORDINATOR_ADDRESS, or a SLURM/Open MPI job of several tasks."""
  cluster = any(int(os.environ.get(name, '1')) > 1 for name in CLUSTER_SIZE_ENVS)
  return requested or bool(os.environ.get(COORDINATOR_ENV)) or cluster


def initialize_distributed(requested: bool = False) -> None:
  """Starts jax.distributed when distributed_requested(); a no-op if already started.

  jax.distributed.initialize() finds its parameters itself on SLURM, Open MPI and
  Cloud TPU; elsewhere set JAX_COORDINATOR_ADDRESS (host:port of process 0),
  JAX_NUM_PROCESSES and JAX_PROCESS_ID. It must run before anything touches a device.
  """
  if jax.distributed.is_initialized() or not distributed_requested(requested):
    return
  num_processes, process_id = os.environ.get(NUM_PROCESSES_ENV), os.environ.get(PROCESS_ID_ENV)
  jax.distributed.initialize(
      num_processes=int(num_processes) if num_processes else None,
      process_id=int(process_id) if process_id else None)


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh ('data',) over `devices` (default: every device of every process).

  The axis is Auto (sharding propagated by the partitioner) rather than
  make_mesh's default Explicit, so models written without sharding annotations
  run unchanged.
  """
  devices = jax.devices() if devices is None else list(devices)
  return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(AxisType.Auto,), devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh, leading_steps: bool = False) -> NamedSharding:
  """Shards the batch axis over 'data'; with leading_steps it is the second axis ([K, B, ...])."""
  spec = PartitionSpec(None, DATA_AXIS) if leading_steps else PartitionSpec(DATA_AXIS)
  return NamedSharding(mesh, spec)


def replicate(tree, mesh: Mesh):
  """Places host arrays, identical on every process, whole on every device."""
  sharding = replicated(mesh)
  def put(x) -> jax.Array:
    return jax.make_array_from_process_local_data(sharding, np.asarray(x))
  return jax.tree.map(put, tree)


def shard_global_batch(tree, sharding: NamedSharding):
  """Places host arrays that every process holds whole (e.g. batch indices) with `sharding`.

  Each device receives only its slice, whatever the device order of the mesh.
  """
  def put(x: np.ndarray) -> jax.Array:
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
  return jax.tree.map(put, tree)


def shard_local_batch(tree, sharding: NamedSharding):
  """Assembles per-process batches (a streaming input pipeline's output) into global arrays."""
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), tree)


def check_divisible(name: str, size: int) -> None:
  """One-line error when a global batch cannot be split evenly over the devices."""
  devices = jax.device_count()
  if size % devices:
    raise ValueError(
        f'{name}={size} is not divisible by the {devices} devices; use a multiple of {devices}')
