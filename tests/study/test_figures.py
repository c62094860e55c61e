"""The figures draw exactly the numbers of the metrics files (tests/study/conftest.py)."""

import numpy as np
import pytest

from resnet_jax.study import figures
from resnet_jax.study.runs import load_runs


def _line(fig, gid):
  found = [line for ax in fig.axes for line in ax.get_lines() if line.get_gid() == gid]
  assert len(found) == 1, f'{gid}: {len(found)} lines'
  return found[0]


def _seed_mean(truth, model, key):
  return np.mean([truth[model][seed][key] for seed in truth[model]], axis=0)


@pytest.mark.parametrize('num_steps, unit, xlabel', [
    (64000, 1e4, 'iter. (1e4)'), (16000, 1e3, 'iter. (1e3)'), (320, 1, 'iterations')])
def test_figure6_plots_mean_error_in_percent_against_iterations(fake_study, num_steps, unit,
                                                                xlabel):
  workdir, truth = fake_study(num_steps=num_steps)
  fig = figures.figure6(load_runs(workdir))
  plain_ax, resnet_ax = fig.axes
  for model in truth:
    ax = plain_ax if model.startswith('plain') else resnet_ax
    train, test = _line(fig, f'{model}/train_error'), _line(fig, f'{model}/test_error')
    assert train in ax.get_lines() and test in ax.get_lines()
    np.testing.assert_allclose(train.get_xdata(), truth[model][0]['train_steps'] / unit)
    np.testing.assert_allclose(train.get_ydata(), 100 * _seed_mean(truth, model, 'train_error'))
    np.testing.assert_allclose(test.get_xdata(), truth[model][0]['eval_steps'] / unit)
    np.testing.assert_allclose(test.get_ydata(), 100 * _seed_mean(truth, model, 'test_error'))
    assert train.get_linestyle() == '--' and test.get_linewidth() > train.get_linewidth()
    assert train.get_color() == test.get_color()
  assert plain_ax.get_xlabel() == resnet_ax.get_xlabel() == xlabel
  legend = [text.get_text() for text in resnet_ax.get_legend().get_texts()]
  assert legend == ['ResNet-20 (2 runs)', 'ResNet-56 (2 runs)', 'training', 'test']
  assert [ax.get_ylabel() for ax in fig.axes] == ['error (%)', 'error (%)']
  colours = {_line(fig, f'{model}/test_error').get_color() for model in truth}
  assert len(colours) == 2  # one colour per depth, shared by plain and residual
  assert fig.get_suptitle() == f'cifar10, batch 128, {num_steps} iterations, 2 seeds'


def test_figure1_plots_plain20_and_plain56_training_and_test_error(fake_study):
  workdir, truth = fake_study(models=('plain20', 'plain32', 'plain56', 'resnet20'))
  fig = figures.figure1(load_runs(workdir))
  train_ax, test_ax = fig.axes
  gids = [[line.get_gid() for line in ax.get_lines()] for ax in (train_ax, test_ax)]
  assert gids == [['plain20/train_error', 'plain56/train_error'],
                  ['plain20/test_error', 'plain56/test_error']]
  for model in ('plain20', 'plain56'):
    np.testing.assert_allclose(_line(fig, f'{model}/train_error').get_ydata(),
                               100 * _seed_mean(truth, model, 'train_error'))
    np.testing.assert_allclose(_line(fig, f'{model}/test_error').get_xydata(),
                               np.stack([truth[model][0]['eval_steps'] / 1e4,
                                         100 * _seed_mean(truth, model, 'test_error')], axis=1))


def test_error_vs_depth_plots_final_mean_with_seed_std(fake_study):
  workdir, truth = fake_study(models=('plain20', 'plain56', 'resnet20', 'resnet56'), seeds=3)
  fig = figures.error_vs_depth(load_runs(workdir))
  for ax, family in zip(fig.axes, ('plain', 'resnet')):
    for key in ('train_error', 'test_error'):
      container = next(c for c in ax.containers if c.lines[0].get_gid() == f'{family}/{key}')
      finals = np.array([[100 * truth[f'{family}{depth}'][seed][key][-1] for seed in range(3)]
                         for depth in (20, 56)])
      data = np.asarray(container.lines[0].get_xydata(), dtype=float)  # errorbar keeps objects
      np.testing.assert_allclose(data, np.stack([[20, 56], finals.mean(axis=1)], axis=1))
      half_bars = [(seg[1, 1] - seg[0, 1]) / 2 for seg in container.lines[2][0].get_segments()]
      np.testing.assert_allclose(half_bars, finals.std(axis=1, ddof=1))


def test_grad_norms_plots_first_logged_steps_per_layer(fake_study):
  workdir, truth = fake_study()
  fig = figures.grad_norms(load_runs(workdir))
  assert [ax.get_title() for ax in fig.axes] == ['plain-56 (2 runs)', 'ResNet-56 (2 runs)']
  for model in ('plain56', 'resnet56'):
    norms = _seed_mean(truth, model, 'grad_norms')
    for i, step in enumerate(truth[model][0]['train_steps'][:3]):
      line = _line(fig, f'{model}/step{step}')
      np.testing.assert_allclose(line.get_xdata(), np.arange(1, norms.shape[1] + 1))
      np.testing.assert_allclose(line.get_ydata(), norms[i])
  assert len(fig.axes[0].get_lines()) == 3 and fig.axes[0].get_yscale() == 'log'


def test_draw_figures_writes_png_and_svg_of_every_figure(fake_study):
  workdir, _ = fake_study()
  written = figures.draw_figures(workdir)
  names = ('figure1', 'figure6', 'error_vs_depth', 'grad_norms')
  assert written == [workdir / 'figures' / f'{name}{suffix}' for name in names
                     for suffix in ('.png', '.svg')]
  for name in names:
    png, svg = workdir / 'figures' / f'{name}.png', workdir / 'figures' / f'{name}.svg'
    assert png.read_bytes().startswith(b'\x89PNG') and png.stat().st_size > 10_000
    assert '<svg' in svg.read_text()
  assert not list((workdir / 'figures').glob('.*'))  # no temporary file left


def test_unfinished_runs_are_named_in_the_title(fake_study):
  workdir, _ = fake_study(models=('plain20', 'resnet20'), seeds=1, num_steps=320)
  metrics = workdir / 'resnet20' / 'seed0' / 'metrics.jsonl'
  metrics.write_text(''.join(metrics.read_text().splitlines(keepends=True)[:-1]))  # no 'end'
  fig = figures.figure6(load_runs(workdir))
  assert fig.get_suptitle() == ('cifar10, batch 128, 320 iterations, 1 seed; '
                                'unfinished: resnet20/seed0 at 320')


def _cut(workdir, model: str, seed: int) -> None:
  """Removes the 'end' event of a run: it is still under way."""
  metrics = workdir / model / f'seed{seed}' / 'metrics.jsonl'
  metrics.write_text(''.join(metrics.read_text().splitlines(keepends=True)[:-1]))


def test_draw_figures_draws_the_finished_runs_labelled_with_their_count(fake_study, capsys,
                                                                         monkeypatch):
  workdir, truth = fake_study(models=('plain20', 'plain56', 'resnet20', 'resnet56'), seeds=3)
  _cut(workdir, 'resnet20', 1)
  for seed in range(3):
    _cut(workdir, 'plain56', seed)
  drawn = {}
  monkeypatch.setattr(figures, 'save_figure', lambda fig, path: drawn.setdefault(path.stem, fig))
  figures.draw_figures(workdir)
  assert 'left out unfinished runs plain56/seed0, plain56/seed1, plain56/seed2, resnet20/seed1' in (
      capsys.readouterr().err)
  fig = drawn['figure6']
  legends = [[text.get_text() for text in ax.get_legend().get_texts()] for ax in fig.axes]
  assert legends == [['plain-20 (3 runs)', 'training', 'test'],
                     ['ResNet-20 (2 runs)', 'ResNet-56 (3 runs)', 'training', 'test']]
  finished = np.mean([truth['resnet20'][seed]['test_error'] for seed in (0, 2)], axis=0)
  np.testing.assert_allclose(_line(fig, 'resnet20/test_error').get_ydata(), 100 * finished)
  assert [text.get_text() for text in drawn['figure1'].axes[0].get_legend().get_texts()] == [
      '20-layer (3 runs)']
  assert [text.get_text() for text in drawn['error_vs_depth'].axes[1].get_legend().get_texts()] == [
      'training (2-3 runs each)', 'test (2-3 runs each)']


def test_a_study_without_a_finished_run_is_a_one_line_error(fake_study):
  workdir, _ = fake_study(models=('resnet20',), seeds=1)
  _cut(workdir, 'resnet20', 0)
  with pytest.raises(ValueError, match=r'^no finished runs in .* yet \(1 under way\): --status'):
    figures.draw_figures(workdir)


def test_missing_runs_skip_a_figure_with_a_note(fake_study, capsys):
  workdir, _ = fake_study(models=('resnet20',), seeds=1)
  written = figures.draw_figures(workdir)
  assert {path.stem for path in written} == {'figure6', 'error_vs_depth'}
  assert 'skipped figure1' in capsys.readouterr().err


def test_workdir_without_runs_is_a_one_line_error(tmp_path):
  with pytest.raises(ValueError, match=r'^no runs in .*metrics.jsonl$'):
    figures.draw_figures(tmp_path / 'missing')
  assert not (tmp_path / 'missing').exists()
