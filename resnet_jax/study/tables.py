"""Results table of the degradation study (Markdown and CSV), read only from metrics.jsonl.

    python -m resnet_jax.study.tables DIR   # writes DIR/results.md and DIR/results.csv

Per model: final training, validation and test error in percent (mean and standard deviation
over seeds, and the best seed), parameters (from the "start" event), wall time, and the test
error of He et al. 2015 Table 6 beside ours.
"""

import argparse
import csv
import io
import math
from pathlib import Path

from resnet_jax.study import FAMILIES, Run, load_runs, models_of, seed_stats, write_atomic

# He et al. 2015 Table 6, CIFAR-10 test error (%); for ResNet-110 the best of 5 runs
# (mean 6.61 +- 0.16). The plain networks have no number there (Fig. 6 only).
PAPER_TABLE6_TEST_ERROR = {
    "resnet20": 8.75, "resnet32": 7.51, "resnet44": 7.17, "resnet56": 6.97, "resnet110": 6.43,
    "resnet1202": 7.93,
}
ERROR_KEYS = ("train_error", "val_error", "test_error")
STATS = ("mean", "std", "best")
COLUMNS = ("model", "seeds", "params", *(f"{key}_{stat}" for key in ERROR_KEYS for stat in STATS),
           "wall_time_s", "paper_test_error")


def _ordered_models(runs: dict[str, list[Run]]) -> list[str]:
  """Plain networks then ResNets, shallowest first; any other model after them by name."""
  ordered = [model for family in FAMILIES for model in models_of(runs, family)]
  return ordered + sorted(set(runs) - set(ordered))


def summarize(runs: dict[str, list[Run]]) -> list[dict]:
  """One row per model with the COLUMNS; errors in percent, nan where not logged."""
  rows = []
  for model in _ordered_models(runs):
    found = runs[model]
    params = found[0].event("start").get("params", math.nan)
    row = {"model": model, "seeds": len(found), "params": params}
    for key in ERROR_KEYS:
      stats = seed_stats([100 * run.final(key) for run in found])
      row.update(zip((f"{key}_{stat}" for stat in STATS), stats))
    row["wall_time_s"] = sum(run.wall_time for run in found) / len(found)
    row["paper_test_error"] = PAPER_TABLE6_TEST_ERROR.get(model, math.nan)
    rows.append(row)
  return rows


def _number(value: float, digits: int = 2) -> str:
  return "" if isinstance(value, float) and math.isnan(value) else f"{value:.{digits}f}"


def to_csv(rows: list[dict]) -> str:
  """The rows as CSV with the COLUMNS as header; nan is an empty cell."""
  out = io.StringIO()
  writer = csv.writer(out, lineterminator="\n")
  writer.writerow(COLUMNS)
  for row in rows:
    writer.writerow([_number(row[name], 4) if isinstance(row[name], float) else row[name]
                     for name in COLUMNS])
  return out.getvalue()


def _error_cell(row: dict, key: str) -> str:
  mean, std, best = (row[f"{key}_{stat}"] for stat in STATS)
  if math.isnan(mean):
    return "-"
  spread = "" if math.isnan(std) else f" ± {std:.2f}"
  return f"{mean:.2f}{spread} ({best:.2f})"


def _params_cell(params) -> str:
  return "-" if isinstance(params, float) and math.isnan(params) else f"{params / 1e6:.2f}M"


def to_markdown(rows: list[dict]) -> str:
  """The rows as a Markdown table: error cells read 'mean ± std (best)' in percent."""
  lines = [
      "| model | seeds | params | train error % | val error % | test error % | wall time (min) | "
      "paper test error % (Table 6) |",
      "|---|---:|---:|---:|---:|---:|---:|---:|",
  ]
  for row in rows:
    cells = [row["model"], str(row["seeds"]), _params_cell(row["params"]),
             *(_error_cell(row, key) for key in ERROR_KEYS),
             _number(row["wall_time_s"] / 60, 1) or "-", _number(row["paper_test_error"]) or "-"]
    lines.append("| " + " | ".join(cells) + " |")
  note = ("Errors in percent: mean ± sample standard deviation over seeds (best seed). Training "
          "error is the last logged interval of augmented training batches; validation and test "
          "error are the last evaluation (He et al. 2015 sec. 4.2 split: 45k train / 5k val).")
  return "\n".join(lines) + "\n\n" + note + "\n"


def write_tables(workdir: Path, out_dir: Path | None = None) -> tuple[Path, Path]:
  """Writes results.md and results.csv for the runs of `workdir` into out_dir (default workdir)."""
  rows = summarize(load_runs(workdir))
  if not rows:
    raise ValueError(f"no runs in {workdir}: expected {workdir}/<model>/seed<k>/metrics.jsonl")
  out_dir = Path(out_dir or workdir)
  markdown, table = out_dir / "results.md", out_dir / "results.csv"
  write_atomic(markdown, to_markdown(rows))
  write_atomic(table, to_csv(rows))
  return markdown, table


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("workdir", type=Path, help="study folder: DIR/<model>/seed<k>/metrics.jsonl")
  parser.add_argument("--out_dir", type=Path, default=None, help="default: WORKDIR")
  args = parser.parse_args(argv)
  try:
    paths = write_tables(args.workdir, args.out_dir)
  except ValueError as error:
    raise SystemExit(f"tables: {error}") from None
  print(*paths, sep="\n")


if __name__ == "__main__":
  main()
