"""train_and_evaluate(config, workdir): validate, load, train, evaluate, checkpoint, log.

Bad input (config, data set, workdir) raises ConfigError before anything is
written or compiled. Re-running the same command resumes from the latest
checkpoint in workdir; a finished run is left as it is.

The loop talks to its data through one object (the seam for new sources):
  num_classes: int, image_shape: (H, W, C), eval_splits: ('val', 'test') or ('test',)
  prepare: steps.Prepare, used inside the jitted steps (static)
  arrays(split) -> pytree of device arrays passed to every step of that split ({} if none)
  train_batch(step) -> the global batch of steps step .. step + K - 1 (K = steps_per_call),
      leaves [B, ...] for K = 1 and [K, B, ...] otherwise, sharded with
      parallel.batch_sharding; called for consecutive steps from the restored step on
  eval_batches(split) -> iterable of global batches, each with a bool 'mask' [B]
inputs.InMemoryData serves CIFAR-sized data, inputs.StreamedData a tf.data pipeline.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from resnet_jax import models, parallel
from resnet_jax.data.augment import NORMALIZATIONS
from resnet_jax.train import checkpoint, metrics, optim, steps
from resnet_jax.train.inputs import DATASETS, ConfigError, load_data
from resnet_jax.train import state as state_lib

POSITIVE_FIELDS = ('batch_size', 'eval_batch_size', 'num_train_steps', 'eval_every_steps',
                   'checkpoint_every_steps', 'log_every_steps', 'keep_checkpoints',
                   'steps_per_call', 'learning_rate')
NON_NEGATIVE_FIELDS = ('val_split', 'warmup_steps', 'warmup_learning_rate', 'weight_decay',
                       'momentum', 'label_smoothing', 'seed')
INTERVAL_FIELDS = ('num_train_steps', 'log_every_steps', 'eval_every_steps',
                   'checkpoint_every_steps')


def validate_config(config, workdir: str) -> None:
  """Every check that needs no data: one ConfigError naming the problem and the fix."""
  try:
    _check_fields(config)
    models.get_model(config.model)
    optim.create_optimizer(config)
    checkpoint.check_workdir(config, workdir)
  except ValueError as error:
    raise ConfigError(str(error)) from None


def _check_fields(config) -> None:
  for name in POSITIVE_FIELDS:
    if not config[name] > 0:
      raise ValueError(f'{name}={config[name]} must be > 0')
  for name in NON_NEGATIVE_FIELDS:
    if not config[name] >= 0:
      raise ValueError(f'{name}={config[name]} must be >= 0')
  if config.dataset not in DATASETS:
    raise ValueError(f'dataset={config.dataset!r} is unknown; choose one of {DATASETS}')
  if config.normalization not in NORMALIZATIONS:
    raise ValueError(f'normalization={config.normalization!r} is unknown; choose one of '
                     f'{NORMALIZATIONS}')
  parallel.check_divisible('batch_size', config.batch_size)
  parallel.check_divisible('eval_batch_size', config.eval_batch_size)
  for name in INTERVAL_FIELDS:
    if config[name] % config.steps_per_call:
      raise ValueError(f'{name}={config[name]} is not a multiple of steps_per_call='
                       f'{config.steps_per_call}; change either')
  if config.checkpoint_every_steps % config.log_every_steps:
    raise ValueError(f'checkpoint_every_steps={config.checkpoint_every_steps} is not a multiple '
                     f'of log_every_steps={config.log_every_steps}, so a resumed run would log '
                     'a partial interval; change either')
  boundaries = list(config.lr_boundaries) if config.schedule in ('piecewise', 'plateau') else []
  if boundaries != sorted(set(boundaries)) or (boundaries and boundaries[0] <= config.warmup_steps):
    raise ValueError(f'lr_boundaries={tuple(boundaries)} must increase strictly and start after '
                     f'warmup_steps={config.warmup_steps}')


def evaluate(eval_step, state: state_lib.TrainState, data) -> dict[str, float]:
  """Loss and error (top-5 error for >= 100 classes) of every eval split, each example once."""
  row = {}
  for split in data.eval_splits:
    total = None
    for batch in data.eval_batches(split):
      sums = eval_step(state, data.arrays(split), batch)
      total = sums if total is None else steps.accumulate(total, sums)
    sums = jax.device_get(total['sums'])
    row[f'{split}_loss'] = float(sums['loss'] / sums['examples'])
    row[f'{split}_error'] = float(sums['wrong'] / sums['examples'])
    if 'wrong_top5' in sums:
      row[f'{split}_top5_error'] = float(sums['wrong_top5'] / sums['examples'])
  return row


def train_row(total: steps.Metrics) -> dict:
  """The interval's mean loss, error fraction, last learning rate (and gradient norms)."""
  total = jax.device_get(total)
  sums, last = total['sums'], total['last']
  row = {'train_loss': float(sums['loss'] / sums['examples']),
         'train_error': float(sums['wrong'] / sums['examples']),
         'learning_rate': float(last['learning_rate'])}
  if 'grad_norms' in last:
    norms = last['grad_norms']
    row['grad_norms'] = {k: float(norms[k]) for k in metrics.network_order(norms)}
  return row


def _summary(rows: list[dict]) -> dict:
  """The latest value of every metric, with the step and wall time of the last of those rows."""
  summary = {}
  for row in rows:
    if 'event' not in row:
      summary.update(row)
  return summary


def _finished(rows: list[dict], step: int, num_train_steps: int) -> bool:
  return step >= num_train_steps and bool(rows) and rows[-1].get('event') == 'end'


class _Clock:
  """Seconds of training so far: the restored wall time plus this process's time since start."""

  def __init__(self, offset: float):
    self._offset, self._start = offset, time.perf_counter()

  def __call__(self) -> float:
    return self._offset + time.perf_counter() - self._start


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains config.model on config.dataset in workdir; returns the latest value of every metric.

  Writes workdir/config.json, metrics.jsonl, tensorboard/ and checkpoints/, and
  resumes from the latest checkpoint there if there is one.
  """
  validate_config(config, workdir)
  mesh = parallel.make_mesh()
  data = load_data(config, mesh)
  lead = jax.process_index() == 0
  if lead:
    os.makedirs(workdir, exist_ok=True)
    checkpoint.write_config(config, workdir)
  dtype = jnp.bfloat16 if config.half_precision else jnp.float32
  model = models.get_model(config.model, data.num_classes, dtype=dtype,
                           zero_init_residual=config.zero_init_residual)
  optimizer = optim.create_optimizer(config)
  state = state_lib.create_train_state(model, optimizer.tx, data.image_shape, config.seed, mesh)
  ckpt = checkpoint.Checkpointer(workdir, config.keep_checkpoints, _best_metric(data))
  writer = metrics.MetricsWriter(workdir, enabled=lead)
  try:
    state, wall_time, rows = _restore_or_start(config, state, ckpt, writer)
    if _finished(rows, int(state.step), config.num_train_steps):
      return _summary(rows)
    return _train(config, data, mesh, state, optimizer, ckpt, writer, _Clock(wall_time),
                  _summary(rows))
  finally:
    ckpt.close()
    writer.close()


def _best_metric(data) -> str:
  """Checkpoints are ranked by validation error, or test error without a validation split."""
  return f'{data.eval_splits[0]}_error'


def _restore_or_start(config, state, ckpt, writer) -> tuple[state_lib.TrainState, float, list]:
  """The latest checkpoint (metrics.jsonl cut back to it) or a fresh start event."""
  run = {'devices': jax.device_count(), 'process_count': jax.process_count()}
  if ckpt.latest_step() is None:
    row = {'event': 'start', 'step': 0, 'wall_time': 0.0, 'model': config.model,
           'params': state_lib.param_count(state), 'dataset': config.dataset, **run,
           'batch_size': config.batch_size, 'num_train_steps': config.num_train_steps}
    writer.start(row)
    return state, 0.0, [row]
  state, meta = ckpt.restore(state)
  step, wall_time = int(state.step), meta['wall_time']
  rows = metrics.read_rows(writer.path)
  if _finished(rows, step, config.num_train_steps):
    return state, wall_time, rows
  resume = {'event': 'resume', 'step': step, 'wall_time': wall_time, **run}
  return state, wall_time, writer.resume(step, resume) + [resume]


def _train(config, data, mesh, state, optimizer, ckpt, writer, clock, latest) -> dict:
  """Steps to num_train_steps; logs, evaluates and checkpoints on their intervals and at the end."""
  train_step = steps.compile_train_step(
      mesh, prepare=data.prepare, learning_rate=optimizer.learning_rate, seed=config.seed,
      label_smoothing=config.label_smoothing, log_grad_norms=config.log_grad_norms,
      steps_per_call=config.steps_per_call)
  eval_step = steps.compile_eval_step(mesh, prepare=data.prepare, top5=data.num_classes >= 100)
  observe = jax.jit(optimizer.observe, out_shardings=parallel.replicated(mesh))
  step = int(state.step)
  progress = metrics.Progress(config.num_train_steps, step, enabled=writer.enabled)
  interval, interval_start, total = step, time.perf_counter(), None

  def record(row: dict) -> None:
    """Writes a metrics row and keeps its values as the latest."""
    row = {'step': step, 'wall_time': clock(), **row}
    writer.write(row)
    latest.update(row)

  while step < config.num_train_steps:
    state, new = train_step(state, data.arrays('train'), data.train_batch(step))
    total = new if total is None else steps.accumulate(total, new)
    step += config.steps_per_call
    progress.update(config.steps_per_call, latest)
    last = step == config.num_train_steps
    if step % config.log_every_steps == 0 or last:
      now = time.perf_counter()
      images_per_sec = (step - interval) * config.batch_size / (now - interval_start)
      record({**train_row(total), 'images_per_sec': images_per_sec})
      interval, interval_start, total = step, now, None
    evaluated = None
    if step % config.eval_every_steps == 0 or last:
      evaluated = evaluate(eval_step, state, data)
      record(evaluated)
      if optimizer.plateau is not None:
        plateau_loss = evaluated[f'{data.eval_splits[0]}_loss']
        state = state.replace(opt_state=observe(state.opt_state, plateau_loss))
    if step % config.checkpoint_every_steps == 0 or last:
      best = _best_metric(data)
      ckpt.save(step, state, {'wall_time': clock()}, {best: evaluated[best]} if evaluated else None)
  progress.close()
  writer.write({'step': step, 'wall_time': clock(), 'event': 'end'})
  return latest
