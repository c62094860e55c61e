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
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from resnet_jax import parallel
from resnet_jax.errors import ConfigError, Preempted, TrainingDiverged
from resnet_jax.train import loop

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file, e.g. configs/cifar10.py or configs/cifar10.py:resnet56.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints and metrics.')
flags.mark_flags_as_required(['config', 'workdir'])

BAD_INPUT_STATUS = 2
DIVERGED_STATUS = 3


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
    _exit(f'error: {error}', BAD_INPUT_STATUS)
  except TrainingDiverged as error:
    _exit(f'error: {error}', DIVERGED_STATUS)
  except Preempted as stop:
    _exit(str(stop), 128 + stop.signum)
  if jax.process_index() == 0:
    print(json.dumps(summary))


def _exit(message: str, status: int) -> None:
  print(message, file=sys.stderr)
  sys.exit(status)


if __name__ == '__main__':
  app.run(main)
