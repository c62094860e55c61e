"""PyTorch interop: converted weights give PyTorch's logits; export round-trips; bad input fails.

The PyTorch references are written here (no torchvision on this machine): torchvision's ResNet
(BasicBlock / Bottleneck with the stride on the 3x3 conv, i.e. v1.5; BottleneckV1 strides the first
1x1 as He 2015 Table 1) and the common CIFAR ResNet whose option A shortcut is a LambdaLayer that
subsamples and pads channels with zeros (He 2015 sec. 4.2). All run in float32 on the CPU.
"""

import functools
import importlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from flax.traverse_util import flatten_dict, unflatten_dict
from torch import nn

from resnet_jax.interop import pytorch as interop
from resnet_jax.models import get_model


def conv(inplanes: int, planes: int, kernel: int, stride: int = 1) -> nn.Conv2d:
  return nn.Conv2d(inplanes, planes, kernel, stride, padding=kernel // 2, bias=False)


class BasicBlock(nn.Module):
  expansion = 1

  def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None):
    super().__init__()
    self.conv1, self.bn1 = conv(inplanes, planes, 3, stride), nn.BatchNorm2d(planes)
    self.conv2, self.bn2 = conv(planes, planes, 3), nn.BatchNorm2d(planes)
    self.downsample = downsample

  def forward(self, x):
    shortcut = x if self.downsample is None else self.downsample(x)
    y = F.relu(self.bn1(self.conv1(x)))
    return F.relu(self.bn2(self.conv2(y)) + shortcut)


class Bottleneck(nn.Module):
  """torchvision's Bottleneck: stride on the 3x3 conv (v1.5)."""

  expansion = 4
  stride_on_1x1 = False

  def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None):
    super().__init__()
    stride1, stride3 = (stride, 1) if self.stride_on_1x1 else (1, stride)
    self.conv1, self.bn1 = conv(inplanes, planes, 1, stride1), nn.BatchNorm2d(planes)
    self.conv2, self.bn2 = conv(planes, planes, 3, stride3), nn.BatchNorm2d(planes)
    self.conv3, self.bn3 = conv(planes, planes * 4, 1), nn.BatchNorm2d(planes * 4)
    self.downsample = downsample

  def forward(self, x):
    shortcut = x if self.downsample is None else self.downsample(x)
    y = F.relu(self.bn1(self.conv1(x)))
    y = F.relu(self.bn2(self.conv2(y)))
    return F.relu(self.bn3(self.conv3(y)) + shortcut)


class BottleneckV1(Bottleneck):
  """He 2015 Table 1 as published: stride on the first 1x1 conv."""

  stride_on_1x1 = True


class PadShortcut(nn.Module):
  """Option A: F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4))."""

  def __init__(self, planes: int):
    super().__init__()
    self.pad = planes // 4

  def forward(self, x):
    return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


def projection(inplanes: int, planes: int, stride: int) -> nn.Module:
  return nn.Sequential(conv(inplanes, planes, 1, stride), nn.BatchNorm2d(planes))


def option_a(inplanes: int, planes: int, stride: int) -> nn.Module:
  return PadShortcut(planes)


class TorchResNet(nn.Module):
  """torchvision's ResNet (imagenet=True, head 'fc') or the CIFAR ResNet (head 'linear')."""

  def __init__(self, block, depths, widths, num_classes: int, imagenet: bool):
    super().__init__()
    stem = 64 if imagenet else widths[0]
    self.conv1 = conv(3, stem, 7, 2) if imagenet else conv(3, stem, 3)
    self.bn1 = nn.BatchNorm2d(stem)
    self.pool = nn.MaxPool2d(3, 2, padding=1) if imagenet else nn.Identity()
    shortcut, inplanes = projection if imagenet else option_a, stem
    self.stages = []
    for s, (depth, planes) in enumerate(zip(depths, widths)):
      blocks = []
      for b in range(depth):
        stride = 2 if s > 0 and b == 0 else 1
        fits = stride == 1 and inplanes == planes * block.expansion
        down = None if fits else shortcut(inplanes, planes * block.expansion, stride)
        blocks.append(block(inplanes, planes, stride, down))
        inplanes = planes * block.expansion
      self.stages.append(nn.Sequential(*blocks))
      self.add_module(f'layer{s + 1}', self.stages[-1])
    self.head_name = 'fc' if imagenet else 'linear'
    self.add_module(self.head_name, nn.Linear(inplanes, num_classes))

  def forward(self, x):
    x = self.pool(F.relu(self.bn1(self.conv1(x))))
    for stage in self.stages:
      x = stage(x)
    return getattr(self, self.head_name)(x.mean((2, 3)))


# name -> (block, stage depths, stage widths, imagenet)
REFERENCES = {
    'resnet8': (BasicBlock, (1, 1, 1), (16, 32, 64), False),
    'resnet20': (BasicBlock, (3, 3, 3), (16, 32, 64), False),
    'resnet18': (BasicBlock, (2, 2, 2, 2), (64, 128, 256, 512), True),
    'resnet50_v1_5': (Bottleneck, (3, 4, 6, 3), (64, 128, 256, 512), True),
    'resnet50': (BottleneckV1, (3, 4, 6, 3), (64, 128, 256, 512), True),
}


def randomized(net: nn.Module) -> nn.Module:
  """Random BN affine parameters and running stats, so that eval-mode BN is tested too."""
  generator = torch.Generator().manual_seed(1)
  with torch.no_grad():
    for module in net.modules():
      if isinstance(module, nn.BatchNorm2d):
        module.weight.uniform_(0.5, 1.5, generator=generator)
        module.bias.normal_(0.0, 0.2, generator=generator)
        module.running_mean.normal_(0.0, 0.2, generator=generator)
        module.running_var.uniform_(0.5, 2.0, generator=generator)
  return net.eval()


def torch_resnet(name: str, num_classes: int) -> TorchResNet:
  block, depths, widths, imagenet = REFERENCES[name]
  return TorchResNet(block, depths, widths, num_classes, imagenet)


@functools.cache
def reference(name: str, num_classes: int) -> nn.Module:
  """The PyTorch twin of our model `name`, with random weights and BN statistics."""
  torch.manual_seed(0)  # PyTorch's default initialisation draws the conv and linear weights
  return randomized(torch_resnet(name, num_classes))


def relative_error(ours: np.ndarray, theirs: np.ndarray) -> float:
  return float(np.linalg.norm(ours - theirs) / np.linalg.norm(theirs))


def logits_of_both(name: str, num_classes: int, size: int, variables=None, net=None):
  """(ours, PyTorch's) eval-mode logits for the same two random images of size x size."""
  net = reference(name, num_classes) if net is None else net
  images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(size))
  with torch.no_grad():
    theirs = net(images).numpy()
  if variables is None:
    variables = interop.from_torch(net.state_dict(), name, num_classes)
  model = get_model(name, num_classes=num_classes)
  ours = model.apply(variables, images.permute(0, 2, 3, 1).numpy(), train=False)
  return np.asarray(ours), theirs


@pytest.mark.parametrize('name, num_classes, size', [
    ('resnet20', 10, 32),
    ('resnet18', 1000, 224),
    ('resnet50_v1_5', 1000, 224),
    ('resnet50', 1000, 64),
])
def test_converted_weights_give_pytorch_logits(name, num_classes, size):
  ours, theirs = logits_of_both(name, num_classes, size)
  error = relative_error(ours, theirs)
  print(f'{name} {size}x{size}: ||ours - torch|| / ||torch|| = {error:.2e}')
  assert ours.shape == theirs.shape == (2, num_classes)
  assert error < 1e-5


def test_running_statistics_matter():
  """Control for the test above: with default BN statistics the logits are far off."""
  variables = interop.from_torch(reference('resnet8', 10).state_dict(), 'resnet8')
  variables['batch_stats'] = unflatten_dict({
      path: np.zeros_like(stats) if path[-1] == 'mean' else np.ones_like(stats)
      for path, stats in flatten_dict(variables['batch_stats']).items()})
  assert relative_error(*logits_of_both('resnet8', 10, 32, variables)) > 1e-2


def test_exported_weights_give_our_logits_in_pytorch():
  """The other direction on its own: random variables of our resnet8 exported to PyTorch."""
  init = functools.partial(get_model('resnet8').init, train=False)
  shapes = jax.eval_shape(init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  rng = np.random.default_rng(0)

  def draw(path, leaf):  # He-scaled conv/dense kernels; positive BN variables and biases
    if path[-1].key == 'kernel':
      return rng.normal(0.0, np.sqrt(2 / np.prod(leaf.shape[:-1])), leaf.shape)
    return rng.uniform(0.5, 1.5, leaf.shape)

  variables = jax.tree_util.tree_map_with_path(draw, shapes)
  net = torch_resnet('resnet8', 10).eval()
  exported = interop.to_torch(variables, 'resnet8')
  net.load_state_dict({key: torch.from_numpy(value) for key, value in exported.items()})
  ours, theirs = logits_of_both('resnet8', 10, 32, variables, net)
  assert relative_error(ours, theirs) < 1e-5


@pytest.mark.parametrize('name, num_classes', [
    ('resnet8', 100), ('resnet20', 10), ('resnet18', 1000), ('resnet50_v1_5', 1000)])
def test_export_round_trips_and_loads_strictly(name, num_classes):
  net = reference(name, num_classes)
  state_dict = {key: value.numpy() for key, value in net.state_dict().items()}
  exported = interop.to_torch(interop.from_torch(state_dict, name, num_classes), name)
  assert list(exported) == list(state_dict)  # the same keys, in PyTorch's order
  for key, value in state_dict.items():
    assert exported[key].dtype == value.dtype and np.array_equal(exported[key], value), key
  fresh = torch_resnet(name, num_classes)
  fresh.load_state_dict({key: torch.from_numpy(value) for key, value in exported.items()},
                        strict=True)
  assert all(torch.equal(fresh.state_dict()[key], value)
             for key, value in net.state_dict().items())


def resnet18_state_dict() -> dict:
  return dict(reference('resnet18', 1000).state_dict())


def test_first_missing_tensor_is_named():
  state_dict = resnet18_state_dict()
  for key in ('fc.bias', 'layer3.0.conv1.weight', 'layer2.0.conv1.weight'):
    del state_dict[key]
  with pytest.raises(ValueError, match=r"no 'layer2\.0\.conv1\.weight' .*\(128, 64, 3, 3\)"):
    interop.from_torch(state_dict, 'resnet18')


def test_misshaped_tensor_is_named():
  state_dict = resnet18_state_dict()
  state_dict['fc.weight'] = torch.zeros(10, 512)
  with pytest.raises(ValueError, match=r"'fc\.weight' has shape \(10, 512\) but resnet18 "
                                       r"with 1000 classes needs \(1000, 512\)"):
    interop.from_torch(state_dict, 'resnet18')


def test_unexpected_tensor_is_named():
  state_dict = resnet18_state_dict()
  state_dict['layer5.0.conv1.weight'] = torch.zeros(1)
  with pytest.raises(ValueError, match=r"1 key\(s\) that resnet18 .* 'layer5\.0\.conv1"):
    interop.from_torch(state_dict, 'resnet18')


def test_dataparallel_prefix_gets_a_hint():
  state_dict = {f'module.{key}': value for key, value in resnet18_state_dict().items()}
  with pytest.raises(ValueError, match=r"no 'conv1\.weight'.*'module\.' prefix"):
    interop.from_torch(state_dict, 'resnet18')


@pytest.mark.parametrize('name, layer', [('resnet20_v2', 'final_bn'), ('highway20', 'gate')])
def test_layers_without_pytorch_counterpart_are_refused(name, layer):
  with pytest.raises(ValueError, match=layer):
    interop.from_torch({}, name)


def test_export_checks_the_variables_against_the_model():
  variables = interop.from_torch(reference('resnet8', 10).state_dict(), 'resnet8')
  with pytest.raises(ValueError, match=r"no 'params/stage1_block2/"):
    interop.to_torch(variables, 'resnet20')


def test_imports_and_converts_numpy_without_torch(monkeypatch):
  state_dict = reference('resnet8', 10).state_dict()
  expected = interop.from_torch(state_dict, 'resnet8')
  arrays = {key: value.numpy() for key, value in state_dict.items()}
  monkeypatch.setitem(sys.modules, 'torch', None)  # any `import torch` now fails
  module = importlib.reload(interop)
  converted = module.from_torch(arrays, 'resnet8')
  converted, expected = flatten_dict(converted), flatten_dict(expected)
  assert converted.keys() == expected.keys()
  assert all(np.array_equal(converted[key], expected[key]) for key in expected)
