"""Figures of the identity-mappings study (He et al. 2016), drawn only from the runs'
metrics.jsonl; `python experiments/identity_mappings.py --workdir=DIR --plot-only` redraws them.

Runs are named resnet{depth}_{unit} (resnet_jax/models/registry.py). Every figure's title says
what the runs are (runs.describe) and every panel names its depth, so a quick preset at a
shallower depth than the paper's is never read as ResNet-110. Lines carry a gid
'<model>/<metric>' so that their data can be read back.
"""

import math

from matplotlib.figure import Figure

from resnet_jax.models import parse_name
from resnet_jax.study import figures
from resnet_jax.study.papers import FAIL, HE2016
from resnet_jax.study.runs import Run, mean_curve

Runs = dict[str, list[Run]]
TABLE2_UNITS = {  # He 2016 Fig. 4 (a)-(e)
    'v1': 'original', 'bn_after_add': 'BN after addition',
    'relu_before_add': 'ReLU before addition', 'relu_preact': 'ReLU-only pre-activation',
    'v2': 'full pre-activation',
}
TABLE1_SHORTCUTS = {  # He 2016 Fig. 2 (b)-(f); gates are labelled by gate_label
    'scale_shortcut': 'shortcut x0.5', 'scale_both': 'shortcut and F x0.5',
    'conv_shortcut': '1x1 conv shortcut', 'dropout_shortcut': 'dropout shortcut',
}
GATES = {'exclusive_gate': 'exclusive gating', 'shortcut_gate': 'shortcut-only gating'}
PAPER_DEPTHS = (110, 164)
FAIL_AXIS = 25.0  # where a paper "fail" (above 20%) is drawn on the error axis


def unit_of(model: str) -> str:
  """The unit suffix of a He 2016 name: 'resnet110_bn_after_add' -> 'bn_after_add'."""
  return model.partition('_')[2]


def unit_label(unit: str) -> str:
  """The paper's words for a unit, e.g. 'exclusive gating (b_g=-6)'."""
  for prefix, words in GATES.items():
    if unit.startswith(prefix + '_b'):
      return f"{words} (b_g=-{unit.removeprefix(prefix + '_b')})"
  return {**TABLE2_UNITS, **TABLE1_SHORTCUTS}.get(unit, unit)


def is_shortcut_variant(unit: str) -> bool:
  """True for the shortcuts of Table 1 (the original unit aside)."""
  return unit in TABLE1_SHORTCUTS or any(unit.startswith(gate + '_b') for gate in GATES)


def unit_order(unit: str) -> tuple:
  """Table 2's units, then Table 1's shortcuts, in the paper's order; gates and others by name."""
  listed = [*TABLE2_UNITS, *TABLE1_SHORTCUTS]
  return (listed.index(unit), '') if unit in listed else (len(listed), unit)


def _by_depth(runs: Runs, keep) -> dict[int, list[str]]:
  """{depth: the models whose unit `keep` accepts, in unit_order}, shallowest depth first."""
  found = {}
  for model in sorted(runs, key=lambda model: unit_order(unit_of(model))):
    if model.startswith('resnet') and keep(unit_of(model)):
      found.setdefault(parse_name(model).depth, []).append(model)
  return dict(sorted(found.items()))


def _require(found: dict, what: str) -> None:
  if not found:
    raise ValueError(f'no runs of {what} in this workdir: run those models first')


def _curves(runs: Runs, panels: dict[int, list[str]], left: str, width: float) -> Figure:
  """One panel per depth: `left` (a train_* key) dashed on the left axis, test error in % bold
  on the right axis (He 2016 Fig. 1 and Fig. 6), one colour per unit."""
  fig, unit = figures.new_figure(runs, width * len(panels)), figures.iteration_unit(runs)
  scale = 100 if left.endswith('error') else 1
  axes = fig.subplots(1, len(panels), squeeze=False)[0]
  for ax, (depth, models) in zip(axes, panels.items()):
    right = ax.twinx()
    for i, model in enumerate(models):
      colour, label = f'C{i}', unit_label(unit_of(model))
      steps, values = mean_curve(runs[model], left)
      ax.plot([step / unit for step in steps], [scale * value for value in values], '--',
              color=colour, linewidth=1, gid=f'{model}/{left}')
      steps, values = mean_curve(runs[model], 'test_error')
      right.plot([step / unit for step in steps], [100 * value for value in values], '-',
                 color=colour, linewidth=2.5, marker='.', label=label, gid=f'{model}/test_error')
    words = left.removeprefix('train_').replace('_', ' ')
    ax.set(title=f'ResNet-{depth} (dashed: training {words}, bold: test error)',
           xlabel=figures.xlabel(unit),
           ylabel=f'training {words}' + (' (%)' if scale == 100 else ''))
    right.set_ylabel('test error (%)')
    right.legend(fontsize='small')
  return fig


def figure6(runs: Runs) -> Figure:
  """He 2016 Fig. 6: training loss (dashed, left axis) and test error (bold, right axis) of the
  original and pre-activation units, with the other placements of Fig. 4 where they ran; one
  panel per depth."""
  panels = _by_depth(runs, lambda unit: unit in TABLE2_UNITS)
  _require(panels, 'the units of Table 2 (resnet<d>_v1, _v2, ...)')
  return _curves(runs, panels, 'train_loss', 6)


def shortcuts(runs: Runs) -> Figure:
  """Table 1's shortcuts against the original unit: training error (dashed, left axis) and
  test error (bold, right axis); the paper's "fail" cases are the optimisation failures that
  the training error shows from the start."""
  panels = _by_depth(runs, lambda unit: unit == 'v1' or is_shortcut_variant(unit))
  panels = {depth: models for depth, models in panels.items() if len(models) > 1}
  _require(panels, 'a shortcut variant of Table 1 beside resnet<d>_v1')
  return _curves(runs, panels, 'train_error', 6)


def variants(runs: Runs) -> Figure:
  """Final test error of every unit (He 2016 Table 1 and Table 2 / Fig. 4): ours (filled, mean
  and standard deviation over seeds) beside the paper's at 110 and 164 layers (hollow; "fail",
  above 20%, drawn at FAIL_AXIS)."""
  units = sorted({unit_of(model) for model in runs if unit_of(model)}, key=unit_order)
  _require(units, 'He 2016 units (resnet<d>_<unit>)')
  fig = figures.new_figure(runs, 9)
  ax = fig.subplots()
  rows = range(len(units))
  depths = sorted({parse_name(model).depth for model in runs if unit_of(model) in units})
  for k, depth in enumerate(depths):
    errors = [figures.final_errors(runs[f'resnet{depth}_{unit}'], 'test_error')
              if f'resnet{depth}_{unit}' in runs else (math.nan, 0.0) for unit in units]
    means, stds = zip(*errors)
    bars = ax.errorbar(means, [row + 0.12 * k for row in rows], xerr=stds, fmt='o',
                       color=f'C{k}', capsize=3, label=f'ours, ResNet-{depth}')
    bars.lines[0].set_gid(f'ours/resnet{depth}')
  for k, depth in enumerate(PAPER_DEPTHS):
    paper = [HE2016.get(f'resnet{depth}_{unit}', math.nan) for unit in units]
    if all(math.isnan(value) for value in paper):
      continue
    shown = [FAIL_AXIS if value == FAIL else value for value in paper]
    ax.plot(shown, [row - 0.12 * (k + 1) for row in rows], 's', markerfacecolor='none',
            color='black' if depth == 110 else 'grey', gid=f'paper/resnet{depth}',
            label=f'paper, ResNet-{depth} (He 2016 Tables 1-2)')
  ax.axvline(20, color='grey', linewidth=0.5, linestyle=':')
  ax.set_yticks(list(rows), [unit_label(unit) for unit in units])
  ax.invert_yaxis()
  ax.set(xlabel=f'final test error (%); paper "fail" (>20%) drawn at {FAIL_AXIS:g}',
         title='units of He et al. 2016 Table 1 (shortcuts) and Table 2 (activations)')
  ax.legend(fontsize='small')
  return fig


FIGURES = {'figure6': figure6, 'shortcuts': shortcuts, 'variants': variants}
