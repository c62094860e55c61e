"""When jax.distributed starts, and the shardings of parallel.py."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from resnet_jax import parallel

CLUSTER_ENVS = (parallel.COORDINATOR_ENV, *parallel.CLUSTER_SIZE_ENVS)


@pytest.mark.parametrize('env, requested, expected', [
    ({}, False, False),
    ({}, True, True),
    ({'JAX_COORDINATOR_ADDRESS': 'host0:1234'}, False, True),
    ({'SLURM_NTASKS': '4'}, False, True),
    ({'SLURM_NTASKS': '1'}, False, False),
    ({'OMPI_COMM_WORLD_SIZE': '2'}, False, True),
])
def test_distributed_requested(monkeypatch, env, requested, expected):
  for name in CLUSTER_ENVS:
    monkeypatch.delenv(name, raising=False)
  for name, value in env.items():
    monkeypatch.setenv(name, value)
  assert parallel.distributed_requested(requested) is expected


def test_mesh_and_shardings():
  mesh = parallel.make_mesh()
  assert mesh.axis_names == ('data',) and mesh.size == jax.device_count()
  assert parallel.batch_sharding(mesh).spec == PartitionSpec('data')
  assert parallel.batch_sharding(mesh, leading_steps=True).spec == PartitionSpec(None, 'data')
  batch = np.arange(4 * jax.device_count()).reshape(2, -1)
  placed = parallel.shard_global_batch({'index': batch},
                                       parallel.batch_sharding(mesh, leading_steps=True))
  np.testing.assert_array_equal(np.asarray(placed['index']), batch)
  replicated = parallel.replicate({'x': batch}, mesh)['x']
  assert replicated.sharding.is_fully_replicated
  np.testing.assert_array_equal(np.asarray(replicated), batch)

