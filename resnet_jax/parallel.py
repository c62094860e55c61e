"""Data parallelism: one mesh axis 'data' over every device of every process.

Parameters, optimiser state and (with one process) in-memory data sets are
replicated; batches are sharded over 'data'. Under jax.jit the partitioner turns a
mean over a sharded batch axis into a global one, so batch normalisation sees the
global batch and gradients are all-reduced without any explicit collective in the
model or step. The same code runs on 1 CPU, forced host devices, a GPU, a TPU
slice or several processes.

With several processes each one loads only its share of an in-memory data set: a
contiguous range of examples (process_rows), placed as one array sharded over
'data' along examples (shard_examples). The train step gathers a batch by global
example indices as before, and XLA inserts the collectives that fetch the rows
other processes hold.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

DATA_AXIS = 'data'
COORDINATOR_ENV = 'JAX_COORDINATOR_ADDRESS'
NUM_PROCESSES_ENV, PROCESS_ID_ENV = 'JAX_NUM_PROCESSES', 'JAX_PROCESS_ID'
CLUSTER_SIZE_ENVS = ('SLURM_NTASKS', 'OMPI_COMM_WORLD_SIZE')  # set by srun and mpirun
CPU_COLLECTIVES = 'gloo'  # cross-process collectives of the CPU backend (jax 0.10's default)


def distributed_requested(requested: bool = False) -> bool:
  """config.distributed, JAX_COORDINATOR_ADDRESS, or a SLURM/Open MPI job of several tasks."""
  cluster = any(int(os.environ.get(name, '1')) > 1 for name in CLUSTER_SIZE_ENVS)
  return requested or bool(os.environ.get(COORDINATOR_ENV)) or cluster


def initialize_distributed(requested: bool = False) -> None:
  """Starts jax.distributed when distributed_requested(); a no-op if already started.

  jax.distributed.initialize() finds its parameters itself on SLURM, Open MPI and
  Cloud TPU; elsewhere set JAX_COORDINATOR_ADDRESS (host:port of process 0),
  JAX_NUM_PROCESSES and JAX_PROCESS_ID. It must run before anything touches a device.
  CPU processes exchange data through gloo over TCP.
  """
  if jax.distributed.is_initialized() or not distributed_requested(requested):
    return
  jax.config.update('jax_cpu_collectives_implementation', CPU_COLLECTIVES)
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


def padded_size(num_examples: int, mesh: Mesh) -> int:
  """num_examples rounded up to a multiple of the device count (every device holds as many)."""
  return -(-num_examples // mesh.size) * mesh.size


def process_rows(num_examples: int, mesh: Mesh) -> tuple[int, int]:
  """The rows [start, stop) of an example-sharded array (shard_examples) this process holds.

  stop may pass num_examples: the rows beyond it are padding. The range is contiguous
  because the mesh keeps each process's devices together.
  """
  size = padded_size(num_examples, mesh)
  rows = [index[0] for index in
          batch_sharding(mesh).addressable_devices_indices_map((size,)).values()]
  start, stop = min(r.start for r in rows), max(r.stop for r in rows)
  if stop - start != len(rows) * size // mesh.size:
    raise ValueError(f'the devices of process {jax.process_index()} are not adjacent in the mesh')
  return start, stop


def shard_examples(tree, num_examples: int, mesh: Mesh):
  """Global arrays [padded_size, ...] sharded over 'data' from this process's rows of each leaf.

  Each leaf holds the rows process_rows(num_examples, mesh) that exist (those below
  num_examples); the padding rows after them are zeros.
  """
  start, stop = process_rows(num_examples, mesh)
  size = padded_size(num_examples, mesh)

  def put(x: np.ndarray) -> jax.Array:
    local = np.zeros((stop - start, *x.shape[1:]), x.dtype)
    local[:len(x)] = x
    return jax.make_array_from_process_local_data(batch_sharding(mesh), local,
                                                  (size, *x.shape[1:]))
  return jax.tree.map(put, tree)


def process_allgather(tree):
  """Every process's value of each leaf, stacked on a leading [process_count] axis (numpy)."""
  if jax.process_count() == 1:
    return jax.tree.map(lambda x: np.asarray(x)[None], tree)
  return multihost_utils.process_allgather(tree)


def check_divisible(name: str, size: int) -> None:
  """One-line error when a global batch cannot be split evenly over the devices."""
  devices = jax.device_count()
  if size % devices:
    raise ValueError(
        f'{name}={size} is not divisible by the {devices} devices; use a multiple of {devices}')
