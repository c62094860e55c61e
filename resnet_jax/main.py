"""Trains and evaluates one network.

    python -m resnet_jax.main --config=configs/cifar10.py[:MODEL[,RECIPE]] --workdir=DIR \\
        [--config.FIELD=VALUE ...]

Running the same command again resumes from the latest intact checkpoint in DIR.
Each way of stopping early prints one line on stderr and exits with its own status:
  2  bad input (unknown model or data set, a bad data_dir or image, sizes, a DIR that
     is not writable or holds another run), found before any work;
  3  training diverged (NaN or Inf); the last good checkpoint is kept;
  128 + signal number (143 for SIGTERM, 130 for Ctrl-C): stopped by a signal after
     saving a checkpoint; run the same command to resume.

Several processes (GPU nodes, TPU hosts): the same command on every host, with
jax.distributed started from the environment (see resnet_jax/parallel.py).
"""

import json

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from resnet_jax import parallel
from resnet_jax.errors import (BAD_INPUT_STATUS, DIVERGED_STATUS, ConfigError, Preempted,
                               TrainingDiverged, exit_with)
from resnet_jax.train import loop

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file, e.g. configs/cifar10.py or configs/cifar10.py:resnet56.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints and metrics.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  config = _CONFIG.value
  parallel.initialize_distributed(config.distributed)
  try:
    summary = loop.train_and_evaluate(config, _WORKDIR.value)
  except ConfigError as error:
    exit_with(f'error: {error}', BAD_INPUT_STATUS)
  except TrainingDiverged as error:
    exit_with(f'error: {error}', DIVERGED_STATUS)
  except Preempted as stop:
    exit_with(str(stop), 128 + stop.signum)
  if jax.process_index() == 0:
    print(json.dumps(summary))


if __name__ == '__main__':
  app.run(main)
