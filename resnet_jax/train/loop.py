"""train_and_evaluate(config, workdir): validate, load, train, evaluate, checkpoint, log.

Bad input (config, data set, workdir, a checkpoint of another model) raises
ConfigError before anything is written or trained. Re-running the same command
resumes from the latest intact checkpoint in workdir; a finished run is left as
it is. A fresh run with config.init_from starts from that workdir's or PyTorch file's
parameters and BN statistics (initialize_from), with a fresh optimizer at step 0.

Reliability:
- A checkpoint saved inside a log interval carries that interval's partial
  sums, so a resumed run logs exactly what an uninterrupted one logs.
- A stop signal (SIGTERM, SIGINT = Ctrl-C, SIGHUP) only sets a flag; between compiled calls the loop
  saves a checkpoint, waits for it and raises Preempted. With several
  processes the flag is agreed on at log steps.
- A NaN or Inf loss (train: its interval sum, read at each log step and
  before each save; eval) or network state (before each save) raises
  TrainingDiverged naming the step and the last good checkpoint, which stays
  as it is. No per-step host sync is added.

The loop talks to its data through one object, inputs.Data (the seam for new sources):
inputs.InMemoryData serves CIFAR-sized data, inputs.StreamedData a tf.data pipeline.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import threading
import time
from collections.abc import Callable

import jax
import numpy as np
from flax.traverse_util import flatten_dict
from jax.sharding import Mesh

from resnet_jax import config as config_lib
from resnet_jax import models, parallel
from resnet_jax.errors import ConfigError, NonFiniteStateError, Preempted, TrainingDiverged
from resnet_jax.interop import pytorch, torch_files
from resnet_jax.stop import STOP_SIGNALS
from resnet_jax.train import checkpoint, metrics, optim, steps
from resnet_jax.train.inputs import Data, load_data
from resnet_jax.train import state as state_lib



def validate_config(config, workdir: str) -> config_lib.Run:
  """Every check that needs no data: one ConfigError naming the problem and the fix. Returns
  the config's sections."""
  try:
    config_lib.validate(config)
    run = config_lib.Run.of(config)
    parallel.check_divisible('batch_size', run.data.batch_size)
    parallel.check_divisible('eval_batch_size', run.data.eval_batch_size)
    models.get_model(run.model.model)
    optim.create_optimizer(run.optim, run.loop.num_train_steps)
    checkpoint.check_workdir(config, workdir)
    _check_init_from(run.model.init_from)
  except ValueError as error:
    raise ConfigError(str(error)) from None
  return run


def _check_init_from(source: str) -> None:
  """init_from is empty, a PyTorch weight file or a run's workdir."""
  if not source:
    return
  if torch_files.is_torch_file(source):
    if not os.path.isfile(source):
      raise ValueError(f'init_from={source} is not a file')
  elif not os.path.isfile(os.path.join(source, checkpoint.CONFIG_FILE)):
    raise ValueError(f'init_from={source} is neither a PyTorch file '
                     f'({", ".join(torch_files.SUFFIXES)}) nor a workdir with a '
                     f'{checkpoint.CONFIG_FILE}')


def initialize_from(source: str, model: str, state: state_lib.TrainState, num_classes: int,
                    mesh: Mesh) -> state_lib.TrainState:
  """`state` with params and batch_stats from `source` (init_from: a PyTorch file, or a run's
  best, else latest, checkpoint, in either layout); optimizer state and step stay fresh. A
  ConfigError names the first missing or mis-shaped tensor when the source does not fit `model`."""
  try:
    if torch_files.is_torch_file(source):
      variables = pytorch.from_torch(torch_files.load_state_dict(source), model, num_classes)
    else:
      step = checkpoint.best_else_latest(source, checkpoint.run_config(source).val_split)
      variables = checkpoint.restore_variables(source, step, mesh)
    variables = models.convert_layout(dict(variables), models.layout_of(state.params))
    ours = {'params': state.params, 'batch_stats': state.batch_stats}
    expected = {k: tuple(v.shape) for k, v in flatten_dict(ours, sep='/').items()}
    pytorch.check_tensors(flatten_dict(variables, sep='/'), expected, set(), source,
                          f'{model} with {num_classes} classes')
  except ValueError as error:
    raise ConfigError(f'init_from={source}: {error}') from None
  return checkpoint.with_network(state, variables)


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
  return step >= num_train_steps and metrics.ended(rows)


class _Clock:
  """Seconds of training so far: the restored wall time plus this process's time since start."""

  def __init__(self, offset: float):
    self._offset, self._start = offset, time.perf_counter()

  def __call__(self) -> float:
    return self._offset + time.perf_counter() - self._start


class _StopSignals:
  """While active, STOP_SIGNALS (SIGTERM, SIGINT, SIGHUP) set `signum` instead of ending the
  process.

  A second signal of any of them restores the previous handlers and ends the
  process at once. Handlers can only be installed from the main thread;
  elsewhere the signals keep their previous meaning.
  """

  def __init__(self):
    self.signum = 0
    self._previous = {}

  def __enter__(self) -> _StopSignals:
    if threading.current_thread() is threading.main_thread():
      self._previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
    return self

  def __exit__(self, *exc_info) -> None:
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)

  def _handle(self, signum: int, frame) -> None:
    del frame
    if self.signum:
      self.__exit__()
      signal.raise_signal(signum)
      return
    self.signum = signum

  def requested(self, at_log_step: bool) -> int:
    """The signal to stop for (0: none). Processes agree on it at log steps only."""
    if jax.process_count() == 1:
      return self.signum
    if not at_log_step:
      return 0
    return int(parallel.process_allgather(np.int32(self.signum)).max())


@dataclasses.dataclass(frozen=True)
class Setup:
  """What a config trains: its data, optimizer, initial state and compiled steps."""

  data: Data
  optimizer: optim.Optimizer
  state: state_lib.TrainState
  train_step: Callable
  eval_step: Callable


def build(run: config_lib.Run, mesh: Mesh) -> Setup:
  """The Setup of `run` on `mesh`, as train_and_evaluate trains it (and the benchmarks time
  it): the network in run's precision, the optimizer and schedule, the jitted steps with the
  data arrays' shardings."""
  data = load_data(run, mesh)
  optimizer = optim.create_optimizer(run.optim, run.loop.num_train_steps)
  state = state_lib.create_train_state(state_lib.network(run.model, data.num_classes),
                                       optimizer.tx, data.image_shape, run.loop.seed, mesh)
  train_step = steps.compile_train_step(
      mesh, prepare=data.prepare, learning_rate=optimizer.learning_rate, seed=run.loop.seed,
      label_smoothing=run.optim.label_smoothing, log_grad_norms=run.loop.log_grad_norms,
      steps_per_call=run.loop.steps_per_call, arrays_sharding=_sharding_of(data.arrays('train')))
  eval_step = steps.compile_eval_step(
      mesh, prepare=data.prepare, top5=data.num_classes >= 100,
      arrays_sharding=_sharding_of(data.arrays(data.eval_splits[0])))
  return Setup(data, optimizer, state, train_step, eval_step)


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains config.model on config.dataset in workdir; returns the latest value of every metric.

  Writes workdir/config.json, metrics.jsonl, tensorboard/ and checkpoints/, and
  resumes from the latest intact checkpoint there if there is one. Raises
  ConfigError (nothing written), TrainingDiverged or Preempted.
  """
  run = validate_config(config, workdir)
  mesh = parallel.make_mesh()
  setup = build(run, mesh)
  lead = jax.process_index() == 0
  with checkpoint.Checkpointer(workdir, run.loop.keep_checkpoints,
                               checkpoint.best_metric(run.data.val_split)) as ckpt:
    try:
      restored = ckpt.restore(setup.state)
    except ValueError as error:
      raise ConfigError(str(error)) from None
    state = setup.state
    if restored is None and run.model.init_from:
      state = initialize_from(run.model.init_from, run.model.model, state,
                              setup.data.num_classes, mesh)
    if lead:
      os.makedirs(workdir, exist_ok=True)
      checkpoint.write_config(config, workdir)
    with metrics.MetricsWriter(workdir, enabled=lead) as writer:
      state, wall_time, rows, interval = _start_or_resume(run, state, restored, writer)
      if _finished(rows, int(state.step), run.loop.num_train_steps):
        return _summary(rows)
      trainer = _Trainer(run, setup, mesh, ckpt, writer, _Clock(wall_time), _summary(rows))
      with _StopSignals() as stop:
        return trainer.run(state, _interval_from_json(interval, mesh), stop)


def _start_or_resume(run: config_lib.Run, state, restored, writer) -> tuple:
  """(state, wall time, rows, saved interval sums) of the restored checkpoint or a fresh start.

  On resume metrics.jsonl is cut back to the checkpoint's step.
  """
  devices = {'devices': jax.device_count(), 'process_count': jax.process_count()}
  if restored is None:
    row = {'event': 'start', 'step': 0, 'wall_time': 0.0, 'model': run.model.model,
           'params': state_lib.param_count(state), 'dataset': run.data.dataset, **devices,
           'batch_size': run.data.batch_size, 'num_train_steps': run.loop.num_train_steps,
           'train_subset': getattr(run.pipeline, 'train_subset', 0),
           'test_subset': getattr(run.pipeline, 'test_subset', 0)}
    writer.start(row)
    return state, 0.0, [row], None
  state, meta = restored
  step, wall_time = int(state.step), meta['wall_time']
  rows = metrics.read_rows(writer.path)
  if _finished(rows, step, run.loop.num_train_steps):
    return state, wall_time, rows, None
  resume = {'event': 'resume', 'step': step, 'wall_time': wall_time, **devices}
  return state, wall_time, writer.resume(step, resume) + [resume], meta.get('interval')


def _interval_to_json(total: steps.Metrics) -> dict:
  """The sums of a partial log interval as {name: [value, dtype]} (exact for 32-bit values)."""
  return {name: [value.item(), str(value.dtype)]
          for name, value in jax.device_get(total['sums']).items()}


def _interval_from_json(saved: dict | None, mesh: Mesh) -> steps.Metrics | None:
  if saved is None:
    return None
  sums = {name: np.asarray(value, dtype) for name, (value, dtype) in saved.items()}
  return {'sums': parallel.replicate(sums, mesh), 'last': {}}


def _sharding_of(arrays):
  """The shardings of a split's data arrays: replicated, or over examples across processes."""
  return jax.tree.map(lambda x: x.sharding, arrays)


class _Trainer:
  """Steps to num_train_steps; logs, evaluates and checkpoints on their intervals and at the end."""

  def __init__(self, run: config_lib.Run, setup: Setup, mesh: Mesh,
               ckpt: checkpoint.Checkpointer, writer: metrics.MetricsWriter, clock: _Clock,
               latest: dict):
    self.loop, self.data, self.ckpt, self.writer = run.loop, setup.data, ckpt, writer
    self.batch_size, self.learning_rate = run.data.batch_size, run.optim.learning_rate
    self.best = checkpoint.best_metric(run.data.val_split)
    self.clock, self.latest, self.optimizer = clock, latest, setup.optimizer
    self.train_step, self.eval_step = setup.train_step, setup.eval_step
    self.observe = jax.jit(setup.optimizer.observe, out_shardings=parallel.replicated(mesh))
    self.saved_step = None

  def record(self, step: int, row: dict) -> None:
    """Writes a metrics row and keeps its values as the latest."""
    row = {'step': step, 'wall_time': self.clock(), **row}
    self.writer.write(row)
    self.latest.update(row)

  def diverged(self, step: int, what: str) -> TrainingDiverged:
    last = self.ckpt.latest_step()
    kept = ('no checkpoint was saved before' if last is None else
            f'the last good checkpoint, {self.ckpt.directory}/{last}, is left as it is')
    return TrainingDiverged(f'training diverged at step {step}: {what}; {kept}; lower '
                            f'learning_rate (now {self.learning_rate}) or change the '
                            'recipe before running again')

  def save(self, step: int, state, evaluated: dict | None, interval: steps.Metrics | None):
    """Checkpoints `state` (never a diverged one) with the sums of a partial log interval."""
    meta = {'wall_time': self.clock()}
    if interval is not None:
      meta['interval'] = _interval_to_json(interval)
      loss = meta['interval']['loss'][0]
      if not math.isfinite(loss):
        raise self.diverged(step, f'the train loss summed since the last log row is {loss}')
    try:
      self.ckpt.save(step, state, meta, {self.best: evaluated[self.best]} if evaluated else None)
    except NonFiniteStateError as error:
      raise self.diverged(step, str(error)) from None
    self.saved_step = step

  def log(self, step: int, total: steps.Metrics, images: int, since: float) -> None:
    """The train row of the interval: `images` trained since perf_counter() was `since`."""
    row = train_row(total)  # waits for the interval's last step, so the time below is real
    images_per_sec = images / (time.perf_counter() - since)
    if not math.isfinite(row['train_loss']):
      first = step - (step - 1) % self.loop.log_every_steps
      raise self.diverged(step, f"the mean train loss of steps {first}-{step} is "
                                f"{row['train_loss']}")
    self.record(step, {**row, 'images_per_sec': images_per_sec})

  def evaluate_and_observe(self, step: int, state) -> tuple[state_lib.TrainState, dict]:
    """Evaluates, checks, records and feeds the plateau schedule; returns (state, row)."""
    row = evaluate(self.eval_step, state, self.data)
    bad = {k: v for k, v in row.items() if not math.isfinite(v)}
    if bad:
      raise self.diverged(step, f'evaluation gave {bad}')
    self.record(step, row)
    if self.optimizer.plateau is not None:
      plateau_loss = row[f'{self.data.eval_splits[0]}_loss']
      state = state.replace(opt_state=self.observe(state.opt_state, plateau_loss))
    return state, row

  def run(self, state: state_lib.TrainState, total: steps.Metrics | None,
          stop: _StopSignals) -> dict:
    """Trains from state.step, adding to `total` (a restored partial interval, or None)."""
    loop, data = self.loop, self.data
    step = int(state.step)
    progress = metrics.Progress(loop.num_train_steps, step, enabled=self.writer.enabled)
    train_call, clock_step, clock_start = None, step, 0.0
    try:
      while step < loop.num_train_steps:
        batch = data.train_batch(step)
        if train_call is None:  # compiled ahead, so images_per_sec leaves compilation out
          train_call = self.train_step.lower(state, data.arrays('train'), batch).compile()
          clock_start = time.perf_counter()
        state, new = train_call(state, data.arrays('train'), batch)
        total = new if total is None else steps.accumulate(total, new)
        step += loop.steps_per_call
        progress.update(loop.steps_per_call, self.latest)
        last = step == loop.num_train_steps
        logged = step % loop.log_every_steps == 0 or last
        if logged:
          self.log(step, total, (step - clock_step) * self.batch_size, clock_start)
          total = None
        evaluated = None
        if step % loop.eval_every_steps == 0 or last:
          state, evaluated = self.evaluate_and_observe(step, state)
        if step % loop.checkpoint_every_steps == 0 or last:
          self.save(step, state, evaluated, total)
        signum = stop.requested(logged)
        if signum and not last:
          self.stop(step, state, total, signum)
        if logged:
          clock_step, clock_start = step, time.perf_counter()
      self.ckpt.wait()
    finally:
      progress.close()
    self.writer.write({'step': step, 'wall_time': self.clock(), 'event': 'end'})
    return self.latest

  def stop(self, step: int, state, total: steps.Metrics | None, signum: int) -> None:
    """Saves `state` (unless just saved), waits for it and raises Preempted."""
    if self.saved_step != step:
      self.save(step, state, None, total)
    self.ckpt.wait()
    name = signal.Signals(signum).name
    raise Preempted(f'stopped by {name} at step {step} of {self.loop.num_train_steps} after '
                    f'saving checkpoint {self.ckpt.directory}/{step}; run the same command to '
                    'resume', signum)
