"""The identity-mappings study (He 2016): its recipe, presets, figures and table, drawn from
metrics files that tests/study/conftest.py writes."""

import math
from pathlib import Path

import numpy as np
import pytest

from resnet_jax.study import identity_figures, runner, tables
from resnet_jax.study.papers import FAIL, HE2016
from resnet_jax.study.runs import load_runs
from resnet_jax.study.studies import DEGRADATION, IDENTITY_MAPPINGS
from tests.study.test_runner import bad_input

QUICK = IDENTITY_MAPPINGS.presets['quick'].models


def _line(fig, gid):
  found = [line for ax in fig.axes for line in ax.get_lines() if line.get_gid() == gid]
  assert len(found) == 1, f'{gid}: {len(found)} lines'
  return found[0]


def test_paper_numbers_typed_from_the_paper():
  """He 2016 Table 1 and Table 2 (CIFAR-10 test error, %), the test's own copy."""
  table2 = {'v1': (6.61, 5.93), 'bn_after_add': (8.17, 6.50), 'relu_before_add': (7.84, 6.14),
            'relu_preact': (6.71, 5.91), 'v2': (6.37, 5.46)}
  for unit, (at110, at164) in table2.items():
    assert (HE2016[f'resnet110_{unit}'], HE2016[f'resnet164_{unit}']) == (at110, at164)
  table1 = {'scale_shortcut': FAIL, 'scale_both': 12.35, 'exclusive_gate_b6': 8.70,
            'exclusive_gate_b7': 9.81, 'shortcut_gate_b0': 12.86, 'shortcut_gate_b6': 6.91,
            'conv_shortcut': 12.22, 'dropout_shortcut': FAIL}
  assert {unit: HE2016[f'resnet110_{unit}'] for unit in table1} == table1


def test_recipe_is_he_2016s():
  config = runner.resolve_config(IDENTITY_MAPPINGS, 'resnet110_v1', [])
  assert (config.batch_size, config.learning_rate, config.num_train_steps) == (128, 0.1, 64_000)
  assert tuple(config.lr_boundaries) == (32_000, 48_000) and config.weight_decay == 1e-4
  assert (config.warmup_steps, config.warmup_learning_rate) == (400, 0.01)
  assert config.val_split == 0 and config.normalization == 'per_pixel_mean'
  assert runner.resolve_config(IDENTITY_MAPPINGS, 'resnet20_v1', []).warmup_steps == 0


def test_presets_train_the_papers_networks_and_every_run_has_a_config():
  paper = IDENTITY_MAPPINGS.presets['paper'].models
  assert set(paper) <= set(HE2016) and 'resnet164_v2' in paper and 'resnet110_scale_both' in paper
  assert {'resnet1001_v1', 'resnet1001_v2'} <= set(paper)  # Table 3, He 2016's main result
  for model in IDENTITY_MAPPINGS.models:
    assert runner.resolve_config(IDENTITY_MAPPINGS, model, []).model == model
  quick = runner.preset_overrides(IDENTITY_MAPPINGS, 'quick', QUICK[0])
  assert quick['num_train_steps'] == 300 and quick['train_subset'] == 10_000


@pytest.mark.parametrize('spec, model, message', [
    (IDENTITY_MAPPINGS, 'resnet50', 'is an ImageNet network'),
    (IDENTITY_MAPPINGS, 'resnet21_v2', 'impossible model'),
    (DEGRADATION, 'resnet110_v2', 'use plain<d> or resnet<d>'),
])
def test_each_study_refuses_networks_it_cannot_train(tmp_path, capsys, spec, model, message):
  assert message in bad_input(capsys, [f'--workdir={tmp_path}', f'--models={model}'], spec)
  assert not any(tmp_path.iterdir())


def test_figure6_plots_training_loss_and_test_error_per_depth(fake_study):
  workdir, truth = fake_study(models=('resnet20_v1', 'resnet20_v2', 'resnet110_v1',
                                      'resnet110_v2', 'resnet110_scale_shortcut'), seeds=2)
  fig = identity_figures.figure6(load_runs(workdir))
  titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
  assert titles == ['ResNet-20 (dashed: training loss, bold: test error)',
                    'ResNet-110 (dashed: training loss, bold: test error)']
  for model in ('resnet20_v1', 'resnet110_v2'):
    loss, test = _line(fig, f'{model}/train_loss'), _line(fig, f'{model}/test_error')
    np.testing.assert_allclose(loss.get_ydata(), np.mean(
        [truth[model][seed]['train_loss'] for seed in (0, 1)], axis=0))
    np.testing.assert_allclose(test.get_ydata(), 100 * np.mean(
        [truth[model][seed]['test_error'] for seed in (0, 1)], axis=0))
  gids = {line.get_gid() for ax in fig.axes for line in ax.get_lines()}
  assert not any(gid.startswith('resnet110_scale_shortcut') for gid in gids)  # Table 1's


def test_shortcuts_figure_sets_table1_beside_the_original(fake_study):
  workdir, truth = fake_study(models=('resnet20_v1', 'resnet20_v2', 'resnet20_scale_shortcut'),
                              seeds=1)
  fig = identity_figures.shortcuts(load_runs(workdir))
  gids = {line.get_gid() for ax in fig.axes for line in ax.get_lines()}
  assert gids == {f'resnet20_{unit}/{key}' for unit in ('v1', 'scale_shortcut')
                  for key in ('train_error', 'test_error')}
  np.testing.assert_allclose(_line(fig, 'resnet20_scale_shortcut/train_error').get_ydata(),
                             100 * truth['resnet20_scale_shortcut'][0]['train_error'])


def test_variants_chart_puts_ours_beside_the_papers(fake_study):
  workdir, truth = fake_study(models=QUICK, seeds=2)
  fig = identity_figures.variants(load_runs(workdir))
  ax, = fig.axes
  labels = [tick.get_text() for tick in ax.get_yticklabels()]
  units = {identity_figures.unit_label(identity_figures.unit_of(model)):
           identity_figures.unit_of(model) for model in QUICK}
  assert sorted(labels) == sorted(units)
  ours = _line(fig, 'ours/resnet20')
  for unit, x in zip([units[label] for label in labels], ours.get_xdata()):
    finals = [100 * truth[f'resnet20_{unit}'][seed]['test_error'][-1] for seed in (0, 1)]
    assert x == pytest.approx(np.mean(finals))
  paper = dict(zip(labels, _line(fig, 'paper/resnet110').get_xdata()))
  assert paper['original'] == 6.61 and paper['full pre-activation'] == 6.37
  assert paper['dropout shortcut'] == identity_figures.FAIL_AXIS  # "fail" in Table 1


def test_plot_only_draws_the_study_and_its_table(fake_study, capsys):
  workdir, _ = fake_study(models=('resnet110_v1', 'resnet110_v2', 'resnet110_dropout_shortcut'),
                          seeds=1)
  runner.main(IDENTITY_MAPPINGS, [f'--workdir={workdir}', '--plot-only'])
  drawn = [Path(path) for path in capsys.readouterr().out.split()]
  assert [path.name for path in drawn] == [f'{name}{suffix}' for name in identity_figures.FIGURES
                                           for suffix in ('.png', '.svg')] + [
                                               'results.md', 'results.csv']
  rows = tables.summarize(load_runs(workdir), HE2016, IDENTITY_MAPPINGS.models)
  assert [row['model'] for row in rows] == ['resnet110_v1', 'resnet110_v2',
                                            'resnet110_dropout_shortcut']
  assert [row['paper_test_error'] for row in rows] == [6.61, 6.37, FAIL]
  assert not any(math.isnan(row['gap_to_paper']) for row in rows[:2])  # a 64k run, all data
  markdown = (workdir / 'results.md').read_text()
  assert '| fail (>20) |' in markdown and 'He et al. 2016 Tables 1-3' in markdown
