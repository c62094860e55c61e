"""PyTorch weight files (.pt, .th) read and written, as released CIFAR and ImageNet weights are.

A file holds a state_dict (name -> tensor), or a checkpoint dict with one under 'state_dict'
(akamaster/pytorch_resnet_cifar10's .th files); names saved from nn.DataParallel start with
'module.', which is stripped. torch is imported only here, and only when a file is read or
written. Fitting the tensors to a model is resnet_jax.interop.pytorch's job.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from resnet_jax.files import atomic_write, one_line

SUFFIXES = ('.pt', '.th', '.pth')
DATA_PARALLEL_PREFIX = 'module.'


def is_torch_file(path: str) -> bool:
  """Whether `path` names a PyTorch weight file (by its suffix)."""
  return os.path.splitext(path)[1].lower() in SUFFIXES


def load_state_dict(path: str) -> dict[str, Any]:
  """The state_dict in `path` (torch tensors), 'state_dict' key and 'module.' prefix undone; a
  one-line ValueError when the file cannot be read or holds no state_dict."""
  import torch  # pylint: disable=import-outside-toplevel
  if not os.path.isfile(path):
    raise ValueError(f'--torch_weights={path} is not a file')
  try:
    saved = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as error:  # pickle, zip and torch errors all mean: not a weight file
    raise ValueError(f'{path} is not a PyTorch weight file ({one_line(error)[:200]})') from None
  if isinstance(saved, Mapping) and isinstance(saved.get('state_dict'), Mapping):
    saved = saved['state_dict']
  if (not isinstance(saved, Mapping) or not saved
      or not all(isinstance(v, torch.Tensor) for v in saved.values())):
    raise ValueError(f'{path} holds a {type(saved).__name__}, not a state_dict of tensors '
                     "(nor a dict with one under 'state_dict')")
  if all(key.startswith(DATA_PARALLEL_PREFIX) for key in saved):
    saved = {key[len(DATA_PARALLEL_PREFIX):]: value for key, value in saved.items()}
  return dict(saved)


def save_state_dict(state_dict: Mapping[str, np.ndarray], path: str) -> None:
  """Writes numpy arrays (resnet_jax.interop.pytorch.to_torch) as a torch state_dict file,
  atomically, that torch.load(path, weights_only=True) reads back."""
  import torch  # pylint: disable=import-outside-toplevel
  tensors = {key: torch.from_numpy(np.ascontiguousarray(value)) for key, value in
             state_dict.items()}
  atomic_write(path, lambda f: torch.save(tensors, f), binary=True)
