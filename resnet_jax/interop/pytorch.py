"""PyTorch state_dict <-> our flax variables for the ResNets of He et al. 2015.

Two PyTorch layouts are read and written, chosen from the model name:

- 'torchvision' (ImageNet family, He 2015 Table 1): torchvision's ResNet-18/34/50/101/152, i.e.
  conv1, bn1, layer{s}.{i}.conv1/bn1/conv2/bn2(/conv3/bn3), layer{s}.0.downsample.0 (projection
  conv) / .1 (its BN), fc. torchvision puts the stride on the 3x3 conv (our `resnetN_v1_5`);
  `resnetN` (v1, stride on the first 1x1 conv) has the same tensors.
- 'cifar' (CIFAR family, He 2015 sec. 4.2): the common PyTorch CIFAR ResNet, i.e. conv1, bn1,
  layer{1..3}.{i}.conv1/bn1/conv2/bn2, linear. Option A shortcuts hold no tensors; projection
  shortcuts (options B, C) are shortcut.0 / shortcut.1. Of He 2016's units, resnet{N}_v1 (the
  original unit with option B, resnet{N}_b) and resnet{N}_conv_shortcut (option C) are converted;
  the other activation orders, scaled, gated and dropout shortcuts compute functions no PyTorch
  ResNet of these layouts computes, and are refused by name.

Both layouts of our variables (resnet_jax/models/layout.py) convert: the mapping is built on the
unrolled one, to_torch unrolls stacked variables first and from_torch returns the layout the
model is built in (get_model's scan_blocks).

Conv OIHW <-> HWIO, Linear (out, in) <-> Dense (in, out), BatchNorm weight/bias/running_mean/
running_var <-> scale/bias/mean/var. The mapping is built by walking our own variable tree, so
every tensor is checked (name and shape) in network order before anything is converted.
torch itself is never imported: torch tensors are read through their own `.detach()`.
"""

import functools
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from resnet_jax.models import get_model, input_size
from resnet_jax.models.blocks import ResNet
from resnet_jax.models.layout import convert_layout, scans
from resnet_jax.models.probe import abstract_init


class Layout(NamedTuple):
  """How a PyTorch ResNet names what differs between implementations."""

  head: str  # the classifier Linear
  shortcut: str  # the projection shortcut Sequential(conv, bn)


LAYOUTS = {
    'torchvision': Layout(head='fc', shortcut='downsample'),
    'cifar': Layout(head='linear', shortcut='shortcut'),
}

# (collection, our leaf) -> PyTorch tensor name, in PyTorch's state_dict order.
_LEAVES = {
    ('params', 'kernel'): 'weight',
    ('params', 'scale'): 'weight',
    ('params', 'bias'): 'bias',
    ('batch_stats', 'mean'): 'running_mean',
    ('batch_stats', 'var'): 'running_var',
}
# Axis permutation from our array to PyTorch's, by rank: HWIO -> OIHW, (in, out) -> (out, in).
_TO_TORCH_AXES = {4: (3, 2, 0, 1), 2: (1, 0)}
_BLOCK = re.compile(r'stage(\d+)_block(\d+)')
_BLOCK_LAYER = re.compile(r'(conv|bn)\d')
_CONVERTIBLE = ('convert resnet{N}_v1, resnet{N}_conv_shortcut or another plain/resnet (v1, v1.5, '
                'CIFAR option A/B/C) model instead')


class _Tensor(NamedTuple):
  ours: str  # 'params/stage1_block1/conv1/kernel'
  module: str  # 'layer1.0.conv1'
  name: str  # 'weight'
  axes: tuple[int, ...]  # permutation of our array into PyTorch's
  shape: tuple[int, ...]  # our shape

  @property
  def key(self) -> str:
    return f'{self.module}.{self.name}'

  @property
  def torch_shape(self) -> tuple[int, ...]:
    return tuple(self.shape[axis] for axis in self.axes)


def layout_name(model_name: str) -> str:
  """'cifar' for the CIFAR family (32x32 inputs), 'torchvision' for the ImageNet family."""
  return 'cifar' if input_size(model_name) == 32 else 'torchvision'


def _torch_module(path: tuple[str, ...], layout: Layout) -> str | None:
  """Our module path -> the PyTorch module name, or None where the layout has no counterpart."""
  top = {('stem_conv',): 'conv1', ('stem_bn',): 'bn1', ('head',): layout.head}
  if path in top:
    return top[path]
  if len(path) != 2 or not (block := _BLOCK.fullmatch(path[0])):
    return None
  layer = path[1]
  shortcut = {'shortcut_conv': f'{layout.shortcut}.0', 'shortcut_bn': f'{layout.shortcut}.1'}
  if not _BLOCK_LAYER.fullmatch(layer) and layer not in shortcut:
    return None
  return f'layer{block[1]}.{int(block[2]) - 1}.{shortcut.get(layer, layer)}'


def _unmappable(model: ResNet) -> str | None:
  """What of `model` no PyTorch ResNet of our layouts has (He 2016 variants), None if nothing."""
  mixing = model.mixing
  found = [(model.activation != 'original', f'the {model.activation!r} unit (He 2016 Fig. 4)'),
           (mixing.gate != 'none', f'{mixing.gate} gates'),
           (mixing.shortcut_scale != 1 or mixing.branch_scale != 1, 'constant scaling'),
           (mixing.dropout != 0, 'a dropout shortcut')]
  return next((what for present, what in found if present), None)


def _variable_shapes(model_name: str, num_classes: int | None) -> dict[str, tuple[int, ...]]:
  """Shapes of the model's variables ('params/stem_conv/kernel': shape), in network order;
  one-line ValueError for a model whose function the PyTorch layouts lack."""
  model = get_model(model_name, num_classes=num_classes, scan_blocks='unrolled')
  what = _unmappable(model)
  if what is not None:
    raise ValueError(f'{model_name} has {what}, which the PyTorch {layout_name(model_name)!r} '
                     f'layout lacks; {_CONVERTIBLE}')
  variables, _ = abstract_init(model, input_size(model_name))
  return {key: leaf.shape for key, leaf in flatten_dict(variables, sep='/').items()}


@functools.lru_cache(maxsize=16)
def _tensors(model_name: str, num_classes: int | None) -> tuple[_Tensor, ...]:
  """Every variable of the model paired with its PyTorch tensor, module by module."""
  layout = LAYOUTS[layout_name(model_name)]
  tensors = []
  for ours, shape in _variable_shapes(model_name, num_classes).items():
    collection, *path, leaf = ours.split('/')
    module = _torch_module(tuple(path), layout)
    if module is None or (collection, leaf) not in _LEAVES:
      raise ValueError(
          f'{model_name} has {ours!r}, which the PyTorch {layout_name(model_name)!r} layout '
          f'lacks; {_CONVERTIBLE}')
    axes = _TO_TORCH_AXES.get(len(shape), tuple(range(len(shape))))
    tensors.append(_Tensor(ours, module, _LEAVES[collection, leaf], axes, shape))
  modules = {module: i for i, module in enumerate(dict.fromkeys(t.module for t in tensors))}
  leaves = {name: i for i, name in enumerate(dict.fromkeys(_LEAVES.values()))}
  return tuple(sorted(tensors, key=lambda t: (modules[t.module], leaves[t.name])))


def check_tensors(found: Mapping[str, Any], expected: Mapping[str, tuple[int, ...]],
           ignored: set[str], source: str, what: str) -> None:
  """Raise one ValueError naming the first missing, mis-shaped or unexpected entry of found
  (name -> array) against expected (name -> shape); `source` and `what` name both sides."""
  for key, shape in expected.items():
    if key not in found:
      prefixed = f'module.{key}' in found
      hint = "; strip the 'module.' prefix of DataParallel" if prefixed else ''
      raise ValueError(f'{source} has no {key!r} (expected shape {shape}){hint}')
    if tuple(found[key].shape) != shape:
      raise ValueError(f'{key!r} has shape {tuple(found[key].shape)} but {what} needs '
                       f'{shape}; pass the matching model_name and num_classes')
  unexpected = [key for key in found if key not in expected and key not in ignored]
  if unexpected:
    raise ValueError(f'{source} has {len(unexpected)} key(s) that {what} lacks, first '
                     f'{unexpected[0]!r}; pass the matching model_name')


def _describe(model_name: str, tensors: tuple[_Tensor, ...]) -> str:
  head = next(t for t in tensors if t.ours == 'params/head/kernel')
  return f'{model_name} with {head.shape[-1]} classes'


def _as_float32(value: Any) -> np.ndarray:
  """A float32 copy (never a view of the PyTorch tensor) of a torch tensor or array."""
  if hasattr(value, 'detach'):  # a torch.Tensor; .float() also covers bfloat16, unknown to numpy
    value = value.detach().cpu().float().numpy()
  return np.array(value, dtype=np.float32)


def head_classes(state_dict: Mapping[str, Any], model_name: str) -> int | None:
  """The class count of the classifier in a state_dict of model_name's layout; None where it
  has none (from_torch then names the missing tensor)."""
  head = state_dict.get(f'{LAYOUTS[layout_name(model_name)].head}.weight')
  return None if head is None else int(head.shape[0])


def from_torch(state_dict: Mapping[str, Any], model_name: str,
               num_classes: int | None = None, scan_blocks: str = 'auto') -> dict[str, Any]:
  """A PyTorch state_dict (torch tensors or numpy arrays) -> {'params', 'batch_stats'}.

  The layout follows model_name (see the module docstring); num_classes=None means the model's
  default (10 for CIFAR, 1000 for ImageNet). num_batches_tracked is ignored. A state_dict
  that does not fit raises one ValueError naming the first offending tensor. The variables come
  in the layout get_model(model_name, scan_blocks=scan_blocks) builds.
  """
  tensors = _tensors(model_name, num_classes)
  batchnorms = {f'{t.module}.num_batches_tracked' for t in tensors if t.name == 'running_var'}
  check_tensors(state_dict, {t.key: t.torch_shape for t in tensors}, batchnorms, 'state_dict',
         _describe(model_name, tensors))
  flat = {t.ours: np.transpose(_as_float32(state_dict[t.key]), np.argsort(t.axes))
          for t in tensors}
  stages = get_model(model_name, num_classes=num_classes).stage_sizes
  target = 'stacked' if scans(scan_blocks, stages) else 'unrolled'
  return convert_layout(unflatten_dict(flat, sep='/'), target)


def to_torch(variables: Mapping[str, Any], model_name: str,
             dtype: type = np.float32) -> dict[str, np.ndarray]:
  """{'params', 'batch_stats'}, in either layout -> a PyTorch state_dict of numpy arrays of
  `dtype` (float32).

  BatchNorm layers also get num_batches_tracked (0), so that after torch.from_numpy
  `load_state_dict(strict=True)` of the matching PyTorch ResNet accepts the result.
  """
  if not {'params', 'batch_stats'} <= set(variables):
    raise ValueError(f"variables have {sorted(variables)}; pass {{'params', 'batch_stats'}}")
  network = convert_layout({c: variables[c] for c in ('params', 'batch_stats')}, 'unrolled')
  flat = flatten_dict(network, sep='/')
  head = flat.get('params/head/kernel')
  tensors = _tensors(model_name, None if head is None else head.shape[-1])
  check_tensors(flat, {t.ours: t.shape for t in tensors}, set(), 'variables',
         _describe(model_name, tensors))
  state_dict = {}
  for t in tensors:
    value = np.transpose(np.array(flat[t.ours], dtype=dtype), t.axes)
    state_dict[t.key] = np.ascontiguousarray(value)
    if t.name == 'running_var':
      state_dict[f'{t.module}.num_batches_tracked'] = np.array(0, dtype=np.int64)
  return state_dict
