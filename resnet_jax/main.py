"""Trains and evaluates one network.

    python -m resnet_jax.main --config=configs/cifar10.py[:MODEL[,RECIPE]] --workdir=DIR \\
        [--config.FIELD=VALUE ...]

Running the same command again resumes from the latest checkpoint in DIR. Bad input
(unknown model or data set, a bad data_dir, sizes, a DIR holding another run) is
reported as one line on stderr with exit status 2, before any work.
"""

import json
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from resnet_jax import parallel
from resnet_jax.train import loop

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file, e.g. configs/cifar10.py or configs/cifar10.py:resnet56.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints and metrics.')
flags.mark_flags_as_required(['config', 'workdir'])

BAD_INPUT_STATUS = 2


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  config = _CONFIG.value
  parallel.initialize_distributed(config.distributed)
  try:
    summary = loop.train_and_evaluate(config, _WORKDIR.value)
  except loop.ConfigError as error:
    print(f'error: {error}', file=sys.stderr)
    sys.exit(BAD_INPUT_STATUS)
  if jax.process_index() == 0:
    print(json.dumps(summary))


if __name__ == '__main__':
  app.run(main)
