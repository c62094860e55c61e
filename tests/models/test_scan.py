"""The stacked layout (blocks 2..n of a stage scanned, resnet_jax/models/layout.py) against the
unrolled one: the same function and gradients from the same weights, an exact conversion both
ways, and every reader of the variables (checkpoints, PyTorch interop, gradient norms, summary)
on both."""

import functools
import glob
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict

from configs import cifar10
from resnet_jax import config as config_lib
from resnet_jax import parallel, summary
from resnet_jax.interop import pytorch
from resnet_jax.models import convert_layout, get_model, layout, layout_of
from resnet_jax.models.loop_conv import loop_conv
from resnet_jax.models.probe import abstract_init
from resnet_jax.train import checkpoint, steps
from resnet_jax.train.state import create_train_state
from tests.tiny import optimizer_of

TOLERANCE = 1e-5  # relative, logits and every gradient
SIZE = 8  # image side: the networks' every layer, at little cost


def init(name: str, scan_blocks: str) -> tuple:
  model = get_model(name, scan_blocks=scan_blocks)
  x = jnp.zeros((1, SIZE, SIZE, 3))
  return model, jax.jit(lambda: model.init(jax.random.key(0), x, train=False))()


def batch(n: int = 4) -> tuple[jax.Array, jax.Array]:
  images = jax.random.normal(jax.random.key(1), (n, SIZE, SIZE, 3))
  return images, jnp.arange(n) % 10


def forward_backward(model, variables, images, labels) -> tuple:
  """Train-mode logits, updated BN statistics and the loss's gradients."""
  def loss(params):
    logits, updates = model.apply({'params': params, 'batch_stats': variables['batch_stats']},
                                  images, train=True, mutable=['batch_stats'])
    return steps.cross_entropy(logits, labels).mean(), (logits, updates['batch_stats'])
  grad = jax.jit(jax.grad(loss, has_aux=True))
  grads, (logits, stats) = grad(variables['params'])
  return logits, stats, grads


def relative_error(ours, reference) -> float:
  """The largest ||a - b|| / ||b|| over the leaves of two trees of the same structure."""
  pairs = zip(jax.tree.leaves(ours), jax.tree.leaves(reference), strict=True)
  return max(float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))
             for a, b in pairs)


@functools.cache
def unrolled_reference(name: str) -> tuple:
  """The unrolled network's weights, batch and outputs (computed once per network)."""
  unrolled, variables = init(name, 'unrolled')
  images, labels = batch()
  return variables, images, labels, forward_backward(unrolled, variables, images, labels)


def unrolled_and_stacked(name: str, loop_convs: bool = False, remat_blocks: bool = False) -> tuple:
  """Both layouts' outputs, the stacked network run on the unrolled one's weights converted."""
  variables, images, labels, reference = unrolled_reference(name)
  stacked = get_model(name, scan_blocks='stacked', remat_blocks=remat_blocks).clone(
      loop_convs=loop_convs)
  ours = forward_backward(stacked, convert_layout(variables, 'stacked'), images, labels)
  return reference, ours, (stacked, variables, images, labels)


@pytest.mark.parametrize('name, loop_convs', [('resnet56', False), ('resnet56', True),
                                              ('resnet164_v2', True)])
def test_stacked_layout_computes_the_same_logits_and_gradients(name, loop_convs):
  reference, ours, _ = unrolled_and_stacked(name, loop_convs=loop_convs)
  logits, stats, grads = ours
  assert relative_error(logits, reference[0]) < TOLERANCE
  assert relative_error(convert_layout(stats, 'unrolled'), reference[1]) < TOLERANCE
  assert relative_error(convert_layout(grads, 'unrolled'), reference[2]) < TOLERANCE


def test_the_comparison_fails_on_other_weights():
  """Control: the same comparison after noise of 1e-3 of their spread on one stacked block's
  kernel (noise, not a scale, which the BN after the convolution would undo)."""
  reference, _, (stacked, variables, images, labels) = unrolled_and_stacked('resnet20')
  nudged = convert_layout(variables, 'stacked')
  kernel = nudged['params']['stage2_blocks']['conv1']['kernel']
  noise = 1e-3 * jnp.std(kernel) * jax.random.normal(jax.random.key(3), kernel.shape[1:])
  nudged['params']['stage2_blocks']['conv1']['kernel'] = kernel.at[1].add(noise)
  logits, _, grads = forward_backward(stacked, nudged, images, labels)
  assert relative_error(logits, reference[0]) > TOLERANCE
  assert relative_error(convert_layout(grads, 'unrolled'), reference[2]) > TOLERANCE


def test_rematerialised_blocks_give_the_same_gradients():
  reference, ours, _ = unrolled_and_stacked('resnet20', remat_blocks=True)
  assert relative_error(convert_layout(ours[2], 'unrolled'), reference[2]) < TOLERANCE


def test_loop_conv_matches_lax_convolution_and_its_gradients():
  x = jax.random.normal(jax.random.key(2), (2, 5, 5, 3))
  for k in (1, 3):
    w = jax.random.normal(jax.random.key(k), (k, k, 3, 4))
    pad = [(k // 2, k // 2)] * 2

    def loss(conv):
      return lambda x, w: jnp.sum(jnp.sin(conv(x, w, (1, 1), pad, dimension_numbers=(
          'NHWC', 'HWIO', 'NHWC'))))
    assert relative_error(jax.grad(loss(loop_conv), (0, 1))(x, w),
                          jax.grad(loss(jax.lax.conv_general_dilated), (0, 1))(x, w)) < 1e-6
  with pytest.raises(ValueError, match='stride-1'):
    loop_conv(x, w, (2, 2), pad)


def test_conversion_round_trips_exactly_and_matches_the_stacked_model():
  rng = np.random.default_rng(0)
  shapes_only = abstract_init(get_model('resnet164_v2', scan_blocks='unrolled'), SIZE)[0]
  variables = jax.tree.map(lambda x: rng.normal(size=x.shape).astype(np.float32), shapes_only)
  stacked = convert_layout(variables, 'stacked')
  shapes = lambda tree: {k: v.shape for k, v in flatten_dict(tree, sep='/').items()}
  assert shapes(stacked) == shapes(abstract_init(get_model('resnet164_v2',
                                                           scan_blocks='stacked'), SIZE)[0])
  assert stacked['params']['stage1_blocks']['conv1']['kernel'].shape[0] == 17
  assert layout_of(stacked) == 'stacked' and layout_of(variables) == 'unrolled'
  back = convert_layout(stacked, 'unrolled')
  assert set(flatten_dict(back)) == set(flatten_dict(variables))
  assert isinstance(stacked['batch_stats']['stage3_blocks']['bn2']['var'], np.ndarray)
  jax.tree.map(np.testing.assert_array_equal, back, variables)
  jax.tree.map(np.testing.assert_array_equal, convert_layout(stacked, 'stacked'), stacked)
  with pytest.raises(ValueError, match='layout'):
    convert_layout(variables, 'scanned')


def test_auto_layout_stacks_the_thousand_layer_networks_only():
  stacked = [n for n in ('resnet110', 'resnet164_v2', 'resnet1001_v2', 'resnet1202', 'resnet152')
             if get_model(n).scan_blocks]
  assert stacked == ['resnet1001_v2', 'resnet1202']
  assert get_model('resnet20', scan_blocks='stacked').scan_blocks
  assert not get_model('resnet1202', scan_blocks='unrolled').scan_blocks
  with pytest.raises(ValueError, match="scan_blocks='scan' is unknown"):
    get_model('resnet20', scan_blocks='scan')
  config = cifar10.get_config('resnet20')
  config.scan_blocks = 'yes'
  with pytest.raises(ValueError, match='scan_blocks'):
    config_lib.validate(config)


@pytest.mark.parametrize('name', ['resnet1202', 'resnet1001_v2'])
def test_the_deep_networks_keep_the_papers_warm_up(name):
  """He 2015 sec. 4.2 (ResNet-1202 as ResNet-110) and He 2016 appendix: lr 0.01 for the first
  400 iterations, then 0.1."""
  config = cifar10.get_config(name)
  assert (config.warmup_steps, config.warmup_learning_rate, config.learning_rate) == (
      400, 0.01, 0.1)
  schedule = optimizer_of(config).learning_rate
  assert [float(schedule(None, s)) for s in (0, 399, 400)] == pytest.approx([0.01, 0.01, 0.1])


def state_of(name: str, scan_blocks: str):
  config = cifar10.get_config(name)
  model = get_model(name, scan_blocks=scan_blocks)
  return create_train_state(model, optimizer_of(config).tx, (SIZE, SIZE, 3), 0,
                            parallel.make_mesh())


def test_checkpoints_record_their_layout_and_refuse_the_other(tmp_path):
  state = state_of('resnet20', 'stacked')
  with checkpoint.Checkpointer(str(tmp_path), keep=1, best_metric='test_error') as ckpt:
    ckpt.save(1, state, {'wall_time': 1.0})
  files = [Path(path).read_text() for path in glob.glob(f'{tmp_path}/checkpoints/1/meta/*')]
  metas = [json.loads(text) for text in files if '"wall_time"' in text]
  assert [meta.get('layout') for meta in metas] == ['stacked']
  with checkpoint.Checkpointer(str(tmp_path), keep=1, best_metric='test_error') as ckpt:
    restored, meta = ckpt.restore(state_of('resnet20', 'stacked'))
    assert meta == {'wall_time': 1.0}
    with pytest.raises(ValueError) as error:
      ckpt.restore(state_of('resnet20', 'unrolled'))
  message = str(error.value)
  assert '\n' not in message and 'stacked layout' in message
  assert '--config.scan_blocks=stacked' in message
  jax.tree.map(np.testing.assert_array_equal, restored.params, state.params)


def test_with_network_converts_variables_into_the_states_layout():
  state = state_of('resnet20', 'stacked')
  unrolled = convert_layout({'params': state.params, 'batch_stats': state.batch_stats},
                            'unrolled')
  replaced = checkpoint.with_network(state, unrolled)
  jax.tree.map(np.testing.assert_array_equal, replaced.params, state.params)


def test_pytorch_interop_reads_and_writes_both_layouts():
  _, variables = init('resnet20', 'unrolled')
  stacked = convert_layout(variables, 'stacked')
  exported = pytorch.to_torch(stacked, 'resnet20')
  assert exported.keys() == pytorch.to_torch(variables, 'resnet20').keys()
  for key, value in pytorch.to_torch(variables, 'resnet20').items():
    np.testing.assert_array_equal(exported[key], value)
  imported = pytorch.from_torch(exported, 'resnet20', scan_blocks='stacked')
  jax.tree.map(np.testing.assert_array_equal, imported, jax.tree.map(np.asarray, stacked))
  assert layout_of(pytorch.from_torch(exported, 'resnet20')) == 'unrolled'  # auto


def test_gradient_norms_are_per_layer_in_both_layouts():
  reference, ours, _ = unrolled_and_stacked('resnet20')
  expected = steps.kernel_grad_norms(reference[2])
  found = steps.kernel_grad_norms(ours[2])
  assert list(found) == list(expected)
  assert 'stage1_block3/conv2' in found and not any('blocks' in k for k in found)
  np.testing.assert_allclose([found[k] for k in expected], list(expected.values()), rtol=1e-5)


def test_summary_lists_every_block_of_a_stacked_network(monkeypatch):
  summary.profile.cache_clear()
  monkeypatch.setattr(layout, 'SCAN_MIN_BLOCKS', 3)  # 'auto' now stacks resnet20
  assert get_model('resnet20').scan_blocks
  rows = [l.name for l in summary.profile('resnet20').layers]
  assert rows == ['stem_conv', 'stem_bn'] + [
      f'stage{s}_block{b}' for s in (1, 2, 3) for b in (1, 2, 3)] + ['head']
  stacked, _ = abstract_init(get_model('resnet20'), SIZE)
  assert summary.count_params('resnet20') == sum(
      int(np.prod(x.shape)) for x in jax.tree.leaves(stacked['params']))
  summary.profile.cache_clear()


def test_train_step_on_the_stacked_layout_logs_per_block_gradient_norms():
  config = cifar10.get_config('resnet20')
  mesh = parallel.make_mesh()
  state = state_of('resnet20', 'stacked')
  step = steps.compile_train_step(mesh, prepare=lambda arrays, b, rng, train: (b['image'],
                                                                               b['label']),
                                  learning_rate=optimizer_of(config).learning_rate,
                                  seed=0, log_grad_norms=True)
  images, labels = batch(8)
  data = parallel.shard_global_batch({'image': images, 'label': labels},
                                     parallel.batch_sharding(mesh))
  new_state, metrics = step(state, {}, data)
  norms = metrics['last']['grad_norms']
  assert len([k for k in norms if k.startswith('stage2_block')]) == 2 * 3
  assert layout_of(new_state.params) == 'stacked'
  assert all(np.isfinite(float(v)) and float(v) > 0 for v in norms.values())
