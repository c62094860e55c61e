"""The degradation study of He et al. 2015 (Fig. 1, Fig. 6, Table 6): runs, figures, tables.

A study workdir holds one training workdir per run, `DIR/<model>/seed<k>/`, each with the
metrics.jsonl of docs/ARCHITECTURE.md. Figures and tables read only those files, through the
`Run` records loaded here.
"""

import dataclasses
import json
import math
import os
import re
import statistics
from pathlib import Path

METRICS_FILE = "metrics.jsonl"
FAMILIES = ("plain", "resnet")
_MODEL_RE = re.compile(r"(plain|resnet)(\d+)")
_IMAGENET_NAMES = ("resnet50", "resnet152")


def parse_model(name: str) -> tuple[str, int]:
  """Returns (family, depth) of a CIFAR model name such as 'plain56' or 'resnet110'.

  resnet50 and resnet152 name ImageNet networks (resnet_jax.models.registry), so they are refused.
  """
  match = _MODEL_RE.fullmatch(name)
  if not match or (int(match[2]) - 2) % 6 or int(match[2]) < 8 or name in _IMAGENET_NAMES:
    raise ValueError(
        f"unknown model {name!r}: use plain<d> or resnet<d> with d = 6n+2 (e.g. plain20, resnet56)"
    )
  return match[1], int(match[2])


def read_metrics(path: Path) -> list[dict]:
  """Reads a metrics.jsonl file; a last line cut by a crash is ignored."""
  rows = []
  for line in Path(path).read_text().splitlines():
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError:
      continue
  return rows


def is_finished(run_dir: Path) -> bool:
  """True when the run's metrics.jsonl ends with the "end" event."""
  path = Path(run_dir) / METRICS_FILE
  if not path.exists():
    return False
  rows = read_metrics(path)
  return bool(rows) and rows[-1].get("event") == "end"


@dataclasses.dataclass(frozen=True)
class Run:
  """One training run of the study: its model, seed and metrics rows."""

  model: str
  seed: int
  rows: list[dict]

  def series(self, key: str) -> dict[int, float]:
    """{step: value} of every row that has `key` (a later row for the same step wins)."""
    return {row["step"]: row[key] for row in self.rows if key in row and "event" not in row}

  def final(self, key: str) -> float:
    """The value of `key` in the last row that has it (nan when none has)."""
    values = self.series(key)
    return values[max(values)] if values else math.nan

  def event(self, name: str) -> dict:
    """The first row of event `name` ({} when there is none)."""
    return next((row for row in self.rows if row.get("event") == name), {})

  @property
  def wall_time(self) -> float:
    """Seconds of training, carried across resumes: the largest wall_time logged."""
    return max((row.get("wall_time", 0.0) for row in self.rows), default=math.nan)


def load_runs(workdir: Path) -> dict[str, list[Run]]:
  """{model: runs sorted by seed} for every DIR/<model>/seed<k>/metrics.jsonl of a study."""
  runs: dict[str, list[Run]] = {}
  for path in sorted(Path(workdir).glob(f"*/seed[0-9]*/{METRICS_FILE}")):
    rows = read_metrics(path)
    start = next((row for row in rows if row.get("event") == "start"), {})
    model = start.get("model", path.parent.parent.name)
    seed = int(path.parent.name.removeprefix("seed"))
    runs.setdefault(model, []).append(Run(model, seed, rows))
  return {model: sorted(found, key=lambda run: run.seed) for model, found in runs.items()}


def models_of(runs: dict[str, list[Run]], family: str) -> list[str]:
  """The models of one family ('plain' or 'resnet') in `runs`, shallowest first."""
  matches = {model: _MODEL_RE.fullmatch(model) for model in runs}
  found = {model: int(match[2]) for model, match in matches.items() if match and match[1] == family}
  return sorted(found, key=found.get)


def mean_curve(runs: list[Run], key: str) -> tuple[list[int], list[float]]:
  """Steps logged by every run and the mean of `key` over the runs at each of them."""
  steps = common_steps(runs, key)
  series = [run.series(key) for run in runs]
  return steps, [sum(values[step] for values in series) / len(series) for step in steps]


def common_steps(runs: list[Run], key: str) -> list[int]:
  """The steps at which every run logged `key`, in order."""
  steps = [set(run.series(key)) for run in runs]
  return sorted(set.intersection(*steps)) if steps else []


def seed_stats(values: list[float]) -> tuple[float, float, float]:
  """(mean, sample standard deviation, best = smallest) of one number over seeds.

  The deviation is nan for a single seed; He et al. 2015 Table 6 reports "best (mean+-std)".
  """
  values = [value for value in values if not math.isnan(value)]
  if not values:
    return math.nan, math.nan, math.nan
  std = statistics.stdev(values) if len(values) > 1 else math.nan
  return statistics.fmean(values), std, min(values)


def write_atomic(path: Path, text: str) -> None:
  """Writes `text` to `path` through a temporary file in the same folder and os.replace."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f".{path.name}.tmp")
  tmp.write_text(text)
  os.replace(tmp, path)
