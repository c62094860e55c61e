"""He 2015 Fig. 7: the std of each 3x3 layer's response after BN, before ReLU and addition."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resnet_jax.models import get_model
from resnet_jax.study import responses
from resnet_jax.study.figures import FIGURES_DIR
from resnet_jax.train import loop
from tests.tiny import tiny_config

IMAGES = jax.random.normal(jax.random.PRNGKey(1), (16, 8, 8, 3))


def _trained_like(name: str) -> tuple:
  """The model and variables with BN scales, biases and statistics away from their defaults."""
  model = get_model(name)
  variables = model.init(jax.random.PRNGKey(0), IMAGES, train=False)
  leaves, tree = jax.tree_util.tree_flatten_with_path(variables)
  keys = jax.random.split(jax.random.PRNGKey(2), len(leaves))

  def moved(path, leaf, key):
    noise = jax.random.normal(key, leaf.shape)
    return 1 + jnp.abs(noise) if path[-1].key == 'var' else leaf + 0.3 * noise
  return model, jax.tree_util.tree_unflatten(
      tree, [moved(path, leaf, key) for (path, leaf), key in zip(leaves, keys)])


def _batch_norm(x, stats, params):
  return (x - stats['mean']) / jnp.sqrt(stats['var'] + 1e-5) * params['scale'] + params['bias']


def test_layers_are_the_3x3_convolutions_in_network_order():
  _, variables = _trained_like('resnet8')
  assert responses.response_layers(variables['params']) == [
      ('stem_bn',), ('stage1_block1', 'bn1'), ('stage1_block1', 'bn2'), ('stage2_block1', 'bn1'),
      ('stage2_block1', 'bn2'), ('stage3_block1', 'bn1'), ('stage3_block1', 'bn2')]


@pytest.mark.parametrize('name', ['plain8', 'resnet8'])
def test_stds_are_those_of_the_bn_outputs(name):
  model, variables = _trained_like(name)
  stds = responses.layer_stds(model.apply, variables, IMAGES)
  params, stats = variables['params'], variables['batch_stats']
  # The stem by hand: BN (running statistics) of the 3x3 convolution, padded 1 on every side.
  conv = jax.lax.conv_general_dilated(IMAGES, params['stem_conv']['kernel'], (1, 1),
                                      ((1, 1), (1, 1)), dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  stem = _batch_norm(conv, stats['stem_bn'], params['stem_bn'])
  assert stds[0] == pytest.approx(float(np.std(np.asarray(stem))), rel=1e-5)
  # Every block's bn1 and bn2, as the model's own intermediates give them.
  _, found = model.apply(variables, IMAGES, train=False, capture_intermediates=True,
                         mutable=['intermediates'])
  outputs = found['intermediates']
  expected = [np.std(np.asarray(outputs[f'stage{s}_block1'][f'bn{i}']['__call__'][0]))
              for s in (1, 2, 3) for i in (1, 2)]
  assert stds[1:] == pytest.approx(expected, rel=1e-5)
  # Control: the block's output (after the addition and the ReLU) is another number.
  block = np.std(np.asarray(outputs['stage1_block1']['__call__'][0]))
  assert abs(block - stds[2]) > 1e-3 * stds[2]


def test_figure_plots_the_numbers_in_order_and_sorted():
  found = {'plain20': {'std': [1.0, 3.0, 2.0], 'images': 8, 'step': 4, 'model': 'plain20'},
           'resnet20': {'std': [0.5, 0.2, 0.4], 'images': 8, 'step': 4, 'model': 'resnet20'}}
  fig = responses.figure7(found, 'title')
  lines = {line.get_gid(): list(line.get_ydata()) for ax in fig.axes for line in ax.lines}
  assert lines == {'plain20/original': [1.0, 3.0, 2.0], 'plain20/sorted': [3.0, 2.0, 1.0],
                   'resnet20/original': [0.5, 0.2, 0.4], 'resnet20/sorted': [0.5, 0.4, 0.2]}


def test_a_study_without_checkpoints_redraws_from_the_json(fake_study, capsys):
  workdir, _ = fake_study(models=('plain20', 'resnet20'), seeds=1)
  assert responses.write_layer_responses(workdir) == []
  assert 'skipped layer_responses' in capsys.readouterr().err
  saved = {'resnet20': {'std': [0.5, 0.2], 'images': 8, 'step': 4, 'model': 'resnet20'}}
  (workdir / FIGURES_DIR).mkdir()
  (workdir / FIGURES_DIR / responses.RESPONSES_FILE).write_text(json.dumps(saved))
  written = responses.write_layer_responses(workdir)
  assert [path.name for path in written] == [responses.RESPONSES_FILE, 'layer_responses.png',
                                             'layer_responses.svg']
  assert json.loads(written[0].read_text()) == saved


def test_a_run_with_stacked_blocks_responds_as_the_same_run_unrolled(tmp_path):
  """Fig. 7 walks the layers by name: a run trained with scan_blocks='stacked' is read unrolled.
  Two runs from the same initial weights (init_from), one per layout, train alike (test_scan) and
  so give the same numbers, one per 3x3 layer."""
  recipe = {'model': 'resnet14', 'num_train_steps': 4}
  loop.train_and_evaluate(tiny_config(**recipe), str(tmp_path / 'source'))
  found = {}
  for scan_blocks in ('unrolled', 'stacked'):
    loop.train_and_evaluate(tiny_config(**recipe, scan_blocks=scan_blocks,
                                        init_from=str(tmp_path / 'source')),
                            str(tmp_path / scan_blocks))
    found[scan_blocks] = responses.run_responses(tmp_path / scan_blocks)
  stds = found['unrolled']['std']
  assert len(stds) == 1 + 2 * 6  # the stem and two 3x3 layers in each of resnet14's 6 blocks
  assert found['stacked']['std'] == pytest.approx(stds, rel=1e-4)
  assert len(set(stds)) == len(stds)  # control: every layer has its own number
