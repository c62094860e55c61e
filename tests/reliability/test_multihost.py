"""Two processes on one machine (jax.distributed over a localhost coordinator, gloo
collectives), each loading only its half of an image folder, train, evaluate,
checkpoint, stop on a SIGTERM to one of them and resume like one process with the
same global batch."""

import math
import os
import signal
import subprocess
from unittest import mock

import numpy as np
import pytest
from PIL import Image

from resnet_jax.config import Data, InMemory
from resnet_jax.data import sources
from resnet_jax.train import checkpoint, metrics
from tests.image_folders import CLASSES, write_colour_folder
from tests.reliability import harness

PROCESSES = 2
TRAIN, TEST, VAL = 10, 3, 6  # images per class (train, test); validation examples
FIELDS = {'dataset': 'image_folder', 'image_size': 8, 'batch_size': 8, 'eval_batch_size': 8,
          'val_split': VAL, 'normalization': 'per_channel', 'log_every_steps': 4,
          'eval_every_steps': 8, 'checkpoint_every_steps': 8, 'learning_rate': 0.02,
          'lr_boundaries': '(12,)'}
EXAMPLES = {'train': 4 * 8, 'val': VAL, 'test': TEST * len(CLASSES)}


@pytest.fixture(scope='module')
def image_folder(tmp_path_factory):
  return write_colour_folder(tmp_path_factory.mktemp('image_folder'), TRAIN, TEST)


def start_processes(workdir, cache, name: str, **fields) -> list:
  """The CLI as PROCESSES processes of one run, each logging to workdir/../NAME_process<i>.log."""
  port = harness.free_port()
  return [
      harness.start(harness.command(workdir, **fields),
                    harness.env(cache, JAX_COORDINATOR_ADDRESS=f'localhost:{port}',
                                JAX_NUM_PROCESSES=str(PROCESSES), JAX_PROCESS_ID=str(i)),
                    workdir.parent / f'{name}_process{i}.log')
      for i in range(PROCESSES)]


def wait(workers: list, workdir, name: str) -> tuple[list, list[str]]:
  """Every process's exit status and output (all are killed after harness.TIMEOUT)."""
  try:
    statuses = [worker.wait(timeout=harness.TIMEOUT) for worker in workers]
  except subprocess.TimeoutExpired:
    statuses = ['timed out'] * PROCESSES
  finally:
    for worker in workers:
      worker.kill()
  logs = [workdir.parent / f'{name}_process{i}.log' for i in range(PROCESSES)]
  return statuses, [log.read_text() for log in logs]


def test_two_processes_train_like_one(tmp_path, xla_cache, image_folder):
  fields = {**FIELDS, 'data_dir': image_folder, 'num_train_steps': 48}
  single = tmp_path / 'single'
  reference = harness.start(harness.command(single, **fields), harness.env(xla_cache),
                            tmp_path / 'single.log')  # alongside the two processes

  # SIGTERM to process 1 only: both agree at the next log step, save and stop.
  workdir = tmp_path / 'two_processes'
  workers = start_processes(workdir, xla_cache, 'stopped', **fields)
  harness.signal_at_step(workers[1], workdir, 8, signal.SIGTERM)
  statuses, outputs = wait(workers, workdir, 'stopped')
  assert statuses == [128 + signal.SIGTERM] * PROCESSES, '\n'.join(o[-2000:] for o in outputs)
  stop_step = max(harness.steps_on_disk(workdir))
  assert stop_step % FIELDS['log_every_steps'] == 0 and 8 <= stop_step < 48
  for output in outputs:
    assert f'stopped by SIGTERM at step {stop_step} of 48' in output.strip().splitlines()[-1]

  statuses, outputs = wait(start_processes(workdir, xla_cache, 'resumed', **fields), workdir,
                           'resumed')
  assert statuses == [0] * PROCESSES, '\n'.join(o[-2000:] for o in outputs)
  assert '"step": 48' in outputs[0] and '"step": 48' not in outputs[1]  # the summary: process 0
  harness.finish(reference, tmp_path / 'single.log')
  rows = harness.rows(workdir)
  assert rows[0]['process_count'] == PROCESSES and rows[0]['devices'] == PROCESSES
  assert harness.events(rows) == [(0, 'start'), (stop_step, 'resume'), (48, 'end')]
  harness.assert_same_metrics(rows, harness.rows(single), EXAMPLES)
  ours, theirs = harness.saved_state(workdir, 48), harness.saved_state(single, 48)
  for path in ours:
    np.testing.assert_allclose(ours[path], theirs[path], rtol=1e-4, atol=1e-6, err_msg=path)
  assert {checkpoint.CONFIG_FILE, metrics.METRICS_FILE} <= set(os.listdir(workdir))


def test_each_process_decodes_only_its_rows(image_folder):
  """What every process does above, in one process: rows [start, stop) of each split."""
  data = Data(dataset='image_folder', data_dir=str(image_folder), val_split=VAL, batch_size=8,
              eval_batch_size=8)
  whole = sources.load_dataset(data, InMemory())
  opened = mock.Mock(wraps=Image.open)
  for process in range(PROCESSES):
    def rows(n, process=process):
      share = math.ceil(n / PROCESSES)
      return process * share, (process + 1) * share
    with mock.patch.object(Image, 'open', opened):
      opened.reset_mock()
      part = sources.load_dataset(data, InMemory(), rows)
    for name in ('train', 'val', 'test'):
      full, mine = getattr(whole, name), getattr(part, name)
      start, stop = rows(len(full))
      assert (len(mine), mine.start) == (len(full), start)
      np.testing.assert_array_equal(mine.images, full.images[start:stop])
      np.testing.assert_array_equal(mine.labels, full.labels[start:stop])
    decoded = sum(len(getattr(part, name).labels) for name in ('train', 'val', 'test'))
    assert opened.call_count == decoded + 1  # + the first image's size
