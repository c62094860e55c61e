"""The unit variants of He et al. 2016 ("Identity Mappings"): the shortcuts of Fig. 2 / Table 1 and
the activations of Fig. 4 / Table 2, against hand counts and hand computations."""

import functools

import jax
import numpy as np
import pytest

from resnet_jax.interop import pytorch as interop
from resnet_jax.models import MODEL_NAMES, get_model, parse_name
from resnet_jax.models.blocks import GATE_BIAS, Mixing, ResNet
from resnet_jax.models.probe import abstract_init, module_calls
from resnet_jax.study import papers
from tests.models.test_models import random_variables

ACTIVATION_UNITS = ('v1', 'bn_after_add', 'relu_before_add', 'relu_preact', 'v2')  # Fig. 4 (a)-(e)
SHORTCUT_UNITS = ('scale_shortcut', 'scale_both', 'exclusive_gate_b6', 'exclusive_gate_b0',
                  'shortcut_gate_b0', 'shortcut_gate_b6', 'conv_shortcut', 'dropout_shortcut')
UNITS = ACTIVATION_UNITS + SHORTCUT_UNITS
# The counts of the README's model table; the hand formula below must agree with them.
REPORTED = {'resnet110_v1': 1_730_714, 'resnet110_exclusive_gate_b6': 1_826_938,
            'resnet110_shortcut_gate_b6': 1_826_938, 'resnet110_conv_shortcut': 1_826_202,
            'resnet110_v2': 1_730_522, 'resnet164_v1': 1_704_154,
            'resnet164_exclusive_gate_b6': 3_216_474, 'resnet164_shortcut_gate_b6': 3_216_474,
            'resnet164_conv_shortcut': 3_181_658, 'resnet164_v2': 1_703_258,
            'resnet8_v1': 78_042, 'resnet8_v2': 77_850, 'resnet8_exclusive_gate_b6': 80_970,
            'resnet8_conv_shortcut': 78_330, 'resnet1001_v1': 10_328_602,
            'resnet1001_v2': 10_327_706}


def hand_params(depth: int, unit: str) -> int:
  """Parameters of resnet{depth}_{unit} counted by hand. A 3x3 stem of 16 filters with BN (scale
  and bias per channel); stages of 16/32/64 (x4 for bottlenecks from depth 164 on, 9n+2 layers);
  bias-free convolutions. Post-activation units: a BN after every convolution (bn_after_add's
  last one after the addition, same size), a 1x1 projection + BN where the channel count changes
  (every unit for conv_shortcut), for gates a 1x1 convolution with bias. Full pre-activation
  (v2): a BN before every convolution on its input channels but the first unit's first (the
  stem's), projections without BN, a final BN. A Linear of 10 classes with bias."""
  bottleneck = depth >= 164
  n = (depth - 2) // (9 if bottleneck else 6)
  preact = unit == 'v2'
  c, total = 16, 3 * 3 * 3 * 16 + 2 * 16
  for s, w in enumerate((16, 32, 64)):
    for b in range(n):
      out = 4 * w if bottleneck else w
      convs = [(1, c, w), (3, w, w), (1, w, out)] if bottleneck else [(3, c, w), (3, w, w)]
      total += sum(k * k * c_in * c_out + 2 * (c_in if preact else c_out)
                   for k, c_in, c_out in convs)
      total -= 2 * 16 if preact and s == b == 0 else 0
      if c != out or unit == 'conv_shortcut':
        total += c * out + (0 if preact else 2 * out)
      total += c * out + out if 'gate' in unit else 0
      c = out
  return total + (2 * c if preact else 0) + 10 * c + 10


def count(name: str) -> int:
  """The parameters of `name`, only traced (jax.eval_shape)."""
  return sum(leaf.size for leaf in jax.tree.leaves(params_of(name)))


@functools.cache
def params_of(name: str) -> dict:
  return abstract_init(get_model(name), 32)[0]['params']


def test_hand_formula_agrees_with_the_readme_counts():
  for name, expected in REPORTED.items():
    depth, _, unit = name.removeprefix('resnet').partition('_')
    assert hand_params(int(depth), unit) == expected, name


@pytest.mark.parametrize('depth', [8, 110, 164])
@pytest.mark.parametrize('unit', UNITS)
def test_parameter_counts(depth, unit):
  assert count(f'resnet{depth}_{unit}') == hand_params(depth, unit)


@pytest.mark.parametrize('unit', UNITS)
def test_he2016_units_are_bottlenecks_from_164(unit):
  """He 2016 Table 2: ResNet-164 of every unit has 18 bottleneck units per stage."""
  params = params_of(f'resnet164_{unit}')
  assert params['stage3_block18']['conv3']['kernel'].shape == (1, 1, 64, 256)
  assert 'conv3' not in params_of(f'resnet8_{unit}')['stage1_block1']


def test_he2015_variants_keep_basic_blocks_at_any_depth():
  assert parse_name('resnet164_b') == ('cifar', 'resnet_b', 164)
  assert 'conv3' not in params_of('resnet164_b')['stage1_block1']
  assert get_model('resnet1202').stage_sizes == (200,) * 3


def images(seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).normal(size=(2, 32, 32, 3)).astype(np.float32)


def calls_of(model: ResNet, variables: dict, x: np.ndarray, **kwargs) -> dict:
  """{path: (input, output)} of every module call of model.apply, run eagerly."""
  _, calls = module_calls(lambda: model.apply(variables, x, **kwargs))
  return {call.name: (np.asarray(call.inputs), np.asarray(call.output)) for call in calls}


def relu(a):
  return np.maximum(a, 0)


def sigmoid(a):
  return 1 / (1 + np.exp(-a))


class Block:
  """One block's layers by hand, from its own parameters and running statistics (eval mode)."""

  def __init__(self, variables: dict, block: str, strides: int):
    self.params = dict(variables['params'][block])
    self.stats = dict(variables['batch_stats'][block])
    self.strides = strides

  def conv(self, name: str, x: np.ndarray) -> np.ndarray:
    """PyTorch-style padding k // 2; the block's stride on all but conv2 (basic units)."""
    kernel = np.asarray(self.params[name]['kernel'])
    k, s = kernel.shape[0], 1 if name == 'conv2' else self.strides
    y = jax.lax.conv_general_dilated(x, kernel, (s, s), [(k // 2, k // 2)] * 2,
                                     dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    return np.asarray(y) + np.asarray(self.params[name].get('bias', 0))

  def bn(self, name: str, x: np.ndarray) -> np.ndarray:
    p, s = self.params[name], self.stats[name]
    return (x - s['mean']) / np.sqrt(s['var'] + 1e-5) * p['scale'] + p['bias']

  def shortcut(self, x: np.ndarray, bn: bool = True) -> np.ndarray:
    """Identity, or the 1x1 projection (with BN in the post-activation units)."""
    if 'shortcut_conv' not in self.params:
      return x
    y = self.conv('shortcut_conv', x)
    return self.bn('shortcut_bn', y) if bn else y

  def unit(self, unit: str, x: np.ndarray) -> np.ndarray:
    """He 2016 Fig. 4 (a)-(e) on x."""
    first = lambda a: relu(self.bn('bn1', self.conv('conv1', a)))
    if unit == 'v1':
      return relu(self.bn('bn2', self.conv('conv2', first(x))) + self.shortcut(x))
    if unit == 'bn_after_add':
      return relu(self.bn('add_bn', self.conv('conv2', first(x)) + self.shortcut(x)))
    if unit == 'relu_before_add':
      return relu(self.bn('bn2', self.conv('conv2', first(x)))) + self.shortcut(x)
    if unit == 'relu_preact':
      a = relu(x)
      identity = 'shortcut_conv' not in self.params
      return self.bn('bn2', self.conv('conv2', first(a))) + (x if identity else self.shortcut(a))
    a = relu(self.bn('bn1', x))
    identity = 'shortcut_conv' not in self.params
    f = self.conv('conv2', relu(self.bn('bn2', self.conv('conv1', a))))
    return f + (x if identity else self.shortcut(a, bn=False))


def unit_output(unit: str, block: str, strides: int):
  """The block's input and output in resnet14_{unit} (two units a stage; eval mode, random
  variables), and the hand Block of its parameters."""
  model = get_model(f'resnet14_{unit}')
  variables = random_variables(model, 32)
  calls = calls_of(model, variables, images())
  return calls[block], Block(variables, block, strides), calls


@pytest.mark.parametrize('block, strides', [('stage1_block2', 1), ('stage2_block1', 2)])
@pytest.mark.parametrize('unit', ACTIVATION_UNITS)
def test_activation_units_match_hand_computation(unit, block, strides):
  """He 2016 Fig. 4: where BN and ReLU stand in each unit, on an identity and a projection unit."""
  (x, out), hand, _ = unit_output(unit, block, strides)
  np.testing.assert_allclose(out, hand.unit(unit, x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('unit', ACTIVATION_UNITS)
def test_hand_computations_tell_the_units_apart(unit):
  """The control: on the same identity block, every other unit's hand formula misses (bn2 and
  add_bn stand in for each other, so that each formula can be evaluated)."""
  (x, out), hand, _ = unit_output(unit, 'stage1_block2', 1)
  bn = hand.params.get('bn2', hand.params.get('add_bn'))
  hand.params.setdefault('bn2', bn)
  hand.params.setdefault('add_bn', bn)
  stats = hand.stats.get('bn2', hand.stats.get('add_bn'))
  hand.stats.setdefault('bn2', stats)
  hand.stats.setdefault('add_bn', stats)
  for other in ACTIVATION_UNITS:
    if other != unit:
      assert np.abs(hand.unit(other, x) - out).max() > 1e-2, other


def test_relu_preact_ends_with_a_relu():
  """He 2016 appendix: an extra activation after the last unit's addition (ReLU-only here); the
  last unit's sum has negative entries, so pooling it without the ReLU (the control) differs."""
  _, _, calls = unit_output('relu_preact', 'stage3_block2', 1)
  last = calls['stage3_block2'][1]
  np.testing.assert_allclose(calls['head'][0], relu(last).mean(axis=(1, 2)), rtol=1e-5,
                             atol=1e-5)
  assert np.abs(calls['head'][0] - last.mean(axis=(1, 2))).max() > 1e-3


def test_v1_and_conv_shortcut_are_options_b_and_c():
  """Below 164, resnet{N}_v1 is resnet{N}_b and resnet{N}_conv_shortcut is resnet{N}_c."""
  x = images()
  for he2016, he2015 in (('resnet8_v1', 'resnet8_b'), ('resnet8_conv_shortcut', 'resnet8_c')):
    variables = random_variables(get_model(he2015), 32)
    np.testing.assert_array_equal(get_model(he2016).apply(variables, x),
                                  get_model(he2015).apply(variables, x))


@pytest.mark.parametrize('unit, bias', [('exclusive_gate_b6', -6), ('exclusive_gate_b0', 0),
                                        ('shortcut_gate_b7', -7), ('shortcut_gate_b12', -12)])
def test_gate_bias_is_initialised_to_minus_k(unit, bias):
  model = get_model(f'resnet8_{unit}')
  variables = model.init(jax.random.key(0), images())
  for block in ('stage1_block1', 'stage2_block1', 'stage3_block1'):
    np.testing.assert_array_equal(variables['params'][block]['gate']['bias'], bias)
  assert model.mixing.gate_bias == bias


@pytest.mark.parametrize('block, strides', [('stage1_block2', 1), ('stage2_block1', 2)])
@pytest.mark.parametrize('unit', ['exclusive_gate_b6', 'shortcut_gate_b0', 'scale_shortcut',
                                  'scale_both'])
def test_scaling_and_gating_match_hand_computation(unit, block, strides):
  """He 2016 Fig. 2: relu(lambda_F g F + lambda_h (1 - g) h), g = sigmoid(1x1 conv(x) + b_g)."""
  (x, out), hand, calls = unit_output(unit, block, strides)
  branch, shortcut = calls[f'{block}/bn2'][1], hand.shortcut(x)
  g = sigmoid(hand.conv('gate', x)) if 'gate' in hand.params else 0
  on_branch, on_shortcut = {'exclusive_gate_b6': (g, 1 - g), 'shortcut_gate_b0': (1, 1 - g),
                            'scale_shortcut': (1, 0.5), 'scale_both': (0.5, 0.5)}[unit]
  np.testing.assert_allclose(out, relu(on_branch * branch + on_shortcut * shortcut), rtol=1e-4,
                             atol=1e-4)
  assert np.abs(relu(branch + shortcut) - out).max() > 1e-2  # differs from the plain addition


def test_highway_is_exclusive_gating_with_option_a():
  """One gate implementation: highway{N} is exclusive gating with b_g = -1 on option A."""
  highway = get_model('highway8')
  assert highway.mixing == Mixing(gate='exclusive', gate_bias=GATE_BIAS) and GATE_BIAS == -1
  gated = ResNet(stage_sizes=(1, 1, 1), widths=(16, 32, 64), num_classes=10, shortcut='A',
                 mixing=Mixing(gate='exclusive', gate_bias=-1.0))
  variables = random_variables(highway, 32)
  np.testing.assert_array_equal(gated.apply(variables, images()),
                                highway.apply(variables, images()))


def test_dropout_shortcut_eval_expectation():
  """He 2016 Fig. 2f, non-inverted dropout: in evaluation the shortcut is scaled by 0.5."""
  (x, out), hand, calls = unit_output('dropout_shortcut', 'stage2_block1', 2)
  branch = calls['stage2_block1/bn2'][1]
  np.testing.assert_allclose(out, relu(0.5 * hand.shortcut(x) + branch), rtol=1e-4, atol=1e-4)


def test_dropout_shortcut_training_keeps_about_half_unscaled():
  model = get_model('resnet14_dropout_shortcut')
  variables = random_variables(model, 32)
  x = images()

  def run(seed):
    return calls_of(model, variables, x, train=True, mutable=['batch_stats'],
                    rngs={'dropout': jax.random.key(seed)})

  calls = run(0)
  block_in, out = calls['stage1_block2']
  branch = calls['stage1_block2/bn2'][1]
  # Where F > 0 the sum passes the ReLU whatever the mask (the input is >= 0, a ReLU's output).
  passed = (branch > 1e-3) & (block_in > 1e-2)
  kept = np.isclose(out - branch, block_in, atol=1e-4)
  dropped = np.isclose(out, relu(branch), atol=1e-4)
  assert np.all(kept | dropped)
  assert 0.45 < kept[passed].mean() < 0.55  # each element kept with probability 0.5, unscaled
  np.testing.assert_array_equal(run(0)['stage1_block2'][1], out)
  assert not np.allclose(run(1)['stage1_block2'][1], out)


def test_registry_parses_he2016_names():
  assert parse_name('resnet110_exclusive_gate_b6') == ('cifar', 'resnet_exclusive_gate_b6', 110)
  assert parse_name('resnet164_bn_after_add') == ('cifar', 'resnet_bn_after_add', 164)
  assert parse_name('resnet1001_v1') == ('cifar', 'resnet_v1', 1001)
  assert parse_name('resnet50_v1') == ('cifar', 'resnet_v1', 50)  # ImageNet has no _v1 suffix
  assert get_model('resnet110_shortcut_gate_b0').mixing == Mixing(gate='shortcut')
  assert get_model('resnet110_v1').shortcut == 'B'
  assert get_model('resnet110_conv_shortcut').shortcut == 'C'
  assert get_model('resnet164_v1').stage_sizes == (18,) * 3
  for name in MODEL_NAMES + tuple(papers.HE2016):
    parse_name(name)
  for unit in UNITS:
    assert f'resnet110_{unit}' in MODEL_NAMES or 'gate' in unit
    assert f'resnet164_{unit}' in MODEL_NAMES or unit not in ACTIVATION_UNITS


@pytest.mark.parametrize('name', ['resnet110_exclusive_gate_b06', 'resnet110_gate_b6',
                                  'resnet110_exclusive_gate', 'resnet110_exclusive_gate_b-6',
                                  'resnet110_v3', 'plain110_v1', 'highway110_scale_both',
                                  'resnet110_scale_shortcut_', 'resnet110__v1', 'resnet56_v1_5'])
def test_unknown_he2016_names_raise_one_line(name):
  with pytest.raises(ValueError) as error:
    get_model(name)
  message = str(error.value)
  assert '\n' not in message and repr(name) in message
  assert 'exclusive_gate_b{K}' in message and 'resnet{9n+2}_UNIT' in message


@pytest.mark.parametrize('name', ['resnet165_v1', 'resnet170_v2', 'resnet166_dropout_shortcut',
                                  'resnet1000_v1'])
def test_impossible_he2016_depths(name):
  with pytest.raises(ValueError, match=r'^impossible model .* is not 9n\+2 ') as error:
    get_model(name)
  assert '\n' not in str(error.value)


def test_impossible_depth_says_bottleneck():
  with pytest.raises(ValueError, match=r"impossible model 'resnet165_v1': depth 165 is not "
                                       r"9n\+2 .*bottleneck"):
    get_model('resnet165_v1')
  with pytest.raises(ValueError, match=r"not 6n\+2"):
    get_model('resnet111_scale_both')


@pytest.mark.parametrize('kwargs, message', [
    (dict(activation='bn_before'), r"unknown activation 'bn_before'"),
    (dict(mixing=Mixing(gate='both')), r"unknown gate 'both'"),
    (dict(preactivation=True, activation='relu_preact'), r'post-activation residual unit'),
    (dict(shortcut='none', mixing=Mixing(dropout=0.5)), r'post-activation residual unit'),
    (dict(activation='bn_after_add', zero_init_residual=True), r'bn_after_add lacks'),
])
def test_resnet_refuses_impossible_units(kwargs, message):
  with pytest.raises(ValueError, match=message):
    ResNet(stage_sizes=(1,), widths=(4,), num_classes=2, **kwargs)


@pytest.mark.parametrize('name, what', [
    ('resnet8_bn_after_add', "the 'bn_after_add' unit"),
    ('resnet8_relu_before_add', "the 'relu_before_add' unit"),
    ('resnet8_relu_preact', "the 'relu_preact' unit"),
    ('resnet8_exclusive_gate_b6', 'exclusive gates'),
    ('resnet8_shortcut_gate_b0', 'shortcut gates'),
    ('resnet8_scale_shortcut', 'constant scaling'), ('resnet8_scale_both', 'constant scaling'),
    ('resnet8_dropout_shortcut', 'a dropout shortcut'),
])
def test_interop_refuses_unmappable_variants_in_one_line(name, what):
  variables = jax.tree.map(np.asarray, random_variables(get_model(name), 32))
  for convert in (lambda: interop.to_torch(variables, name),
                  lambda: interop.from_torch({}, name)):
    with pytest.raises(ValueError) as error:
      convert()
    message = str(error.value)
    assert '\n' not in message and message.startswith(f'{name} has {what}')
    assert 'resnet{N}_v1' in message


def test_interop_converts_v1_as_option_b():
  variables = jax.tree.map(np.asarray, random_variables(get_model('resnet8_b'), 32))
  ours, theirs = interop.to_torch(variables, 'resnet8_v1'), interop.to_torch(variables, 'resnet8_b')
  assert list(ours) == list(theirs)
  jax.tree.map(np.testing.assert_array_equal, ours, theirs)
  back = interop.from_torch(ours, 'resnet8_v1')
  jax.tree.map(np.testing.assert_array_equal, back, variables)
