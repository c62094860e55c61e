"""The model zoo against the papers' numbers, PyTorch's operators and hand computations."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from resnet_jax.models import MODEL_NAMES, get_model, input_size, parse_name
from resnet_jax.models.blocks import ResNet, conv_and_norm, conv_layer, option_a
from resnet_jax.models.probe import abstract_init, module_calls
from resnet_jax.summary import count_params

# He 2015 sec. 4.2 (0.27M ... 19.4M) / the PyTorch CIFAR reference implementation, exact.
CIFAR_PARAMS = {20: 269_722, 32: 464_154, 44: 658_586, 56: 853_018, 110: 1_727_962,
                1202: 19_421_274}
# torchvision's resnet18 ... resnet152, 1000 classes, exact.
IMAGENET_PARAMS = {18: 11_689_512, 34: 21_797_672, 50: 25_557_032, 101: 44_549_160,
                   152: 60_192_808}
# The three projection shortcuts (1x1 conv + BN) of resnet18/34, which plain18/34 lack:
# 64 -> 128, 128 -> 256, 256 -> 512 channels.
PROJECTIONS_18_34 = sum(c * 2 * c + 2 * (2 * c) for c in (64, 128, 256))


def images(size=32, batch=2, seed=0):
  return np.random.default_rng(seed).normal(size=(batch, size, size, 3)).astype(np.float32)


def init(model, size=32, batch=2):
  """Variables and a batch of images; the same shapes throughout, so that eager ops compile once."""
  x = images(size, batch)
  return model.init(jax.random.key(0), x), x


def random_variables(model, size):
  """Variables drawn with numpy, nothing compiled: He-scaled kernels, BN scales, biases and
  running statistics away from their initial 1 and 0, so that eval-mode BN does something."""
  rng = np.random.default_rng(0)
  draws = {'kernel': lambda shape: rng.normal(0, np.sqrt(2 / np.prod(shape[:-1])), shape),
           'scale': lambda shape: rng.uniform(0.5, 1.5, shape),
           'bias': lambda shape: rng.normal(0, 0.2, shape),
           'mean': lambda shape: rng.normal(0, 0.2, shape),
           'var': lambda shape: rng.uniform(0.5, 2.0, shape)}
  return jax.tree_util.tree_map_with_path(
      lambda path, leaf: draws[path[-1].key](leaf.shape).astype(np.float32),
      abstract_init(model, size)[0])


@functools.cache
def params_of(name):
  """The parameter shapes of `name`, only traced (once per name: resnet1001_v2 takes seconds)."""
  return abstract_init(get_model(name), input_size(name))[0]['params']


def record_calls(model, variables, x, **kwargs):
  """[(path, input, output)] of every module call of model.apply(variables, x, **kwargs), run
  eagerly, in the order the calls start."""
  _, calls = module_calls(lambda: model.apply(variables, x, **kwargs))
  return [(call.name, np.asarray(call.inputs, np.float32), np.asarray(call.output, np.float32))
          for call in calls]


def output_shapes(name, kind=nn.Module):
  """{path: output height and width} of every `kind` call of `name` on one image, only traced."""
  calls = abstract_init(get_model(name), input_size(name))[1]
  return {call.name: call.output.shape[1:3] for call in calls if issubclass(call.kind, kind)}


def preact_params(stem_kernel, stage_sizes, widths, bottleneck, num_classes):
  """Parameters of a pre-activation ResNet counted from the Torch code of He 2016's authors
  (KaimingHe/resnet-1k-layers, resnet-pre-act.lua: CIFAR bottlenecks) and fb.resnet.torch's
  models/preresnet.lua (ImageNet; CIFAR basic units). A bias-free stem convolution of widths[0]
  filters, one BN (scale and bias per channel) that pre-activates the first unit; in each unit a
  BN before every convolution but the first unit's first, bias-free convolutions, and a lone 1x1
  projection convolution where the channel count changes; a final BN; a Linear with bias."""
  c = widths[0]
  total = stem_kernel * stem_kernel * 3 * c + 2 * c
  for s, (n, w) in enumerate(zip(stage_sizes, widths)):
    for b in range(n):
      out = 4 * w if bottleneck else w
      convs = [(1, c, w), (3, w, w), (1, w, out)] if bottleneck else [(3, c, w), (3, w, w)]
      total += sum(k * k * c_in * c_out + 2 * c_in for k, c_in, c_out in convs)
      total -= 2 * c if s == b == 0 else 0  # the stem's BN is the first unit's
      total += c * out if c != out else 0
      c = out
  return total + 2 * c + c * num_classes + num_classes


def relu(a):
  return np.maximum(a, 0)


def pad_a(x, features):
  """Option A by hand: keep every second row and column, zero channels split evenly around."""
  x = x[:, ::2, ::2, :]
  extra = features - x.shape[-1]
  zeros = lambda k: np.zeros(x.shape[:3] + (k,), x.dtype)
  return np.concatenate([zeros(extra // 2), x, zeros(extra - extra // 2)], axis=-1)


@pytest.mark.parametrize('depth', sorted(CIFAR_PARAMS))
def test_cifar_parameter_counts(depth):
  assert count_params(f'resnet{depth}') == CIFAR_PARAMS[depth]
  assert count_params(f'plain{depth}') == CIFAR_PARAMS[depth]


@pytest.mark.parametrize('depth', sorted(IMAGENET_PARAMS))
def test_imagenet_parameter_counts(depth):
  assert count_params(f'resnet{depth}') == IMAGENET_PARAMS[depth]
  assert count_params(f'resnet{depth}_v1_5') == IMAGENET_PARAMS[depth]
  if depth in (18, 34):
    assert count_params(f'plain{depth}') == IMAGENET_PARAMS[depth] - PROJECTIONS_18_34


@pytest.mark.parametrize('name, stem_kernel, stage_sizes, widths, bottleneck, num_classes', [
    ('resnet110_v2', 3, (18,) * 3, (16, 32, 64), False, 10),
    ('resnet164_v2', 3, (18,) * 3, (16, 32, 64), True, 10),
    ('resnet1001_v2', 3, (111,) * 3, (16, 32, 64), True, 10),
    ('resnet18_v2', 7, (2, 2, 2, 2), (64, 128, 256, 512), False, 1000),
    ('resnet50_v2', 7, (3, 4, 6, 3), (64, 128, 256, 512), True, 1000),
])
def test_preactivation_parameters_match_hand_count(name, stem_kernel, stage_sizes, widths,
                                                    bottleneck, num_classes):
  expected = preact_params(stem_kernel, stage_sizes, widths, bottleneck, num_classes)
  assert sum(leaf.size for leaf in jax.tree.leaves(params_of(name))) == expected


@pytest.mark.parametrize('name, paper', [('resnet164_v2', 1.7e6), ('resnet1001_v2', 10.2e6)])
def test_preactivation_parameter_counts(name, paper):
  """He 2016 Table 4 (1.7M, 10.2M). Its counts are the weights (convolution and dense kernels
  and the dense bias) rounded to 0.1M; with BN's scale and bias added ours are 1,703,258 and
  10,327,706, 0.2% and 1.3% above, so the total is held to 1.5%."""
  params = params_of(name)
  leaves = jax.tree_util.tree_leaves_with_path(params)
  weights = sum(leaf.size for path, leaf in leaves if 'bn' not in jax.tree_util.keystr(path))
  assert abs(weights - paper) <= 0.05e6
  assert abs(sum(leaf.size for _, leaf in leaves) - paper) <= 0.015 * paper


def test_shortcut_options_place_projections():
  def projected(name):
    return sorted(k for k, v in params_of(name).items() if 'shortcut_conv' in v)

  all_blocks = [f'stage{s}_block{b}' for s in (1, 2, 3) for b in (1, 2)]
  assert projected('resnet14') == []
  assert projected('plain14') == []
  assert projected('highway14') == []
  assert projected('resnet14_b') == ['stage2_block1', 'stage3_block1']
  assert projected('resnet14_c') == all_blocks
  assert projected('resnet14_v2') == ['stage2_block1', 'stage3_block1']
  assert count_params('resnet14_b') - count_params('resnet14') == (16 * 32 + 64) + (32 * 64 + 128)
  # A pre-activation projection is a lone 1x1 convolution (no BN): its cost over option A.
  option_a_v2 = ResNet(stage_sizes=(2, 2, 2), widths=(16, 32, 64), num_classes=10,
                       preactivation=True, shortcut='A')
  a_params = jax.tree.leaves(abstract_init(option_a_v2, 32)[0]['params'])
  assert count_params('resnet14_v2') - sum(leaf.size for leaf in a_params) == 16 * 32 + 32 * 64


@pytest.mark.parametrize('kwargs, message', [
    (dict(shortcut='D'), r"unknown shortcut 'D': use one of none, A, B, C"),
    (dict(shortcut='none', preactivation=True), r"pre-activation units need a shortcut"),
])
def test_resnet_refuses_bad_shortcuts(kwargs, message):
  with pytest.raises(ValueError, match=message):
    ResNet(stage_sizes=(1,), widths=(4,), num_classes=2, **kwargs)


def test_parameter_tree_names():
  params = params_of('resnet164_v2')
  stages = {f'stage{s}_block{b}' for s in (1, 2, 3) for b in range(1, 19)}
  assert set(params) == {'stem_conv', 'stem_bn', 'final_bn', 'head'} | stages
  assert params['stage2_block2']['conv1']['kernel'].shape == (1, 1, 128, 32)
  assert params['stage3_block18']['conv3']['kernel'].shape == (1, 1, 64, 256)
  resnet50 = params_of('resnet50')
  assert set(resnet50['stage4_block1']) == {'conv1', 'bn1', 'conv2', 'bn2', 'conv3', 'bn3',
                                            'shortcut_conv', 'shortcut_bn'}
  assert {'stem_conv', 'stem_bn', 'head'} < set(resnet50) and 'final_bn' not in resnet50
  highway = params_of('highway8')
  assert set(highway['stage2_block1']) == {'conv1', 'bn1', 'conv2', 'bn2', 'gate'}


@pytest.mark.parametrize('name', ['resnet164_v2', 'resnet50_v2'])
def test_preactivation_units_as_the_torch_codes_of_he_2016(name):
  """resnet-pre-act.lua (CIFAR) and preresnet.lua (ImageNet): a unit is BN-ReLU-conv x3; where
  the shape changes, BN-ReLU is shared before the split and the shortcut is one 1x1 convolution
  (no BN); the first unit takes the stem's activation (no BN of its own); identity elsewhere."""
  params = params_of(name)
  branch = {'bn1', 'conv1', 'bn2', 'conv2', 'bn3', 'conv3'}
  assert set(params['stage1_block1']) == branch - {'bn1'} | {'shortcut_conv'}
  assert set(params['stage1_block2']) == branch
  stages = 3 if input_size(name) == 32 else 4
  for stage in range(2, stages + 1):
    assert set(params[f'stage{stage}_block1']) == branch | {'shortcut_conv'}
  assert 'final_bn' in params and not any('shortcut_bn' in v for v in params.values())


def test_bottleneck_stride_placement():
  """He 2015 Table 1 (v1) and resnet-pre-act.lua (CIFAR v2) stride the first 1x1;
  torchvision (v1.5) and preresnet.lua (ImageNet v2) stride the 3x3."""
  v1, v1_5 = output_shapes('resnet50', nn.Conv), output_shapes('resnet50_v1_5', nn.Conv)
  assert v1['stage2_block1/conv1'] == (28, 28) and v1['stage2_block1/conv2'] == (28, 28)
  assert v1_5['stage2_block1/conv1'] == (56, 56) and v1_5['stage2_block1/conv2'] == (28, 28)
  assert v1['stem_conv'] == (112, 112) and v1['stage1_block1/conv1'] == (56, 56)
  assert v1['stage4_block3/conv3'] == (7, 7)
  v2 = output_shapes('resnet50_v2', nn.Conv)
  assert v2['stage2_block1/conv1'] == (56, 56) and v2['stage2_block1/conv2'] == (28, 28)
  assert v2['stage2_block1/conv3'] == v2['stage2_block1/shortcut_conv'] == (28, 28)
  assert v2['stage4_block1/conv1'] == (14, 14) and v2['stage4_block1/conv2'] == (7, 7)
  cifar = output_shapes('resnet164_v2', nn.Conv)
  assert cifar['stage1_block1/conv1'] == (32, 32) and cifar['stage2_block2/conv1'] == (16, 16)
  assert cifar['stage2_block1/conv1'] == (16, 16) and cifar['stage2_block1/conv2'] == (16, 16)
  assert cifar['stage3_block1/conv1'] == (8, 8) and cifar['stage3_block1/shortcut_conv'] == (8, 8)


def test_option_a_matches_hand_computation_and_pytorch_reference():
  x = np.random.default_rng(0).normal(size=(2, 8, 8, 16)).astype(np.float32)
  ours = np.asarray(option_a(jnp.asarray(x), 32, 2))
  np.testing.assert_array_equal(ours, pad_a(x, 32))
  np.testing.assert_array_equal(ours[..., 8:24], x[:, ::2, ::2, :])
  assert not ours[..., :8].any() and not ours[..., 24:].any()
  # The PyTorch CIFAR reference: F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4)).
  xt = torch.from_numpy(x).permute(0, 3, 1, 2)
  reference = F.pad(xt[:, :, ::2, ::2], (0, 0, 0, 0, 8, 8)).permute(0, 2, 3, 1).numpy()
  np.testing.assert_array_equal(ours, reference)
  odd = np.asarray(option_a(jnp.asarray(x[..., :3]), 8, 1))
  np.testing.assert_array_equal(odd[..., 2:5], x[..., :3])
  assert not odd[..., :2].any() and not odd[..., 5:].any()


def test_option_a_block_in_network():
  """resnet8's stage2_block1 output is relu(bn2 + subsampled, zero-padded input)."""
  model = get_model('resnet8')
  variables, x = init(model)
  calls = {path: (i, o) for path, i, o in record_calls(model, variables, x)}
  block_in, block_out = calls['stage2_block1']
  np.testing.assert_allclose(block_out, relu(calls['stage2_block1/bn2'][1] + pad_a(block_in, 32)),
                             rtol=1e-5, atol=1e-5)


def test_convolutions_and_pooling_align_with_pytorch():
  """Stride-2 convolutions and the stem max-pool sample the same positions as PyTorch's
  padding=k//2 layers (and as option A's x[::2]), so PyTorch weights compute the same function."""
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2, 16, 16, 4)).astype(np.float32)
  xt = torch.from_numpy(x).permute(0, 3, 1, 2)
  conv, _ = conv_and_norm(jnp.float32, train=False)
  for kernel in (1, 3, 7):
    layer = conv_layer(conv, 5, kernel, 2, name='c')
    params = layer.init(jax.random.key(0), x)
    ours = np.asarray(layer.apply(params, x))
    weight = torch.from_numpy(np.array(params['params']['kernel'])).permute(3, 2, 0, 1)
    theirs = F.conv2d(xt, weight, stride=2, padding=kernel // 2).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)
  ours = np.asarray(nn.max_pool(jnp.asarray(x), (3, 3), strides=(2, 2), padding=((1, 1), (1, 1))))
  theirs = F.max_pool2d(xt, 3, 2, 1).permute(0, 2, 3, 1).numpy()
  np.testing.assert_array_equal(ours, theirs)


def max_pool(a):
  """PyTorch's MaxPool2d(3, 2, padding=1), the ImageNet stem's pooling, on NHWC arrays."""
  pooled = F.max_pool2d(torch.from_numpy(a).permute(0, 3, 1, 2), 3, 2, 1)
  return pooled.permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize('name, size', [('resnet8_v2', 32), ('resnet164_v2', 32),
                                        ('resnet50_v2', 64)])
def test_preactivation_units_apply_bn_relu_before_each_conv(name, size):
  """He 2016 Fig. 1b and the Torch codes: every conv{i} reads relu(bn{i}); the first unit reads
  the stem's BN-ReLU (max-pooled on ImageNet); a projection reads the pre-activated input and
  adds its lone convolution, an identity shortcut adds the raw input; final BN-ReLU, pooling."""
  model = get_model(name)
  x = images(size)
  calls = record_calls(model, random_variables(model, size), x)
  order = [path for path, _, _ in calls]
  out = {path: o for path, _, o in calls}
  inp = {path: i for path, i, _ in calls}
  stem = relu(out['stem_bn'])
  np.testing.assert_allclose(inp['stage1_block1'], stem if size == 32 else max_pool(stem),
                             rtol=1e-6, atol=1e-6)
  blocks = [p for p in order if p.startswith('stage') and '/' not in p]
  for block in blocks:
    convs = [p for p in order if p.startswith(block + '/conv')]
    for conv in convs:
      bn = conv.replace('/conv', '/bn')
      if bn == 'stage1_block1/bn1':
        np.testing.assert_array_equal(inp[conv], inp[block])
        continue
      assert order.index(bn) < order.index(conv)
      np.testing.assert_allclose(inp[conv], relu(out[bn]), rtol=1e-6, atol=1e-6)
    shortcut = inp[block]
    if block + '/shortcut_conv' in out:
      np.testing.assert_allclose(inp[block + '/shortcut_conv'], inp[convs[0]], atol=1e-6)
      shortcut = out[block + '/shortcut_conv']
    np.testing.assert_allclose(out[block], out[convs[-1]] + shortcut, rtol=1e-5, atol=1e-5)
  assert not any('shortcut_bn' in p for p in order) and 'stage1_block1/bn1' not in out
  assert 'stage2_block1/shortcut_conv' in out and 'stage2_block2/shortcut_conv' not in out
  np.testing.assert_allclose(inp['final_bn'], out[blocks[-1]], rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(inp['head'], relu(out['final_bn']).mean(axis=(1, 2)), rtol=1e-5,
                             atol=1e-6)


def test_post_activation_unit_order():
  calls = abstract_init(get_model('resnet8_b'), 32)[1]
  block = [call.name for call in calls if call.name.startswith('stage2_block1/')]
  assert block == ['stage2_block1/' + p for p in
                   ('conv1', 'bn1', 'conv2', 'bn2', 'shortcut_conv', 'shortcut_bn')]


def test_highway_gate_mixes_branch_and_shortcut():
  model = get_model('highway8')
  variables, x = init(model)
  gate = variables['params']['stage2_block1']['gate']
  np.testing.assert_array_equal(gate['bias'], -1.0)
  calls = {p: (i, o) for p, i, o in record_calls(model, variables, x)}
  block_in, block_out = calls['stage2_block1']
  branch, carry = calls['stage2_block1/bn2'][1], pad_a(block_in, 32)
  t = 1 / (1 + np.exp(-calls['stage2_block1/gate'][1]))
  assert 0.2 < t.mean() < 0.35  # sigmoid(-1) = 0.27 at initialisation: mostly carry
  np.testing.assert_allclose(block_out, relu(t * branch + (1 - t) * carry), rtol=1e-5, atol=1e-5)
  low, high = np.minimum(branch, carry), np.maximum(branch, carry)
  assert np.all(relu(low) - 1e-5 <= block_out) and np.all(block_out <= relu(high) + 1e-5)
  assert np.abs(branch - carry).max() > 0.1  # the two paths differ, so the check has teeth


@pytest.mark.parametrize('name', ['resnet8', 'resnet8_v2'])
def test_stream_barriers_add_barriers_and_no_variables(name):
  """A barrier after the stem and after each of the 3 blocks, none without the option (the check
  can fail); the same variables either way."""
  model = get_model(name)
  barred = model.clone(stream_barriers=True)
  variables, x = init(model)
  jax.tree.map(np.testing.assert_array_equal, init(barred)[0], variables)
  for net, count in ((barred, 4), (model, 0)):
    text = jax.jit(functools.partial(net.apply, train=False)).lower(variables, x).as_text()
    assert text.count('stablehlo.optimization_barrier') == count


def test_eval_uses_running_statistics_train_updates_them():
  model = get_model('resnet8')
  variables, x = init(model)
  other = np.concatenate([x[:1], images(seed=1)[1:]])  # same first image, another second one
  logits, state = model.apply(variables, x, train=False, mutable=['batch_stats'])
  jax.tree.map(np.testing.assert_array_equal, state['batch_stats'], variables['batch_stats'])
  # Eval normalises each image with the running statistics: other images don't matter.
  np.testing.assert_allclose(model.apply(variables, other, train=False)[0], logits[0], rtol=1e-5,
                             atol=1e-5)
  # Train normalises with the batch's statistics and moves the running ones by momentum 0.9.
  calls = {p: o for p, _, o in record_calls(model, variables, x, train=True,
                                            mutable=['batch_stats'])}
  train_logits, state = model.apply(variables, x, train=True, mutable=['batch_stats'])
  other_logits, _ = model.apply(variables, other, train=True, mutable=['batch_stats'])
  assert not np.allclose(other_logits[0], train_logits[0], atol=1e-3)
  stem = calls['stem_conv'].astype(np.float64)
  stats = state['batch_stats']['stem_bn']
  np.testing.assert_allclose(stats['mean'], 0.1 * stem.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(stats['var'], 0.9 + 0.1 * stem.var(axis=(0, 1, 2)), rtol=1e-4)
  normalised = (stem - stem.mean(axis=(0, 1, 2))) / np.sqrt(stem.var(axis=(0, 1, 2)) + 1e-5)
  np.testing.assert_allclose(calls['stem_bn'], normalised, rtol=1e-3, atol=1e-3)


def test_bfloat16_compute_float32_parameters():
  model = get_model('resnet8', dtype=jnp.bfloat16)
  variables, x = init(model)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))
  logits = model.apply(variables, x, train=False)
  assert logits.dtype == jnp.bfloat16 and logits.shape == (2, 10)
  reference = get_model('resnet8').apply(variables, x, train=False)
  np.testing.assert_allclose(np.asarray(logits, np.float32), reference, rtol=0.1, atol=0.1)
  logits, _ = model.apply(variables, x, train=True, mutable=['batch_stats'])
  assert logits.dtype == jnp.bfloat16


def test_he_normal_initialisation():
  """He 2015b: zero-mean Gaussian with variance 2 / fan_in, fan_in = 3 * 3 * 64 here."""
  variables, _ = init(get_model('resnet8'))
  kernel = np.asarray(variables['params']['stage3_block1']['conv2']['kernel'])
  std = np.sqrt(2 / (3 * 3 * 64))
  assert abs(kernel.mean()) < 0.02 * std
  assert abs(kernel.std() / std - 1) < 0.02
  assert np.abs(kernel).max() > 3 * std  # a plain Gaussian, not one truncated at 2 std


@pytest.mark.parametrize('name, last_bn', [('resnet8', 'bn2'), ('resnet8_v2', 'bn2')])
def test_zero_init_residual(name, last_bn):
  model = get_model(name, zero_init_residual=True)
  variables, x = init(model)
  for key, block in variables['params'].items():
    if key.startswith('stage'):
      np.testing.assert_array_equal(block[last_bn]['scale'], 0.0)
      assert np.all(np.asarray(block['conv1']['kernel']) != 0)
  calls = {p: (i, o) for p, i, o in record_calls(model, variables, x)}
  block_in, block_out = calls['stage1_block1']
  expected = relu(block_in) if name == 'resnet8' else block_in  # the branch adds nothing
  np.testing.assert_allclose(block_out, expected, atol=1e-6)
  default = init(get_model(name))[0]['params']['stage1_block1'][last_bn]['scale']
  np.testing.assert_array_equal(default, 1.0)


def test_registry_names_families_and_defaults():
  assert input_size('resnet20') == 32 and input_size('resnet50') == 224
  assert parse_name('resnet50') == ('imagenet', 'resnet', 50)
  assert parse_name('resnet152_v2') == ('imagenet', 'resnet_v2', 152)
  assert parse_name('resnet50_b') == ('cifar', 'resnet_b', 50)  # CIFAR-only suffix
  assert parse_name('plain50') == ('cifar', 'plain', 50)  # no ImageNet plain-50
  assert parse_name('resnet110_v2') == ('cifar', 'resnet_v2', 110)
  assert get_model('resnet8').num_classes == 10 and get_model('resnet18').num_classes == 1000
  assert get_model('resnet8', num_classes=100).num_classes == 100
  for name in MODEL_NAMES:
    parse_name(name)


@pytest.mark.parametrize('name', ['resnet21', 'resnet170_v2', 'resnet0', 'foo', 'resnet20_v1_5',
                                  'plain20_v2', 'highway18', 'resnet018', 'ResNet20', ''])
def test_bad_names_raise_one_line_listing_forms(name):
  with pytest.raises(ValueError) as error:
    get_model(name)
  message = str(error.value)
  assert '\n' not in message and repr(name) in message
  assert 'resnet{6n+2}' in message and 'resnet{9n+2}_UNIT' in message and 'resnet20' in message


def test_impossible_depth_says_why():
  with pytest.raises(ValueError, match=r'not 6n\+2'):
    get_model('resnet21')
  with pytest.raises(ValueError, match=r'not 9n\+2 .*bottleneck'):
    get_model('resnet170_v2')


@pytest.mark.parametrize('num_classes', [0, -1, 2.5, True])
def test_bad_num_classes(num_classes):
  with pytest.raises(ValueError, match='num_classes'):
    get_model('resnet8', num_classes=num_classes)
