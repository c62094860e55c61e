"""Data parallelism on 8 forced CPU devices, in subprocesses (XLA_FLAGS must precede jax).

The worker (this file run as a script) trains resnet8 for a few steps on a mesh of
1 device and on a mesh of all 8, and moves a checkpoint between the two meshes;
the tests compare what it reports.
"""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
DEVICES = 8
STEPS = 3


def eight_device_env() -> dict:
  flags = os.environ.get('XLA_FLAGS', '')
  return {**os.environ, 'PYTHONPATH': ROOT,
          'XLA_FLAGS': f'{flags} --xla_force_host_platform_device_count={DEVICES}'.strip()}


def run(args: list[str]) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, *args], cwd=ROOT, env=eight_device_env(),
                        capture_output=True, text=True, timeout=600)


def test_one_and_eight_devices_agree_and_checkpoints_move_between_them(tmp_path):
  result = run([os.path.abspath(__file__), str(tmp_path)])
  assert result.returncode == 0, result.stderr[-4000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert report['device_count'] == DEVICES
  assert report['mesh_sizes'] == [1, DEVICES]
  for one, eight in zip(report['losses'][0], report['losses'][1], strict=True):
    assert abs(one - eight) <= 1e-5 * abs(one)
  assert report['losses'][0][-1] != report['losses'][0][0]  # the steps changed the network
  assert report['max_param_rel_diff'] < 1e-5
  assert report['max_batch_stats_rel_diff'] < 1e-5
  assert report['restored_mesh_sizes'] == [1, DEVICES]
  assert report['restored_exactly'] == [True, True]


def test_batch_not_divisible_by_devices_is_a_one_line_cli_error(tmp_path):
  workdir = tmp_path / 'run'
  result = run(['-m', 'resnet_jax.main', '--config=configs/cifar10.py:resnet8',
                f'--workdir={workdir}', '--config.dataset=synthetic', '--config.batch_size=12'])
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
      'error: batch_size=12 is not divisible by the 8 devices; use a multiple of 8']
  assert not workdir.exists()


def _worker(workdir: str) -> dict:
  """Runs in the subprocess with 8 forced devices; returns what the tests check."""
  import jax
  import numpy as np

  from configs import cifar10
  from resnet_jax import models, parallel
  from resnet_jax.data import order
  from resnet_jax.data.augment import pixel_stats
  from resnet_jax.train import checkpoint, inputs, steps
  from resnet_jax.train.state import create_train_state
  from tests.tiny import optimizer_of

  config = cifar10.get_config('resnet8')
  config.update(batch_size=16, lr_boundaries=(2,))
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (64, 8, 8, 3), dtype=np.uint8)
  labels = rng.integers(0, 10, 64).astype(np.int32)
  mean, std = pixel_stats(images, 'per_pixel_mean')
  optimizer = optimizer_of(config)
  model = models.get_model('resnet8')

  def train(mesh):
    state = create_train_state(model, optimizer.tx, (8, 8, 3), 0, mesh)
    arrays = parallel.replicate({'images': images, 'labels': labels, 'mean': mean, 'std': std},
                                mesh)
    train_step = steps.compile_train_step(
        mesh, prepare=inputs.prepare_in_memory, learning_rate=optimizer.learning_rate, seed=0)
    losses = []
    for step in range(STEPS):
      index = order.train_batch_indices(0, step, len(labels), config.batch_size)
      batch = parallel.shard_global_batch({'index': index}, parallel.batch_sharding(mesh))
      state, metrics = train_step(state, arrays, batch)
      losses.append(float(metrics['sums']['loss'] / metrics['sums']['examples']))
    return state, losses

  def rel_diff(a, b) -> float:
    return max(float(np.linalg.norm(np.asarray(x) - np.asarray(y)) / np.linalg.norm(np.asarray(y)))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))

  def equal(a, b) -> bool:
    return all(np.array_equal(np.asarray(x), np.asarray(y))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))

  meshes = [parallel.make_mesh(jax.devices()[:1]), parallel.make_mesh()]
  (one, losses_one), (eight, losses_eight) = train(meshes[0]), train(meshes[1])

  restored_sizes, restored_exactly = [], []
  for saved, template in ((eight, one), (one, eight)):  # the template fixes only the layout
    directory = os.path.join(workdir, f'from_{len(saved.step.sharding.device_set)}')
    saver = checkpoint.Checkpointer(directory, keep=1, best_metric='test_error')
    saver.save(STEPS, saved, {'wall_time': 1.0})
    saver.close()
    loader = checkpoint.Checkpointer(directory, keep=1, best_metric='test_error')
    restored, _ = loader.restore(template)
    loader.close()
    restored_sizes.append(len(jax.tree.leaves(restored)[0].sharding.device_set))
    restored_exactly.append(equal(restored, saved) and not equal(template, saved))
  return {
      'device_count': jax.device_count(),
      'mesh_sizes': [mesh.size for mesh in meshes],
      'losses': [losses_one, losses_eight],
      'max_param_rel_diff': rel_diff(eight.params, one.params),
      'max_batch_stats_rel_diff': rel_diff(eight.batch_stats, one.batch_stats),
      'restored_mesh_sizes': restored_sizes,
      'restored_exactly': restored_exactly,
  }


if __name__ == '__main__':
  print(json.dumps(_worker(sys.argv[1])))
