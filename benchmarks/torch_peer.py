"""The PyTorch peer of the throughput race: the same networks and the same train step, in PyTorch.

Two families, written in the layouts that resnet_jax.interop.pytorch reads, so one set of weights
runs on both sides:
- CIFAR ResNets (He et al. 2015, sec. 4.2): 3x3 convs, three stages of n basic blocks with 16/32/64
  filters, option-A (parameter-free, zero-padding) shortcuts, the common CIFAR layout
  (conv1, bn1, layer1..3.i.conv1/bn1/conv2/bn2, linear); and their plain counterparts, the same
  layers without shortcuts.
- ImageNet bottleneck ResNets v1.5 (He et al. 2015, Table 1; stride on the 3x3 conv of a
  bottleneck), torchvision's layout (conv1, bn1, layer1..4.i.conv1..3/bn1..3,
  layerK.0.downsample.0/.1, fc).

The train step is SGD with momentum and L2 weight decay on the same on-device augmentation as ours
(pad 4, random crop of the input size, random horizontal flip; He et al. 2015 sec. 4.2), in the
strongest ordinary PyTorch setup: channels_last, optional torch.compile and bfloat16 autocast.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

CIFAR_WIDTHS = (16, 32, 64)
BOTTLENECK_STAGES = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
BOTTLENECK_WIDTHS = (64, 128, 256, 512)
BOTTLENECK_EXPANSION = 4
BN_EPS = 1e-5
PAD = 4  # pixels of zero padding per side (He 2015 sec. 4.2)
MAX_PIXEL = 255.0
NAME_HELP = ('resnet{6n+2} (CIFAR, option A, e.g. resnet20), plain{6n+2} or '
             'resnet{50,101,152}_v1_5 (ImageNet)')


def _conv(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Conv2d:
  return nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False)


def _bn(channels: int) -> nn.BatchNorm2d:
  return nn.BatchNorm2d(channels, eps=BN_EPS)


class OptionAShortcut(nn.Module):
  """Option A of He et al. 2015 sec. 3.3: subsample by 2 and zero-pad the new channels."""

  def __init__(self, pad_channels: int):
    super().__init__()
    self.pad_channels = pad_channels

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    p = self.pad_channels
    return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, p, p))


class BasicBlock(nn.Module):
  """Two 3x3 convs plus an identity or option-A shortcut (He et al. 2015 Fig. 2); without the
  shortcut when `plain` (the plain networks of sec. 4.2)."""

  def __init__(self, cin: int, cout: int, stride: int, plain: bool = False):
    super().__init__()
    self.conv1 = _conv(cin, cout, 3, stride)
    self.bn1 = _bn(cout)
    self.conv2 = _conv(cout, cout, 3)
    self.bn2 = _bn(cout)
    changes_shape = stride != 1 or cin != cout
    self.shortcut = OptionAShortcut((cout - cin) // 2) if changes_shape else nn.Identity()
    self.plain = plain

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    y = F.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return F.relu(y if self.plain else y + self.shortcut(x))


class CifarResNet(nn.Module):
  """The 6n+2-layer CIFAR-10 ResNet of He et al. 2015 sec. 4.2 with option-A shortcuts, or its
  plain counterpart (`plain`)."""

  def __init__(self, blocks_per_stage: int, num_classes: int, plain: bool = False):
    super().__init__()
    self.conv1 = _conv(3, CIFAR_WIDTHS[0], 3)
    self.bn1 = _bn(CIFAR_WIDTHS[0])
    cin = CIFAR_WIDTHS[0]
    for stage, width in enumerate(CIFAR_WIDTHS, start=1):
      blocks = []
      for block in range(blocks_per_stage):
        stride = 2 if stage > 1 and block == 0 else 1
        blocks.append(BasicBlock(cin, width, stride, plain))
        cin = width
      setattr(self, f'layer{stage}', nn.Sequential(*blocks))
    self.linear = nn.Linear(cin, num_classes)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = F.relu(self.bn1(self.conv1(x)))
    x = self.layer3(self.layer2(self.layer1(x)))
    return self.linear(x.mean(dim=(2, 3)))


class Bottleneck(nn.Module):
  """1x1-3x3-1x1 bottleneck (He et al. 2015 Fig. 5), v1.5: the stride sits on the 3x3 conv."""

  def __init__(self, cin: int, width: int, stride: int):
    super().__init__()
    cout = width * BOTTLENECK_EXPANSION
    self.conv1 = _conv(cin, width, 1)
    self.bn1 = _bn(width)
    self.conv2 = _conv(width, width, 3, stride)
    self.bn2 = _bn(width)
    self.conv3 = _conv(width, cout, 1)
    self.bn3 = _bn(cout)
    projection = stride != 1 or cin != cout
    self.downsample = nn.Sequential(_conv(cin, cout, 1, stride), _bn(cout)) if projection else None

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    y = F.relu(self.bn1(self.conv1(x)))
    y = F.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    shortcut = x if self.downsample is None else self.downsample(x)
    return F.relu(y + shortcut)


class ImageNetResNet(nn.Module):
  """The bottleneck ImageNet ResNet of He et al. 2015 Table 1, v1.5 strides, torchvision names."""

  def __init__(self, blocks_per_stage: Sequence[int], num_classes: int):
    super().__init__()
    self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
    self.bn1 = _bn(64)
    self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
    cin = 64
    for stage, (blocks, width) in enumerate(zip(blocks_per_stage, BOTTLENECK_WIDTHS), start=1):
      layer = []
      for block in range(blocks):
        stride = 2 if stage > 1 and block == 0 else 1
        layer.append(Bottleneck(cin, width, stride))
        cin = width * BOTTLENECK_EXPANSION
      setattr(self, f'layer{stage}', nn.Sequential(*layer))
    self.fc = nn.Linear(cin, num_classes)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
    x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
    return self.fc(x.mean(dim=(2, 3)))


def _init_he(model: nn.Module) -> nn.Module:
  """He et al. 2015b ('Delving Deep into Rectifiers') normal init of the convs, std
  sqrt(2 / fan_in), as resnet_jax.models.blocks.HE_NORMAL; BN scale 1 and shift 0."""
  for m in model.modules():
    if isinstance(m, nn.Conv2d):
      nn.init.kaiming_normal_(m.weight, mode='fan_in', nonlinearity='relu')
  return model


def peer_stages(name: str) -> tuple[str, tuple[int, ...]]:
  """('cifar', (n,)), ('plain', (n,)) or ('imagenet', blocks per stage) for a name the peer has;
  else ValueError."""
  cifar = re.fullmatch(r'(resnet|plain)(\d+)', name)
  if cifar and int(cifar.group(2)) >= 8 and (int(cifar.group(2)) - 2) % 6 == 0:
    return 'cifar' if cifar.group(1) == 'resnet' else 'plain', ((int(cifar.group(2)) - 2) // 6,)
  imagenet = re.fullmatch(r'resnet(\d+)_v1_5', name)
  if imagenet and int(imagenet.group(1)) in BOTTLENECK_STAGES:
    return 'imagenet', BOTTLENECK_STAGES[int(imagenet.group(1))]
  raise ValueError(f'no PyTorch peer for model {name!r}; use {NAME_HELP}')


def build_model(name: str, num_classes: int | None = None) -> nn.Module:
  """The peer of resnet_jax.models.get_model(name), He-initialised."""
  family, stages = peer_stages(name)
  if family in ('cifar', 'plain'):
    return _init_he(CifarResNet(stages[0], num_classes or 10, plain=family == 'plain'))
  return _init_he(ImageNetResNet(stages, num_classes or 1000))


def load_weights(model: nn.Module, state_dict: dict) -> nn.Module:
  """Loads a name -> array dict (resnet_jax.interop.pytorch.to_torch) into the model, strictly."""
  tensors = {k: torch.as_tensor(v).clone() for k, v in state_dict.items()}
  model.load_state_dict(tensors, strict=True)
  return model


@dataclass(frozen=True)
class PeerData:
  """The peer of the in-memory arrays our steps read (resnet_jax.train.inputs.prepare_in_memory).

  images: uint8 [N, H, W, C] and labels: int64 [N] on the device; mean and std in 0..1 units,
  broadcastable to [H, W, C] (resnet_jax.data.augment.pixel_stats).
  """

  images: torch.Tensor
  labels: torch.Tensor
  mean: torch.Tensor
  std: torch.Tensor


def augment(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
  """Zero-pad 4, random crop to the input size, random horizontal flip (He et al. 2015 sec. 4.2).

  uint8 [B, H, W, C] -> uint8 [B, H, W, C]; offsets and flips are drawn per image on the device.
  """
  b, h, w, _ = images.shape
  device = images.device
  padded = F.pad(images, (0, 0, PAD, PAD, PAD, PAD))
  dy = torch.randint(0, 2 * PAD + 1, (b, 1), device=device, generator=generator)
  dx = torch.randint(0, 2 * PAD + 1, (b, 1), device=device, generator=generator)
  flip = torch.rand((b, 1), device=device, generator=generator) < 0.5
  cols = torch.arange(w, device=device)
  cols = torch.where(flip, w - 1 - cols, cols) + dx
  rows = torch.arange(h, device=device) + dy
  batch = torch.arange(b, device=device)[:, None, None]
  return padded[batch, rows[:, :, None], cols[:, None, :]]


def prepare(data: PeerData, index: torch.Tensor, augment_images: bool,
            generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
  """Gather, augment, (x / 255 - mean) / std; NHWC -> a channels_last NCHW view (free permute)."""
  images = data.images[index]
  if augment_images:
    images = augment(images, generator)
  x = (images.float() / MAX_PIXEL - data.mean) / data.std
  return x.permute(0, 3, 1, 2), data.labels[index]


@dataclass(frozen=True)
class StepConfig:
  """What a peer step does; the defaults are the CIFAR-10 recipe of He et al. 2015 sec. 4.2."""

  learning_rate: float = 0.1
  momentum: float = 0.9
  weight_decay: float = 1e-4
  augment: bool = True
  bfloat16: bool = False
  compile: bool = False


def _autocast(device: torch.device, bfloat16: bool):
  return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bfloat16)


def make_update(model: nn.Module, config: StepConfig
                ) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
  """An update(x, labels) -> (loss, wrong predictions), both before the update, that trains
  `model` in place on one batch of float NCHW images.

  SGD with momentum and the L2 term wd * w added to the gradient of every parameter before the
  momentum, as resnet_jax.train.optim (optax.add_decayed_weights, then optax.trace); the fused
  CUDA kernel on a GPU.
  """
  device = next(model.parameters()).device
  model.to(memory_format=torch.channels_last)
  optimizer = torch.optim.SGD(
      model.parameters(), lr=config.learning_rate, momentum=config.momentum,
      weight_decay=config.weight_decay, fused=True if device.type == 'cuda' else None)
  forward = torch.compile(model) if config.compile else model

  def update(x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    model.train()
    with _autocast(device, config.bfloat16):
      logits = forward(x)
    loss = F.cross_entropy(logits.float(), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach(), (logits.argmax(-1) != labels).sum()

  return update


def make_train_step(
    model: nn.Module, config: StepConfig, data: PeerData, generator: torch.Generator | None = None
) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
  """A step(index) -> (loss, wrong predictions): make_update on data[index], prepared (gathered,
  augmented when config.augment, normalised) on the device."""
  update = make_update(model, config)

  def step(index: torch.Tensor) -> torch.Tensor:
    return update(*prepare(data, index, config.augment, generator))

  return step


def make_eval_step(
    model: nn.Module, config: StepConfig, data: PeerData
) -> Callable[[torch.Tensor], torch.Tensor]:
  """An evaluate(index) -> float32 logits step with the running BN statistics."""
  device = next(model.parameters()).device
  model.to(memory_format=torch.channels_last)
  forward = torch.compile(model) if config.compile else model

  @torch.inference_mode()
  def evaluate(index: torch.Tensor) -> torch.Tensor:
    model.eval()
    x, _ = prepare(data, index, False)
    with _autocast(device, config.bfloat16):
      return forward(x).float()

  return evaluate
