"""The errors a user of resnet_jax sees, and the exit status each command gives them."""

import sys
from typing import NoReturn

from resnet_jax.files import one_line

BAD_INPUT_STATUS = 2  # ConfigError (and every other bad input), found before any work
DIVERGED_STATUS = 3  # TrainingDiverged


def exit_with(message: str | BaseException, status: int) -> NoReturn:
  """Ends a command: `message` as one line on stderr, then exit `status`."""
  print(one_line(message), file=sys.stderr)
  sys.exit(status)


class ConfigError(ValueError):
  """Bad input found before any work; the CLI prints it as one line and exits with status 2."""


class TrainingDiverged(RuntimeError):
  """A NaN or Inf loss or state; the last good checkpoint is left as it is (exit status 3)."""


class Preempted(RuntimeError):
  """A stop signal (resnet_jax.stop.STOP_SIGNALS) stopped the run after saving a checkpoint;
  `signum` is the signal (exit status 128 + signum)."""

  def __init__(self, message: str, signum: int):
    super().__init__(message)
    self.signum = signum


class NonFiniteStateError(ValueError):
  """The state to save holds NaN or Inf (the run diverged); nothing was written."""


class RunsFailed(RuntimeError):
  """Some runs of a study ended without their 'end' event."""
