"""The results table holds mean, std and best over seeds of the metrics files' last values."""

import csv
import math

import numpy as np
import pytest

from resnet_jax.study import load_runs, tables


def _expected(truth, model, key):
  finals = np.array([100 * truth[model][seed][key][-1] for seed in truth[model]])
  return finals.mean(), finals.std(ddof=1), finals.min()


def test_summary_equals_independent_statistics(fake_study):
  workdir, truth = fake_study(models=("resnet56", "plain56", "resnet20", "plain20"), seeds=3)
  rows = tables.summarize(load_runs(workdir))
  assert [row["model"] for row in rows] == ["plain20", "plain56", "resnet20", "resnet56"]
  for row in rows:
    model = row["model"]
    for key in ("train_error", "val_error", "test_error"):
      np.testing.assert_allclose([row[f"{key}_{stat}"] for stat in ("mean", "std", "best")],
                                 _expected(truth, model, key))
    assert row["seeds"] == 3 and row["params"] == truth[model][0]["params"]
    wall_times = [truth[model][seed]["wall_time"] for seed in range(3)]
    np.testing.assert_allclose(row["wall_time_s"], np.mean(wall_times))
  assert rows[2]["paper_test_error"] == 8.75 and rows[3]["paper_test_error"] == 6.97
  assert math.isnan(rows[0]["paper_test_error"])


def test_csv_and_markdown_files(fake_study):
  workdir, truth = fake_study(seeds=2)
  tables.main([str(workdir)])
  with open(workdir / "results.csv") as f:
    written = list(csv.DictReader(f))
  assert [row["model"] for row in written] == ["plain20", "plain56", "resnet20", "resnet56"]
  for row in written:
    mean, std, best = _expected(truth, row["model"], "test_error")
    written_stats = [float(row[f"test_error_{stat}"]) for stat in ("mean", "std", "best")]
    np.testing.assert_allclose(written_stats, [mean, std, best], atol=1e-4)
  assert written[0]["paper_test_error"] == "" and float(written[3]["paper_test_error"]) == 6.97
  markdown = (workdir / "results.md").read_text()
  mean, std, best = _expected(truth, "resnet56", "test_error")
  line = next(line for line in markdown.splitlines() if line.startswith("| resnet56 |"))
  assert f"{mean:.2f} ± {std:.2f} ({best:.2f})" in line and line.rstrip(" |").endswith("6.97")
  assert f"{truth['resnet56'][0]['params'] / 1e6:.2f}M" in line


def test_single_seed_has_no_spread(fake_study):
  workdir, truth = fake_study(models=("resnet20",), seeds=1)
  row, = tables.summarize(load_runs(workdir))
  final = 100 * truth["resnet20"][0]["test_error"][-1]
  assert row["test_error_mean"] == pytest.approx(final)
  assert row["test_error_best"] == pytest.approx(final)
  assert math.isnan(row["test_error_std"])
  assert f"| {final:.2f} ({final:.2f}) |" in tables.to_markdown([row])


def test_empty_workdir_is_a_one_line_error(tmp_path):
  with pytest.raises(SystemExit, match=r"^tables: no runs in .*metrics.jsonl$"):
    tables.main([str(tmp_path)])
