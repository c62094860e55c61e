"""The runs of a study (resnet_jax/study/studies.py) as read from disk.

A study workdir holds one training workdir per run, `DIR/<model>/seed<k>/`, each with the
metrics.jsonl of docs/ARCHITECTURE.md. Figures and tables read only those files, through the
`Run` records loaded here.
"""

import dataclasses
import json
import math
import statistics
from pathlib import Path

from resnet_jax.models import parse_name
from resnet_jax.train.metrics import METRICS_FILE, ended, read_rows

FAMILIES = ('plain', 'resnet')  # the variants of He et al. 2015 Fig. 6: plain and option A
RUN_CONFIG_FILE = 'config.json'  # written by resnet_jax.train.checkpoint.write_config


def parse_model(name: str) -> tuple[str, int]:
  """(family, depth) of a network of He et al. 2015 Fig. 6, e.g. 'plain56' or 'resnet110'.

  Only the CIFAR plain and option-A residual networks (sec. 4.2) qualify; resnet50 and
  resnet152 name ImageNet networks (resnet_jax.models.registry) and are refused.
  """
  try:
    spec = parse_name(name)
  except ValueError:
    spec = None
  if spec is None or spec.family != 'cifar' or spec.variant not in FAMILIES:
    raise ValueError(f'unknown model {name!r}: use plain<d> or resnet<d> with d = 6n+2 '
                     '(e.g. plain20, resnet56)')
  return spec.variant, spec.depth


def check_cifar(name: str) -> None:
  """One-line ValueError unless `name` is a CIFAR network of the registry (any variant)."""
  if parse_name(name).family != 'cifar':
    raise ValueError(f'{name!r} is an ImageNet network: use a CIFAR one (e.g. resnet110_v2)')


def read_config(run_dir: Path) -> dict:
  """The settings a run trained with: its config.json ({} when there is none yet).

  The one reader of a run's settings: the runner's resume guard, the tables and the figure titles
  all describe a run from it. An unreadable file is a one-line ValueError.
  """
  path = Path(run_dir) / RUN_CONFIG_FILE
  if not path.exists():
    return {}
  try:
    return json.loads(path.read_text())
  except (OSError, ValueError) as error:
    raise ValueError(f'{path} is unreadable ({error}); delete {run_dir} or use another '
                     '--workdir') from None


def is_finished(run_dir: Path) -> bool:
  """True when the run's metrics.jsonl ends with the 'end' event."""
  return ended(read_rows(Path(run_dir) / METRICS_FILE))


@dataclasses.dataclass(frozen=True)
class Run:
  """One training run of the study: its model, seed, metrics rows and settings (read_config)."""

  model: str
  seed: int
  rows: list[dict]
  config: dict = dataclasses.field(default_factory=dict)

  def series(self, key: str) -> dict[int, float]:
    """{step: value} of every row that has `key` (a later row for the same step wins)."""
    return {row['step']: row[key] for row in self.rows if key in row and 'event' not in row}

  def final(self, key: str) -> float:
    """The value of `key` in the last row that has it (nan when none has)."""
    values = self.series(key)
    return values[max(values)] if values else math.nan

  @property
  def finished(self) -> bool:
    """True when the run's rows end with the 'end' event (metrics.ended)."""
    return ended(self.rows)

  def event(self, name: str) -> dict:
    """The first row of event `name` ({} when there is none)."""
    return next((row for row in self.rows if row.get('event') == name), {})

  @property
  def last_step(self) -> int:
    """Train steps done: the largest step logged."""
    return max((row['step'] for row in self.rows), default=0)

  @property
  def wall_time(self) -> float:
    """Seconds of training, carried across resumes: the largest wall_time logged."""
    return max((row.get('wall_time', 0.0) for row in self.rows), default=math.nan)


def load_runs(workdir: Path) -> dict[str, list[Run]]:
  """{model: runs sorted by seed} for every DIR/<model>/seed<k>/metrics.jsonl of a study."""
  runs: dict[str, list[Run]] = {}
  for path in sorted(Path(workdir).glob(f'*/seed[0-9]*/{METRICS_FILE}')):
    model, seed = path.parent.parent.name, int(path.parent.name.removeprefix('seed'))
    runs.setdefault(model, []).append(Run(model, seed, read_rows(path), read_config(path.parent)))
  return {model: sorted(found, key=lambda run: run.seed) for model, found in runs.items()}


def models_of(runs: dict[str, list[Run]], family: str) -> list[str]:
  """The models of one family ('plain' or 'resnet') in `runs`, shallowest first."""
  depths = {}
  for model in runs:
    try:
      found, depth = parse_model(model)
    except ValueError:
      continue
    if found == family:
      depths[model] = depth
  return sorted(depths, key=depths.get)


def common_steps(runs: list[Run], key: str) -> list[int]:
  """The steps at which every run logged `key`, in order."""
  steps = [set(run.series(key)) for run in runs]
  return sorted(set.intersection(*steps)) if steps else []


def mean_curve(runs: list[Run], key: str) -> tuple[list[int], list[float]]:
  """Steps logged by every run and the mean of `key` over the runs at each of them."""
  steps = common_steps(runs, key)
  series = [run.series(key) for run in runs]
  return steps, [statistics.fmean(values[step] for values in series) for step in steps]


def describe(runs: dict[str, list[Run]]) -> str:
  """What the runs are, from their settings (read_config): data set, batch size, iterations, any
  data subset, seeds and any unfinished run, e.g. 'cifar10, batch 128, 64000 iterations, 1 seed'
  or 'image_folder, batch 128, 250 iterations, train subset 10000, test subset 1000, 1 seed'.

  Figures and tables carry it, so a quick or partial study is never taken for the paper's
  (sec. 4.2: batch 128, 64k iterations).
  """
  found = [run for model in sorted(runs) for run in runs[model]]

  def joined(values) -> str:  # shortest first, so numbers come in order
    return '/'.join(sorted({str(value) for value in values}, key=lambda text: (len(text), text)))

  def values(key: str) -> str:
    return joined(run.config.get(key, '?') for run in found)

  seeds = joined(len(model_runs) for model_runs in runs.values())
  subsets = [f"{split} subset {values(f'{split}_subset')}" for split in ('train', 'test')
             if any(run.config.get(f'{split}_subset') for run in found)]
  text = ', '.join([values('dataset'), f"batch {values('batch_size')}",
                    f"{values('num_train_steps')} iterations", *subsets,
                    f"{seeds} seed{'' if seeds == '1' else 's'}"])
  unfinished = [f'{run.model}/seed{run.seed} at {run.last_step}' for run in found
                if not run.finished]
  return f"{text}; unfinished: {', '.join(unfinished)}" if unfinished else text


def seed_stats(values: list[float]) -> tuple[float, float, float]:
  """(mean, sample standard deviation, best = smallest) of one number over seeds.

  The deviation is nan for a single seed; He et al. 2015 Table 6 reports 'best (mean+-std)'.
  """
  values = [value for value in values if not math.isnan(value)]
  if not values:
    return math.nan, math.nan, math.nan
  std = statistics.stdev(values) if len(values) > 1 else math.nan
  return statistics.fmean(values), std, min(values)
