"""Figures of the degradation study (He et al. 2015, Fig. 1 and Fig. 6), drawn only from the
runs' metrics.jsonl, and the helpers every study's figures share (draw_figures, save_figure,
the iteration axis); `python experiments/degradation.py --workdir=DIR --plot-only` redraws them.

Each figure function takes `runs.load_runs(DIR)` and returns a matplotlib Figure; every plotted
line carries a gid '<model>/<metric>' (or '<model>/step<k>') so that its data can be read back.
Curves are the mean over seeds at the steps that every seed logged; the x axis counts
iterations in units scaled to the runs (1e4 for the paper's 64k, as its figures; 1e3 or single
iterations for shorter runs). draw_figures draws the finished runs only, so that a study still
under way (e.g. on SLURM) draws what it has: each label says how many runs its curve holds, e.g.
'ResNet-20 (3 runs)'. Every figure's title says what the runs are (runs.describe), so quick or
partial studies are never taken for the paper's.
"""

import math
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from resnet_jax.files import atomic_write
from resnet_jax.study.runs import (FAMILIES, Run, common_steps, describe, load_runs, mean_curve,
                                   models_of, parse_model, seed_stats)

FIGURES_DIR = 'figures'
ITERATION_UNITS = (10_000, 1000, 1)  # He et al. 2015 Fig. 1 and Fig. 6: 'iter. (1e4)'
EARLY_GRAD_NORM_ROWS = 3
_TITLES = {'plain': 'plain networks', 'resnet': 'ResNets'}
_FAMILY_NAMES = {'plain': 'plain', 'resnet': 'ResNet'}
_DEPTH_COLOURS = {20: 'tab:orange', 32: 'tab:blue', 44: 'tab:red', 56: 'tab:green',
                  110: 'tab:purple'}

Runs = dict[str, list[Run]]


def label(model: str) -> str:
  """The paper's name of a network: 'plain-20', 'ResNet-56' (He et al. 2015 Fig. 6)."""
  family, depth = parse_model(model)
  return f"{_FAMILY_NAMES[family]}-{depth}"


def counted(text: str, runs: list[Run]) -> str:
  """`text` with the number of runs its curve holds, e.g. 'ResNet-20 (3 runs)'."""
  return f"{text} ({len(runs)} run{'' if len(runs) == 1 else 's'})"


def colour(model: str) -> str:
  """One colour per depth, the same in every figure."""
  depth = parse_model(model)[1]
  return _DEPTH_COLOURS.get(depth, f'C{depth % 10}')


def _require(models: list[str], what: str) -> None:
  if not models:
    raise ValueError(f'no runs for {what} in this workdir: run those models first')


def new_figure(runs: Runs, width: float) -> Figure:
  fig = Figure(figsize=(width, 4.5), layout='constrained')
  fig.suptitle(describe(runs), fontsize='small')
  return fig


def iteration_unit(runs: Runs) -> int:
  """The largest of ITERATION_UNITS that the longest run spans at least twice."""
  longest = max(run.last_step for found in runs.values() for run in found)
  return next((unit for unit in ITERATION_UNITS if longest >= 2 * unit), 1)


def xlabel(unit: int) -> str:
  return 'iterations' if unit == 1 else f'iter. (1e{len(str(unit)) - 1})'


def _plot_curve(ax, runs: list[Run], key: str, unit: int, **style) -> None:
  """The mean over seeds of `key` in percent against iterations / unit."""
  steps, values = mean_curve(runs, key)
  model = runs[0].model
  ax.plot([step / unit for step in steps], [100 * value for value in values],
          color=colour(model), gid=f'{model}/{key}', **style)


def figure1(runs: Runs) -> Figure:
  """He et al. 2015 Fig. 1: training (left) and test (right) error of plain-20 and plain-56.

  Falls back to the shallowest and deepest plain networks present when those two are missing.
  """
  plain = models_of(runs, 'plain')
  _require(plain, 'plain networks')
  paper = ['plain20', 'plain56']
  models = paper if set(paper) <= set(plain) else list(dict.fromkeys([plain[0], plain[-1]]))
  fig, unit = new_figure(runs, 10), iteration_unit(runs)
  panels = (('train_error', 'training error'), ('test_error', 'test error'))
  for ax, (key, title) in zip(fig.subplots(1, 2), panels):
    for model in models:
      _plot_curve(ax, runs[model], key, unit, marker='.' if key == 'test_error' else None,
                  label=counted(f'{parse_model(model)[1]}-layer', runs[model]))
    ax.set(title=title, xlabel=xlabel(unit), ylabel=f'{title} (%)')
    ax.legend()
  return fig


def figure6(runs: Runs) -> Figure:
  """He et al. 2015 Fig. 6 (left, middle): plain networks (left) and ResNets (right).

  Dashed lines are training error, bold lines (dots at the evaluations) test error, in percent
  against iterations; one colour per depth; the legend names both.
  """
  _require(models_of(runs, 'plain') + models_of(runs, 'resnet'), 'plain networks or ResNets')
  fig, unit = new_figure(runs, 11), iteration_unit(runs)
  kinds = [Line2D([], [], color='grey', linestyle='--', linewidth=1, label='training'),
           Line2D([], [], color='grey', linewidth=2.5, marker='.', label='test')]
  for ax, family in zip(fig.subplots(1, 2, sharey=True), FAMILIES):
    for model in models_of(runs, family):
      _plot_curve(ax, runs[model], 'train_error', unit, linestyle='--', linewidth=1)
      _plot_curve(ax, runs[model], 'test_error', unit, linewidth=2.5, marker='.',
                  label=counted(label(model), runs[model]))
    ax.set(title=f'{_TITLES[family]} (dashed: training, bold: test)', xlabel=xlabel(unit),
           ylabel='error (%)')
    if ax.lines:
      ax.legend(handles=[*ax.get_legend_handles_labels()[0], *kinds])
  return fig


def final_errors(runs: list[Run], key: str) -> tuple[float, float]:
  """Mean and sample standard deviation (0 for one seed) over seeds of the final `key`, in %."""
  mean, std, _ = seed_stats([100 * run.final(key) for run in runs])
  return mean, 0.0 if math.isnan(std) else std


def error_vs_depth(runs: Runs) -> Figure:
  """Final training and test error against depth, plain (left) and residual (right), with the
  standard deviation over seeds as error bars (the trend of He et al. 2015 Fig. 6 and Table 6)."""
  _require(models_of(runs, 'plain') + models_of(runs, 'resnet'), 'plain networks or ResNets')
  fig = new_figure(runs, 10)
  styles = {'train_error': dict(linestyle='--'), 'test_error': dict(linewidth=2.5)}
  for ax, family in zip(fig.subplots(1, 2, sharey=True), FAMILIES):
    models = models_of(runs, family)
    depths = [parse_model(model)[1] for model in models]
    ax.set(title=_TITLES[family], xlabel='depth (layers)', ylabel='final error (%)', xticks=depths)
    if not models:
      continue
    each = _runs_each([len(runs[model]) for model in models])
    for (key, style), name in zip(styles.items(), ('training', 'test')):
      means, stds = zip(*(final_errors(runs[model], key) for model in models))
      bars = ax.errorbar(depths, means, yerr=stds, marker='o', capsize=4,
                         label=f'{name} ({each})', **style)
      bars.lines[0].set_gid(f'{family}/{key}')
    ax.legend()
  return fig


def _runs_each(counts: list[int]) -> str:
  """How many runs each point of a curve averages: '1 run each', '2-3 runs each'."""
  low, high = min(counts), max(counts)
  return f"{low if low == high else f'{low}-{high}'} run{'' if high == 1 else 's'} each"


def _grad_norm_model(runs: Runs, family: str) -> str | None:
  """The deepest model of `family` whose train rows carry 'grad_norms'."""
  logged = [model for model in models_of(runs, family) if runs[model][0].series('grad_norms')]
  return logged[-1] if logged else None


def _early_grad_norms(runs: list[Run]) -> dict[int, list[float]]:
  """{step: per-layer norms, mean over seeds} for the first rows that logged gradient norms."""
  norms = {}
  for step in common_steps(runs, 'grad_norms')[:EARLY_GRAD_NORM_ROWS]:
    layers = [run.series('grad_norms')[step] for run in runs]
    norms[step] = [sum(layer[name] for layer in layers) / len(layers) for name in layers[0]]
  return norms


def grad_norms(runs: Runs) -> Figure:
  """Beyond the paper: per-layer gradient norms early in training, in network order.

  In a deep plain network the gradient reaching the first layers is much smaller than at the
  head; the identity shortcuts of a ResNet carry it back (He et al. 2015 sec. 4.1 discuss why
  plain nets are hard to optimise; this figure shows the signal the optimiser gets).
  """
  models = [model for model in (_grad_norm_model(runs, family) for family in FAMILIES) if model]
  _require(models, 'models logged with log_grad_norms=True')
  fig = new_figure(runs, 5 * len(models))
  axes = fig.subplots(1, len(models), sharey=True, squeeze=False)[0]
  for ax, model in zip(axes, models):
    for step, norms in _early_grad_norms(runs[model]).items():
      ax.plot(range(1, len(norms) + 1), norms, marker='.', label=f'step {step}',
              gid=f'{model}/step{step}')
    ax.set(title=counted(label(model), runs[model]), xlabel='layer (stem conv first, head last)',
           ylabel='gradient L2 norm', yscale='log')
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend()
  return fig


FIGURES = {'figure1': figure1, 'figure6': figure6, 'error_vs_depth': error_vs_depth,
           'grad_norms': grad_norms}


def save_figure(fig: Figure, path: Path) -> None:
  """Saves `fig` to `path` (.png or .svg) atomically."""
  fmt = path.suffix.removeprefix('.')
  atomic_write(path, lambda file: fig.savefig(
      file, format=fmt, dpi=150, metadata={'Date': None} if fmt == 'svg' else None), binary=True)


def finished_runs(runs: Runs) -> Runs:
  """The runs that ended (their 'end' event), per model; models without one are left out."""
  ended = {model: [run for run in found if run.finished] for model, found in runs.items()}
  return {model: found for model, found in ended.items() if found}


def draw_figures(workdir: Path, drawers: Mapping[str, Callable[[Runs], Figure]] = FIGURES
                 ) -> list[Path]:
  """Draws every figure of `drawers` ({name: function of the runs}) that the finished runs in
  `workdir` allow into workdir/figures as PNG and SVG; returns the files written. Unfinished runs
  are left out with a note, and so is a figure whose runs are missing; a workdir without any run,
  or without a finished one, is a ValueError."""
  found = load_runs(workdir)
  if not found:
    raise ValueError(f'no runs in {workdir}: expected {workdir}/<model>/seed<k>/metrics.jsonl')
  runs = finished_runs(found)
  unfinished = [f'{run.model}/seed{run.seed}' for model in sorted(found) for run in found[model]
                if not run.finished]
  if not runs:
    raise ValueError(f'no finished runs in {workdir} yet ({len(unfinished)} under way): '
                     '--status shows where they stand')
  if unfinished:
    print(f"figures: left out unfinished runs {', '.join(unfinished)}", file=sys.stderr)
  out_dir = Path(workdir) / FIGURES_DIR
  out_dir.mkdir(parents=True, exist_ok=True)
  written = []
  for name, draw in drawers.items():
    try:
      fig = draw(runs)
    except ValueError as error:
      print(f'figures: skipped {name}: {error}', file=sys.stderr)
      continue
    for suffix in ('.png', '.svg'):
      save_figure(fig, out_dir / f'{name}{suffix}')
      written.append(out_dir / f'{name}{suffix}')
  return written
