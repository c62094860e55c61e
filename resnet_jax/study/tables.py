"""Results table of a study (He et al. 2015 Table 6; He et al. 2016 Tables 1-3), Markdown and
CSV, read only from the runs' metrics.jsonl; `python experiments/<study>.py --workdir=DIR
--plot-only` rewrites DIR/results.md and DIR/results.csv.

Per model: iterations done, final training, validation and test error in percent (mean and
standard deviation over seeds, and the best seed), parameters (from the 'start' event), wall
time, and the paper's test error (resnet_jax/study/papers.py) beside ours, with the gap between
them for finished runs of the paper's recipe only (a quick or unfinished study is never
compared). A network the paper reports as failed (papers.FAIL) reads 'fail (>20)'.
"""

import csv
import io
import math
from pathlib import Path

from collections.abc import Mapping, Sequence

from resnet_jax.files import atomic_write_text
from resnet_jax.study.papers import FAIL
from resnet_jax.models import parse_name
from resnet_jax.study.runs import Run, describe, load_runs, seed_stats

# The settings of the papers' CIFAR-10 runs (He 2015 sec. 4.2, He 2016 appendix) a run must
# have for its gap to the paper to be given.
PAPER_SETTING = {'batch_size': 128, 'num_train_steps': 64_000, 'train_subset': 0,
                 'test_subset': 0}
ERROR_KEYS = ('train_error', 'val_error', 'test_error')
STATS = ('mean', 'std', 'best')
COLUMNS = ('model', 'seeds', 'params', 'iterations', 'num_train_steps',
           *(f'{key}_{stat}' for key in ERROR_KEYS for stat in STATS),
           'wall_time_s', 'paper_test_error', 'gap_to_paper')


def _ordered_models(runs: dict[str, list[Run]], order: Sequence[str]) -> list[str]:
  """The models of `order` that ran, in that order, then the others by variant and depth."""
  listed = [model for model in order if model in runs]

  def key(model: str) -> tuple:
    spec = parse_name(model)
    return spec.variant, spec.depth, model
  return listed + sorted(set(runs) - set(listed), key=key)


def _summary_row(model: str, found: list[Run], paper: Mapping[str, float]) -> dict:
  """The COLUMNS of one model; errors in percent, nan where not logged."""
  start = found[0].event('start')
  row = {'model': model, 'seeds': len(found), 'params': start.get('params', math.nan),
         'iterations': min(run.last_step for run in found),
         'num_train_steps': start.get('num_train_steps', math.nan)}
  for key in ERROR_KEYS:
    stats = seed_stats([100 * run.final(key) for run in found])
    row.update(zip((f'{key}_{stat}' for stat in STATS), stats))
  row['wall_time_s'] = sum(run.wall_time for run in found) / len(found)
  row['paper_test_error'] = paper.get(model, math.nan)
  comparable = all(_is_paper_setting(run) for run in found)
  numeric = math.isfinite(row['paper_test_error'])
  row['gap_to_paper'] = (row['test_error_mean'] - row['paper_test_error'] if comparable and numeric
                         else math.nan)
  return row


def _is_paper_setting(run: Run) -> bool:
  """True for a finished run with the batch size, iterations and whole data of Table 6
  (PAPER_SETTING), by its settings (runs.read_config)."""
  same = all(run.config.get(name) == value for name, value in PAPER_SETTING.items())
  return same and run.finished


def summarize(runs: dict[str, list[Run]], paper: Mapping[str, float],
              order: Sequence[str] = ()) -> list[dict]:
  """One row per model with the COLUMNS (see _summary_row), beside the `paper`'s test errors;
  the models of `order` first, in that order."""
  return [_summary_row(model, runs[model], paper) for model in _ordered_models(runs, order)]


def _number(value: float, digits: int = 2) -> str:
  return '' if isinstance(value, float) and math.isnan(value) else f'{value:.{digits}f}'


def to_csv(rows: list[dict]) -> str:
  """The rows as CSV with the COLUMNS as header; nan is an empty cell."""
  out = io.StringIO()
  writer = csv.writer(out, lineterminator='\n')
  writer.writerow(COLUMNS)
  for row in rows:
    writer.writerow([_number(row[name], 4) if isinstance(row[name], float) else row[name]
                     for name in COLUMNS])
  return out.getvalue()


def _error_cell(row: dict, key: str) -> str:
  mean, std, best = (row[f'{key}_{stat}'] for stat in STATS)
  if math.isnan(mean):
    return '-'
  spread = '' if math.isnan(std) else f' ± {std:.2f}'
  return f'{mean:.2f}{spread} ({best:.2f})'


def _params_cell(params) -> str:
  return '-' if isinstance(params, float) and math.isnan(params) else f'{params / 1e6:.2f}M'


def _iterations_cell(row: dict) -> str:
  done, planned = row['iterations'], row['num_train_steps']
  return str(done) if done == planned else f'{done} of {planned} (unfinished)'


def _paper_cell(row: dict) -> str:
  if math.isnan(row['paper_test_error']):
    return '-'
  if row['paper_test_error'] == FAIL:
    return 'fail (>20)'
  gap = '' if math.isnan(row['gap_to_paper']) else f" (ours {row['gap_to_paper']:+.2f})"
  return f"{row['paper_test_error']:.2f}{gap}"


def to_markdown(rows: list[dict], setting: str, source: str) -> str:
  """The rows as a Markdown table under the line `setting` (runs.describe), beside the paper's
  numbers from `source` (e.g. 'He et al. 2015 Table 6'); error cells read 'mean ± std (best)'
  in percent."""
  lines = [
      f'Runs: {setting}.',
      '',
      '| model | seeds | params | iterations | train error % | val error % | test error % | '
      f'wall time (min) | paper test error % ({source}) |',
      '|---|---:|---:|---:|---:|---:|---:|---:|---:|',
  ]
  for row in rows:
    cells = [row['model'], str(row['seeds']), _params_cell(row['params']), _iterations_cell(row),
             *(_error_cell(row, key) for key in ERROR_KEYS),
             _number(row['wall_time_s'] / 60, 1) or '-', _paper_cell(row)]
    lines.append('| ' + ' | '.join(cells) + ' |')
  note = ('Errors in percent: mean ± sample standard deviation over seeds (best seed). Training '
          'error is the last logged interval of augmented training batches; validation and test '
          f'error are the last evaluation. The paper column gives {source} and, in brackets, '
          'our mean minus it, for finished runs of its recipe (batch 128, 64k iterations, all '
          'the data) only; "fail" is the paper\'s word for a test error above 20%. '
          'resnet_jax/study/papers.py says which of its numbers are best or median of 5 runs.')
  return '\n'.join(lines) + '\n\n' + note + '\n'


def write_tables(workdir: Path, paper: Mapping[str, float], source: str,
                 order: Sequence[str] = ()) -> tuple[Path, Path]:
  """Writes results.md and results.csv for the runs of `workdir` into `workdir`, beside the
  paper's test errors `paper` from `source`, the models of `order` first."""
  runs = load_runs(workdir)
  if not runs:
    raise ValueError(f'no runs in {workdir}: expected {workdir}/<model>/seed<k>/metrics.jsonl')
  rows = summarize(runs, paper, order)
  markdown, table = Path(workdir) / 'results.md', Path(workdir) / 'results.csv'
  atomic_write_text(markdown, to_markdown(rows, describe(runs), source))
  atomic_write_text(table, to_csv(rows))
  return markdown, table
