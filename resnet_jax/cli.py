"""Commands with their own absl FlagValues (evaluate, convert), so that any of them can be
imported beside another module's global flags (one pytest process, a notebook) without a
DuplicateFlagError."""

from __future__ import annotations

import sys
from collections.abc import Callable

from absl import flags, logging

from resnet_jax.errors import BAD_INPUT_STATUS, ConfigError, exit_with

HELP_FLAGS = ('-h', '--help', '--helpshort', '--helpfull')


def run(main: Callable[[], None], flag_values: flags.FlagValues,
        argv: list[str] | None = None) -> None:
  """Parses argv (sys.argv) into flag_values and calls main(); a bad flag or a ConfigError is
  one line on stderr and exit status BAD_INPUT_STATUS. --help (or -h) prints the command's
  module docstring and its flags, and exits 0 without running it."""
  argv = sys.argv if argv is None else argv
  if any(arg in HELP_FLAGS for arg in argv[1:]):
    print(_usage(main, flag_values))
    sys.exit(0)
  flag_values.unparse_flags()  # a second call (a test) starts from the defaults
  try:
    rest = flag_values(argv)
  except flags.Error as error:
    exit_with(f'error: {error}', BAD_INPUT_STATUS)
  if len(rest) > 1:
    exit_with(f'error: unexpected arguments {rest[1:]}', BAD_INPUT_STATUS)
  flags.FLAGS.mark_as_parsed()  # absl logging reads the global flags
  logging.set_verbosity(logging.WARNING)  # orbax logs every restore at INFO
  try:
    main()
  except ConfigError as error:
    exit_with(f'error: {error}', BAD_INPUT_STATUS)


def _usage(main: Callable[[], None], flag_values: flags.FlagValues) -> str:
  """The docstring of main's module, then every flag of flag_values with its help and default."""
  doc = (sys.modules[main.__module__].__doc__ or '').strip()
  return f'{doc}\n\nflags:\n{flag_values.get_help().strip()}'
