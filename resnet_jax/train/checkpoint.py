"""Checkpoints in workdir/checkpoints (orbax), their integrity, and the workdir guard.

A checkpoint holds the whole TrainState (params, batch_stats, opt_state with
any plateau state, step) and a JSON meta ({'wall_time', 'checksum', 'layout', ...}:
'layout' is the variables' layout, 'unrolled' or 'stacked', resnet_jax/models/layout.py;
restoring into the other layout is a one-line error naming config.scan_blocks); with
the data order and the augmentation keys pure functions of (seed, step), that
makes a resumed run the same run. orbax keeps the latest `keep` checkpoints plus
the best one by the given metric (lower is better). Restores place every array
with the shardings of a template state on the current mesh, so a checkpoint
written on 8 devices loads onto 1 and back.

Integrity. orbax writes a step into a temporary directory and renames it when
complete, so a crash mid-write leaves no step behind (the leftover is deleted
when the next run starts). But orbax reads an array file with garbage bytes in
it without complaint, so the meta also holds a CRC-32 of the state's bytes, and
a network holding NaN or Inf is never saved (NonFiniteStateError). On restore, a
step that cannot be read or fails its checksum is moved to
workdir/damaged_checkpoints with a warning, and the next older one is tried.
"""

from __future__ import annotations

import json
import os
import tempfile
import zlib
from collections.abc import Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from resnet_jax import config as config_lib
from resnet_jax import models
from resnet_jax.config import IDENTITY_FIELDS
from resnet_jax.errors import NonFiniteStateError
from resnet_jax.files import atomic_write_text, one_line
from resnet_jax.train import metrics as metrics_lib
from resnet_jax.train import optim
from resnet_jax.train.state import TrainState, create_train_state, network

CHECKPOINT_DIR = 'checkpoints'
DAMAGED_DIR = 'damaged_checkpoints'
CONFIG_FILE = 'config.json'


def check_workdir(config, workdir: str) -> None:
  """One-line error if workdir cannot be written or holds a run of another model, data or seed."""
  _check_writable(workdir)
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    return
  try:
    with open(path) as f:
      saved = json.load(f)
  except (OSError, ValueError) as error:
    raise ValueError(f'workdir {workdir} has an unreadable {CONFIG_FILE} ({one_line(error)}); '
                     'choose a new --workdir or delete that one') from None
  differ = [k for k in IDENTITY_FIELDS if saved.get(k) != config.get(k)]
  if differ:
    theirs = ', '.join(f'{k}={saved.get(k)!r}' for k in differ)
    ours = ', '.join(f'{k}={config.get(k)!r}' for k in differ)
    raise ValueError(
        f'workdir {workdir} holds another run ({theirs}; this config has {ours}); '
        'choose a new --workdir or delete that one')


def _check_writable(workdir: str) -> None:
  """workdir, or the folder it would be created in, takes new files (tried, not guessed)."""
  existing = os.path.abspath(workdir)
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise ValueError(f'workdir {workdir} cannot be created: {existing} is a file; '
                     'choose another --workdir')
  try:
    with tempfile.TemporaryFile(dir=existing):
      pass
  except OSError as error:
    raise ValueError(f'workdir {workdir} is not writable ({existing}: {error.strerror}); '
                     'choose another --workdir or fix its permissions') from None


def write_config(config, workdir: str) -> None:
  """Saves the resolved config as workdir/config.json (atomically)."""
  atomic_write_text(os.path.join(workdir, CONFIG_FILE),
                    json.dumps(config.to_dict(), indent=2, sort_keys=True) + '\n')


def run_config(workdir: str):
  """workdir's config.json, with the default of every field it does not name, checked; a
  one-line ValueError when there is none."""
  path = os.path.join(workdir, CONFIG_FILE)
  try:
    with open(path) as f:
      saved = json.load(f)
  except FileNotFoundError:
    raise ValueError(f'{workdir} holds no run (no {CONFIG_FILE}): give the workdir of a '
                     'run') from None
  except (OSError, ValueError) as error:
    raise ValueError(f'{path} cannot be read ({one_line(error)})') from None
  config = config_lib.with_defaults(saved)
  config_lib.validate(config)
  return config


def best_metric(val_split: int) -> str:
  """The metric a run ranks its checkpoints by: validation error, else test error."""
  return f'{config_lib.eval_splits(val_split)[0]}_error'


def choose_step(workdir: str, which: str, val_split: int) -> int:
  """The step of which='latest', 'best' (lowest best_metric(val_split) among the kept
  checkpoints, by the run's metrics.jsonl) or a step number among the checkpoints in workdir;
  one-line ValueError naming the choices otherwise."""
  with Checkpointer.reader(workdir) as ckpt:
    kept = ckpt.steps()
  if not kept:
    raise ValueError(f'{workdir} has no checkpoint: train it first (python -m resnet_jax.main)')
  if which == 'latest':
    return kept[-1]
  if which == 'best':
    metric = best_metric(val_split)
    errors = {row['step']: row[metric] for row in
              metrics_lib.read_rows(os.path.join(workdir, metrics_lib.METRICS_FILE))
              if metric in row}
    ranked = [step for step in kept if step in errors]
    if not ranked:
      raise ValueError(f'{workdir} kept no evaluated checkpoint, so no best one: use '
                       f'--checkpoint=latest or one of the steps {kept}')
    return min(ranked, key=lambda step: (errors[step], step))
  if not which.isdigit() or int(which) not in kept:
    raise ValueError(f'--checkpoint={which}: use best, latest or one of the steps {kept}')
  return int(which)


def best_else_latest(workdir: str, val_split: int) -> int:
  """The best checkpoint's step where the run ranked one, else the latest's."""
  try:
    return choose_step(workdir, 'best', val_split)
  except ValueError:
    return choose_step(workdir, 'latest', val_split)


def with_network(state: TrainState, variables: Mapping) -> TrainState:
  """`state` with variables' params and batch_stats (host or device arrays of the same tree, in
  either layout), each placed and typed like the array it replaces; the rest of the state is
  kept."""
  variables = models.convert_layout(dict(variables), models.layout_of(state.params))
  place = lambda new, like: jax.device_put(np.asarray(new, like.dtype), like.sharding)
  return state.replace(params=jax.tree.map(place, variables['params'], state.params),
                       batch_stats=jax.tree.map(place, variables['batch_stats'],
                                                state.batch_stats))


def restore_variables(workdir: str, step: int, mesh) -> dict:
  """{'params', 'batch_stats'} of checkpoint `step` of the run in workdir, replicated on mesh.

  The whole state is restored (and its checksum checked) into a template built from the run's
  own config.json, with the class count its checkpoint holds; only the network is returned.
  """
  run = config_lib.Run.of(run_config(workdir))
  with Checkpointer.reader(workdir) as ckpt:
    template = template_state(run, ckpt.shapes(step)['params/head/kernel'][-1], mesh)
    state, _ = ckpt.restore_step(step, template)
  return {'params': state.params, 'batch_stats': state.batch_stats}


def template_state(run: config_lib.Run, classes: int, mesh) -> TrainState:
  """A fresh train state of run's network (in its layout) with `classes` outputs and its
  optimizer, on mesh: the tree that a checkpoint of that run restores into."""
  size = models.input_size(run.model.model)
  optimizer = optim.create_optimizer(run.optim, run.loop.num_train_steps)
  return create_train_state(network(run.model, classes), optimizer.tx, (size, size, 3),
                            run.loop.seed, mesh)


def _reason(error: BaseException, limit: int = 200) -> str:
  """A short one-line reason from an orbax or TensorStore error (without its spec dump)."""
  text = one_line(error).split(' See full TensorStore details')[0]
  return text if len(text) <= limit else text[:limit - 3] + '...'


def _abstract(state: TrainState) -> TrainState:
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)


def _shapes(tree) -> dict[str, tuple[int, ...]]:
  """'params/stem_conv/kernel' -> shape, for every array of a state or its orbax metadata."""
  return {jax.tree_util.keystr(path, simple=True, separator='/'): tuple(x.shape)
          for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def host_arrays(state) -> dict[str, np.ndarray]:
  """Every array of a (replicated) state as numpy, keyed by path ('params/head/kernel')."""
  return {jax.tree_util.keystr(path, simple=True, separator='/'): np.asarray(x)
          for path, x in jax.tree_util.tree_flatten_with_path(state)[0]}


def checksum(arrays: Mapping[str, np.ndarray]) -> int:
  """CRC-32 of the paths and bytes of the arrays (host_arrays of a state), in path order."""
  crc = 0
  for path in sorted(arrays):
    crc = zlib.crc32(path.encode(), crc)
    crc = zlib.crc32(np.ascontiguousarray(arrays[path]).tobytes(), crc)
  return crc


def non_finite(arrays: Mapping[str, np.ndarray]) -> list[str]:
  """The paths of the network's arrays (params, batch_stats) that hold NaN or Inf.

  opt_state is left out: it may hold Inf by design (the plateau schedule's best
  loss before the first evaluation).
  """
  return [path for path, x in arrays.items()
          if path.startswith(('params/', 'batch_stats/')) and not np.isfinite(x).all()]


def state_layout(paths: Mapping[str, object]) -> str:
  """The variables' layout of a state from its array paths ('params/stage1_blocks/...')."""
  return 'stacked' if any(models.layout.is_stacked(part) for path in paths
                          for part in path.split('/')) else 'unrolled'


def _check_layout(where: str, theirs: Mapping[str, object], ours: Mapping[str, object]) -> None:
  """One-line ValueError when checkpoint `where` holds the other layout than the template."""
  saved, wanted = state_layout(theirs), state_layout(ours)
  if saved != wanted:
    raise ValueError(
        f'checkpoint {where} holds the {saved} layout of the network but this config builds the '
        f'{wanted} one; set --config.scan_blocks={saved} (resnet_jax/models/layout.py)')


class _Damaged(Exception):
  """A checkpoint step that cannot be restored; the message says why."""


class Checkpointer:
  """orbax CheckpointManager: latest `keep` checkpoints plus the best by `best_metric`.

  Creates nothing on disk before the first save. `read_only` (for readers of another process's
  run: evaluate, convert, init_from, Fig. 7) never saves, deletes or cleans up, so a run that is
  still training keeps its checkpoint in progress.
  """

  def __init__(self, workdir: str, keep: int, best_metric: str, read_only: bool = False):
    self._workdir = workdir
    self._root = os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR))
    policy = ocp.checkpoint_managers.AnyPreservationPolicy([
        ocp.checkpoint_managers.LatestN(n=keep),
        ocp.checkpoint_managers.BestN(
            get_metric_fn=lambda metrics: metrics[best_metric], reverse=True, n=1,
            keep_checkpoints_without_metrics=False),
    ])
    self._manager = ocp.CheckpointManager(
        self._root,
        options=ocp.CheckpointManagerOptions(
            preservation_policy=policy, create=False, read_only=read_only,
            cleanup_tmp_directories=not read_only and os.path.isdir(self._root)),
        item_handlers={'state': ocp.StandardCheckpointHandler(),
                       'meta': ocp.JsonCheckpointHandler()})

  @classmethod
  def reader(cls, workdir: str) -> Checkpointer:
    """A read-only Checkpointer of the run in workdir (its preservation policy never acts)."""
    return cls(workdir, keep=1, best_metric='test_error', read_only=True)

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  @property
  def directory(self) -> str:
    return self._root

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def steps(self) -> list[int]:
    """The steps on disk, oldest first."""
    return sorted(self._manager.all_steps())

  def shapes(self, step: int) -> dict[str, tuple[int, ...]]:
    """'params/head/kernel' -> shape for every array of step `step` (from its metadata)."""
    return _shapes(self._manager.item_metadata(step)['state'])

  def restore_step(self, step: int, template: TrainState) -> tuple[TrainState, dict]:
    """Step `step`, laid out like `template`, and its meta; ValueError when it is damaged (it
    is left where it is) or holds another model."""
    try:
      return self._restore_step(step, template)
    except _Damaged as reason:
      raise ValueError(f'checkpoint {self._root}/{step} is damaged ({reason})') from None

  def restore(self, template: TrainState) -> tuple[TrainState, dict] | None:
    """The newest intact checkpoint, laid out like `template`, and its saved meta; None if none.

    Damaged newer steps are moved to workdir/damaged_checkpoints with a warning.
    Raises ValueError (nothing moved) if a step holds a state of other shapes
    (another model or optimiser) or if every step is damaged.
    """
    damaged = []
    for step in sorted(self._manager.all_steps(), reverse=True):
      try:
        state, meta = self._restore_step(step, template)
      except _Damaged as reason:
        damaged.append((step, str(reason)))
        continue
      self._set_aside(damaged, step)
      return state, meta
    if damaged:
      reasons = '; '.join(f'step {step}: {reason}' for step, reason in damaged)
      raise ValueError(f'no checkpoint in {self._root} can be restored ({reasons}); move that '
                       'folder away to start the run afresh')
    return None

  def _restore_step(self, step: int, template: TrainState) -> tuple[TrainState, dict]:
    """Step `step` checked against the template's shapes and its checksum."""
    try:
      saved = self._manager.item_metadata(step)['state']
    except Exception as error:  # orbax and tensorstore raise many types; all mean unreadable
      raise _Damaged(f'unreadable metadata: {_reason(error)}') from None
    if saved is None:
      raise _Damaged('no readable state metadata')
    theirs, ours = _shapes(saved), _shapes(template)
    _check_layout(f'{self._root}/{step}', theirs, ours)
    if theirs != ours:
      path = next((p for p in sorted(set(theirs) | set(ours)) if theirs.get(p) != ours.get(p)))
      raise ValueError(
          f'checkpoint {self._root}/{step} holds the state of another model or optimiser '
          f'({path}: {theirs.get(path, "absent")} there, {ours.get(path, "absent")} here); '
          'choose a new --workdir')
    try:
      restored = self._manager.restore(
          step, args=ocp.args.Composite(state=ocp.args.StandardRestore(_abstract(template)),
                                        meta=ocp.args.JsonRestore()))
    except Exception as error:  # as above
      raise _Damaged(_reason(error)) from None
    state, meta = restored['state'], dict(restored['meta'])
    meta.pop('layout', None)  # checked above, from the arrays' paths
    saved_checksum = meta.pop('checksum', None)
    if saved_checksum is None:
      raise _Damaged('its meta holds no checksum')
    if checksum(host_arrays(state)) != saved_checksum:
      raise _Damaged('its arrays do not match the checksum saved with them')
    return state, meta

  def _set_aside(self, damaged: list[tuple[int, str]], restored_step: int) -> None:
    """Moves damaged steps to workdir/damaged_checkpoints (process 0), with a warning each."""
    if not damaged:
      return
    aside = os.path.join(os.path.abspath(self._workdir), DAMAGED_DIR)
    for step, reason in damaged:
      target = os.path.join(aside, str(step))
      while os.path.exists(target):
        target += '_'
      logging.warning('checkpoint %s/%d is damaged (%s): moved it to %s and resumed from '
                      'step %d', self._root, step, reason, target, restored_step)
      if jax.process_index() == 0:
        os.makedirs(aside, exist_ok=True)
        os.replace(os.path.join(self._root, str(step)), target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices('resnet_jax: damaged checkpoints set aside')
    self._manager.reload()

  def save(self, step: int, state: TrainState, meta: Mapping,
           metrics: Mapping[str, float] | None = None) -> None:
    """Saves in the background with the state's checksum and layout added to `meta`.

    `metrics` (e.g. {'val_error': ...}) ranks the best checkpoint. Raises
    NonFiniteStateError, writing nothing, if the network's parameters or
    batch statistics hold NaN or Inf.
    """
    arrays = host_arrays(state)
    bad = non_finite(arrays)
    if bad:
      raise NonFiniteStateError(f'{len(bad)} arrays of the state at step {step} hold NaN or Inf '
                                f'(e.g. {bad[0]})')
    os.makedirs(self._root, exist_ok=True)
    record = {**meta, 'checksum': checksum(arrays), 'layout': state_layout(arrays)}
    self._manager.save(
        step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(record)),
        metrics=dict(metrics) if metrics else None)

  def wait(self) -> None:
    """Returns when every save started so far is on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and releases the manager."""
    self._manager.wait_until_finished()
    self._manager.close()
