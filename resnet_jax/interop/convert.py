"""PyTorch weights into a workdir, and a run's checkpoint out to PyTorch.

    python -m resnet_jax.interop.convert --torch_weights=FILE --model=NAME --workdir=DIR \\
        [--config=configs/cifar10.py --config.FIELD=VALUE ...]
    python -m resnet_jax.interop.convert --workdir=DIR --to_torch=FILE \\
        [--checkpoint=best|latest|STEP]

Import: FILE (a state_dict, or a .th checkpoint with one under 'state_dict', 'module.' prefixes
of DataParallel stripped) becomes checkpoint 0 of DIR, with DIR/config.json for NAME: --config
as it is, else configs/cifar10.py (CIFAR family) or configs/imagenet.py with
normalization='given' (ImageNet's mean and std, the inputs released PyTorch weights were trained
on). `python -m resnet_jax.evaluate --workdir=DIR --checkpoint=latest` evaluates it, and
`--config.init_from=DIR` (or FILE itself) starts a fine-tuning run of resnet_jax.main from it.
Export: the run's checkpoint (default: best, else latest) as a PyTorch state_dict file that
torch.load and load_state_dict(strict=True) of the matching PyTorch ResNet accept.
Prints one JSON line. Bad input (a file that is no state_dict, a model that does not fit it:
the first missing or mis-shaped tensor is named, a DIR that already holds a run, a run without
checkpoints) is one line on stderr and exit status 2, and nothing is written. An import is
written in a folder beside DIR and moved in whole, so that a failure midway leaves DIR as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import time

import jax
import ml_collections
from absl import flags
from ml_collections import config_flags

from configs import cifar10, imagenet
from resnet_jax import cli, models, parallel
from resnet_jax import config as config_lib
from resnet_jax.errors import ConfigError
from resnet_jax.interop import pytorch, torch_files
from resnet_jax.train import checkpoint

FLAGS = flags.FlagValues()
_TORCH_WEIGHTS = flags.DEFINE_string('torch_weights', None, 'PyTorch .pt/.th file to import',
                                     flag_values=FLAGS)
_MODEL = flags.DEFINE_string('model', None, 'the network of --torch_weights', flag_values=FLAGS)
_WORKDIR = flags.DEFINE_string('workdir', None, 'the run folder to write (import) or read (export)',
                               flag_values=FLAGS)
_TO_TORCH = flags.DEFINE_string('to_torch', None, 'PyTorch file to export to', flag_values=FLAGS)
_CHECKPOINT = flags.DEFINE_string('checkpoint', None, "export: 'best', 'latest' or a step number "
                                  '(default: best, else latest)', flag_values=FLAGS)
_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'import: the config written beside the checkpoint', flag_values=FLAGS)


def import_config(model: str, classes: int, base: ml_collections.ConfigDict | None):
  """The config.json of an imported workdir: `base` as it is, or the family's config file with
  ImageNet's normalisation ('given', as released PyTorch weights expect), for `model`; checked."""
  if base is None:
    base = cifar10.get_config(model) if models.input_size(model) == 32 else imagenet.get_config(
        model)
    base.normalization = 'given'
  config = ml_collections.ConfigDict(base.to_dict())
  config.model = model
  if 'num_classes' in config:
    config.num_classes = classes
  config_lib.validate(config)
  return config


def import_torch(torch_weights: str, model: str, workdir: str,
                 base: ml_collections.ConfigDict | None = None) -> dict:
  """Writes torch_weights as checkpoint 0 of a new run in workdir; returns the JSON line."""
  try:
    _check_new_workdir(workdir)
    state_dict = torch_files.load_state_dict(torch_weights)
    variables = pytorch.from_torch(state_dict, model, pytorch.head_classes(state_dict, model))
    classes = variables['params']['head']['kernel'].shape[-1]
    config = import_config(model, classes, base)
  except ValueError as error:
    raise ConfigError(f'--torch_weights={torch_weights}: {error}') from None
  run = config_lib.Run.of(config)
  state = checkpoint.with_network(
      checkpoint.template_state(run, classes, parallel.make_mesh()), variables)
  stage = _stage_beside(workdir)
  try:
    with checkpoint.Checkpointer(stage, run.loop.keep_checkpoints,
                                 checkpoint.best_metric(run.data.val_split)) as ckpt:
      ckpt.save(0, state, {'wall_time': 0.0})
    checkpoint.write_config(config, stage)
    _move_in(stage, workdir)
  finally:
    shutil.rmtree(stage, ignore_errors=True)
  return {'workdir': workdir, 'model': model, 'classes': int(classes), 'checkpoint_step': 0,
          'tensors': len(state_dict)}


def export_torch(workdir: str, to_torch: str, which: str | None = None) -> dict:
  """Writes the run's checkpoint `which` (default: best, else latest) to the PyTorch file
  to_torch; returns the JSON line."""
  if os.path.isdir(to_torch) or not os.path.isdir(os.path.dirname(os.path.abspath(to_torch))):
    raise ConfigError(f'--to_torch={to_torch} must be a file in an existing folder')
  try:
    config = checkpoint.run_config(workdir)
    step = (checkpoint.best_else_latest(workdir, config.val_split) if which is None else
            checkpoint.choose_step(workdir, which, config.val_split))
    variables = checkpoint.restore_variables(workdir, step, parallel.make_mesh())
  except ValueError as error:
    raise ConfigError(str(error)) from None
  state_dict = pytorch.to_torch(jax.device_get(variables), config.model)
  torch_files.save_state_dict(state_dict, to_torch)
  return {'to_torch': to_torch, 'model': config.model, 'checkpoint_step': step,
          'tensors': len(state_dict)}


def _stage_beside(workdir: str) -> str:
  """A new, empty folder beside workdir (same file system, so that moving out of it is a
  rename), with the permissions of any new folder."""
  parent, name = os.path.split(os.path.abspath(workdir))
  os.makedirs(parent, exist_ok=True)
  stage = os.path.join(parent, f'.{name}.convert-{os.getpid()}-{time.time_ns()}')
  os.mkdir(stage)
  return stage


def _move_in(stage: str, workdir: str) -> None:
  """Moves the whole run in `stage` to workdir: one rename where workdir is new, else its
  checkpoints, then config.json, the file that makes a folder a run."""
  if not os.path.exists(workdir):
    os.replace(stage, workdir)
    return
  os.replace(os.path.join(stage, checkpoint.CHECKPOINT_DIR),
             os.path.join(workdir, checkpoint.CHECKPOINT_DIR))
  os.replace(os.path.join(stage, checkpoint.CONFIG_FILE),
             os.path.join(workdir, checkpoint.CONFIG_FILE))


def _check_new_workdir(workdir: str) -> None:
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ValueError(f'--workdir={workdir} is a file; give a new folder')
  taken = [name for name in (checkpoint.CONFIG_FILE, checkpoint.CHECKPOINT_DIR)
           if os.path.exists(os.path.join(workdir, name))]
  if taken:
    raise ValueError(f'--workdir={workdir} already holds a run ({taken[0]}); give a new folder')


def main() -> None:
  """The command: import (--torch_weights) or export (--to_torch)."""
  if not _WORKDIR.value or (_TORCH_WEIGHTS.value is None) == (_TO_TORCH.value is None):
    raise ConfigError('give --torch_weights=FILE --model=NAME --workdir=DIR (import) or '
                      '--workdir=DIR --to_torch=FILE (export)')
  if _TO_TORCH.value is not None:
    row = export_torch(_WORKDIR.value, _TO_TORCH.value, _CHECKPOINT.value)
  elif not _MODEL.value:
    raise ConfigError('--torch_weights needs --model, the network the file holds')
  else:
    row = import_torch(_TORCH_WEIGHTS.value, _MODEL.value, _WORKDIR.value, _CONFIG.value)
  print(json.dumps(row))


if __name__ == '__main__':
  cli.run(main, FLAGS)
