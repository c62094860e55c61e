"""Checkpoints in workdir/checkpoints (orbax) and the workdir's config.json guard.

A checkpoint holds the whole TrainState (params, batch_stats, opt_state with
any plateau state, step) and {'wall_time'}; with the data order and the
augmentation keys pure functions of (seed, step), that makes a resumed run the
same run. orbax keeps the latest `keep` checkpoints plus the best one by the
given metric (lower is better). Restores place every array with the shardings of
a template state on the current mesh, so a checkpoint written on 8 devices
loads onto 1 and back.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

import jax
import orbax.checkpoint as ocp

from resnet_jax.train.metrics import atomic_write_text
from resnet_jax.train.state import TrainState

CHECKPOINT_DIR = 'checkpoints'
CONFIG_FILE = 'config.json'
RUN_IDENTITY = ('model', 'dataset', 'val_split', 'seed')


def check_workdir(config, workdir: str) -> None:
  """One-line error if workdir/config.json belongs to a run with another model, data or seed."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    return
  with open(path) as f:
    saved = json.load(f)
  differ = [k for k in RUN_IDENTITY if saved.get(k) != config.get(k)]
  if differ:
    theirs = ', '.join(f'{k}={saved.get(k)!r}' for k in differ)
    ours = ', '.join(f'{k}={config.get(k)!r}' for k in differ)
    raise ValueError(
        f'workdir {workdir} holds another run ({theirs}; this config has {ours}); '
        'choose a new --workdir or delete that one')


def write_config(config, workdir: str) -> None:
  """Saves the resolved config as workdir/config.json (atomically)."""
  atomic_write_text(os.path.join(workdir, CONFIG_FILE),
                    json.dumps(config.to_dict(), indent=2, sort_keys=True) + '\n')


def _abstract(state: TrainState) -> TrainState:
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)


class Checkpointer:
  """orbax CheckpointManager: latest `keep` checkpoints plus the best by `best_metric`."""

  def __init__(self, workdir: str, keep: int, best_metric: str):
    policy = ocp.checkpoint_managers.AnyPreservationPolicy([
        ocp.checkpoint_managers.LatestN(n=keep),
        ocp.checkpoint_managers.BestN(
            get_metric_fn=lambda metrics: metrics[best_metric], reverse=True, n=1,
            keep_checkpoints_without_metrics=False),
    ])
    self._manager = ocp.CheckpointManager(
        os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR)),
        options=ocp.CheckpointManagerOptions(preservation_policy=policy, create=True),
        item_names=('state', 'meta'))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def restore(self, template: TrainState) -> tuple[TrainState, dict]:
    """The latest checkpoint, laid out like `template`, and its meta ({'wall_time'})."""
    restored = self._manager.restore(
        self._manager.latest_step(),
        args=ocp.args.Composite(state=ocp.args.StandardRestore(_abstract(template)),
                                meta=ocp.args.JsonRestore()))
    return restored['state'], dict(restored['meta'])

  def save(self, step: int, state: TrainState, meta: Mapping,
           metrics: Mapping[str, float] | None = None) -> None:
    """Saves in the background; `metrics` (e.g. {'val_error': ...}) ranks the best checkpoint."""
    self._manager.save(
        step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                      meta=ocp.args.JsonSave(dict(meta))),
        metrics=dict(metrics) if metrics else None)

  def close(self) -> None:
    """Waits for pending saves and releases the manager."""
    self._manager.wait_until_finished()
    self._manager.close()
