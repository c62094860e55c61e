"""The results table holds mean, std and best over seeds of the metrics files' last values."""

import csv
import json
import math

import numpy as np
import pytest

from resnet_jax import config as config_lib
from resnet_jax.study import papers, tables
from resnet_jax.study.papers import HE2015_TABLE6
from resnet_jax.study.runs import load_runs

# He et al. 2015 Table 6 (CIFAR-10 test error, %), typed from the paper.
PAPER = {'resnet20': 8.75, 'resnet32': 7.51, 'resnet44': 7.17, 'resnet56': 6.97, 'resnet110': 6.43}
SOURCE = 'He et al. 2015 Table 6'


def _expected(truth, model, key):
  finals = np.array([100 * truth[model][seed][key][-1] for seed in truth[model]])
  return finals.mean(), finals.std(ddof=1), finals.min()


def test_summary_equals_independent_statistics(fake_study):
  workdir, truth = fake_study(models=('resnet56', 'plain56', 'resnet20', 'plain20'), seeds=3)
  rows = tables.summarize(load_runs(workdir), HE2015_TABLE6)
  assert [row['model'] for row in rows] == ['plain20', 'plain56', 'resnet20', 'resnet56']
  for row in rows:
    model = row['model']
    for key in ('train_error', 'val_error', 'test_error'):
      np.testing.assert_allclose([row[f'{key}_{stat}'] for stat in ('mean', 'std', 'best')],
                                 _expected(truth, model, key))
    assert row['seeds'] == 3 and row['params'] == truth[model][0]['params']
    assert row['iterations'] == row['num_train_steps'] == 64000
    wall_times = [truth[model][seed]['wall_time'] for seed in range(3)]
    np.testing.assert_allclose(row['wall_time_s'], np.mean(wall_times))
  for row in rows[2:]:
    assert row['paper_test_error'] == PAPER[row['model']]
    assert row['gap_to_paper'] == pytest.approx(
        _expected(truth, row['model'], 'test_error')[0] - PAPER[row['model']])
  assert math.isnan(rows[0]['paper_test_error']) and math.isnan(rows[0]['gap_to_paper'])


def test_csv_and_markdown_files(fake_study):
  workdir, truth = fake_study(seeds=2)
  written = tables.write_tables(workdir, HE2015_TABLE6, SOURCE)
  assert written == (workdir / 'results.md', workdir / 'results.csv')
  with open(workdir / 'results.csv') as f:
    written = list(csv.DictReader(f))
  assert [row['model'] for row in written] == ['plain20', 'plain56', 'resnet20', 'resnet56']
  for row in written:
    mean, std, best = _expected(truth, row['model'], 'test_error')
    written_stats = [float(row[f'test_error_{stat}']) for stat in ('mean', 'std', 'best')]
    np.testing.assert_allclose(written_stats, [mean, std, best], atol=1e-4)
  assert written[0]['paper_test_error'] == written[0]['gap_to_paper'] == ''
  assert float(written[3]['paper_test_error']) == 6.97
  markdown = (workdir / 'results.md').read_text()
  assert markdown.startswith('Runs: cifar10, batch 128, 64000 iterations, 2 seeds.\n')
  mean, std, best = _expected(truth, 'resnet56', 'test_error')
  line = next(line for line in markdown.splitlines() if line.startswith('| resnet56 |'))
  assert '| 64000 |' in line and f'{mean:.2f} ± {std:.2f} ({best:.2f})' in line
  assert line.endswith(f'| 6.97 (ours {mean - 6.97:+.2f}) |')
  assert f"{truth['resnet56'][0]['params'] / 1e6:.2f}M" in line
  assert not list(workdir.glob('.*'))  # no temporary file left


def test_quick_runs_get_no_gap_to_the_paper(fake_study):
  workdir, _ = fake_study(models=('resnet20', 'resnet56'), seeds=1, num_steps=300)
  assert [row['gap_to_paper'] for row in tables.summarize(load_runs(workdir), HE2015_TABLE6)] == [
      pytest.approx(math.nan, nan_ok=True)] * 2
  tables.write_tables(workdir, HE2015_TABLE6, SOURCE)
  line = next(line for line in (workdir / 'results.md').read_text().splitlines()
              if line.startswith('| resnet20 |'))
  assert line.endswith('| 8.75 |')  # the paper's number, no comparison


def test_runs_on_a_data_subset_get_no_gap_and_say_so(fake_study):
  # the settings come from config.json: the 'start' event here says nothing of subsets
  workdir, _ = fake_study(models=('resnet20', 'resnet56'), seeds=1)
  path = workdir / 'resnet56' / 'seed0' / 'config.json'
  path.write_text(json.dumps({**json.loads(path.read_text()), 'test_subset': 2000}))
  resnet20, resnet56 = tables.summarize(load_runs(workdir), HE2015_TABLE6)
  assert not math.isnan(resnet20['gap_to_paper']) and math.isnan(resnet56['gap_to_paper'])
  tables.write_tables(workdir, HE2015_TABLE6, SOURCE)
  assert (workdir / 'results.md').read_text().startswith(
      'Runs: cifar10, batch 128, 64000 iterations, test subset 0/2000, 1 seed.\n')


def test_unfinished_runs_get_no_gap_to_the_paper(fake_study):
  workdir, _ = fake_study(models=('resnet20',), seeds=2)
  cut = workdir / 'resnet20' / 'seed1' / 'metrics.jsonl'
  cut.write_text(''.join(cut.read_text().splitlines(keepends=True)[:-1]))  # no 'end' event
  row, = tables.summarize(load_runs(workdir), HE2015_TABLE6)
  assert math.isnan(row['gap_to_paper']) and row['paper_test_error'] == 8.75


def test_single_seed_has_no_spread(fake_study):
  workdir, truth = fake_study(models=('resnet20',), seeds=1)
  row, = tables.summarize(load_runs(workdir), HE2015_TABLE6)
  final = 100 * truth['resnet20'][0]['test_error'][-1]
  assert row['test_error_mean'] == pytest.approx(final)
  assert row['test_error_best'] == pytest.approx(final)
  assert math.isnan(row['test_error_std'])
  assert f'| {final:.2f} ({final:.2f}) |' in tables.to_markdown([row], 'setting', SOURCE)


def test_unfinished_runs_are_marked(fake_study):
  workdir, _ = fake_study(models=('resnet20',), seeds=2, num_steps=320)
  metrics = workdir / 'resnet20' / 'seed1' / 'metrics.jsonl'
  rows = [json.loads(line) for line in metrics.read_text().splitlines()]
  cut = [row for row in rows if row['step'] <= 280 and row.get('event') != 'end']
  metrics.write_text(''.join(json.dumps(row) + '\n' for row in cut))
  summary = tables.summarize(load_runs(workdir), HE2015_TABLE6)
  markdown = tables.to_markdown(summary, 'setting', SOURCE)
  assert '| resnet20 | 2 |' in markdown and '| 280 of 320 (unfinished) |' in markdown


def test_empty_workdir_is_a_one_line_error(tmp_path):
  with pytest.raises(ValueError, match=r'^no runs in .*metrics.jsonl$'):
    tables.write_tables(tmp_path, HE2015_TABLE6, SOURCE)


def test_the_paper_setting_names_result_fields():
  """Table 6's setting is stated in fields that change a run's numbers (resnet_jax.config)."""
  assert set(tables.PAPER_SETTING) <= set(config_lib.RESULT_FIELDS)


def test_paper_numbers_typed_from_the_paper():
  """papers.py holds Table 6 as printed (the test's own copy, typed from the paper)."""
  assert {model: HE2015_TABLE6[model] for model in PAPER} == PAPER


def test_failed_paper_network_reads_fail_and_has_no_gap(fake_study):
  workdir, _ = fake_study(models=('resnet20',), seeds=1)
  row, = tables.summarize(load_runs(workdir), {'resnet20': papers.FAIL})
  assert math.isnan(row['gap_to_paper'])
  assert '| fail (>20) |' in tables.to_markdown([row], 'setting', 'He et al. 2016 Table 1')
  assert tables.to_csv([row]).splitlines()[1].split(',')[-2] == 'inf'
