"""Evaluates a run's checkpoint on one split, every example exactly once.

    python -m resnet_jax.evaluate --workdir=DIR [--checkpoint=best|latest|STEP] [--split=test|val]
        [--output=OUT]

The run's config.json is taken as it is (model, data, normalisation). Prints one JSON line:
"top1_error", "top5_error" (100 classes or more), "loss", "examples", "checkpoint_step",
"split". With --output it also writes OUT/evaluation.json, OUT/per_class.csv (examples, correct
and accuracy per class) and OUT/confusion.png and .svg (rows: true class, columns: predicted),
each atomically. 'best' is the kept checkpoint with the lowest error on the split the run ranked
its checkpoints by (val, else test: metrics.jsonl's eval rows). Bad input (a workdir without
checkpoints, an unknown split, no best checkpoint, an output folder that is a file or holds an
earlier evaluation) is one line on stderr and exit status 2, before any work.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import sys
from pathlib import Path

import jax
import ml_collections
import numpy as np
from absl import app, flags
from matplotlib.figure import Figure

from resnet_jax import config as config_lib
from resnet_jax import parallel
from resnet_jax.errors import ConfigError
from resnet_jax.files import atomic_write_text
from resnet_jax.study.figures import save_figure
from resnet_jax.study.runs import read_config
from resnet_jax.train import checkpoint, loop, metrics, steps

_WORKDIR = flags.DEFINE_string('workdir', None, 'the run folder (config.json, checkpoints/)')
_CHECKPOINT = flags.DEFINE_string('checkpoint', 'best', "'best', 'latest' or a step number")
_SPLIT = flags.DEFINE_string('split', 'test', "'test', or 'val' where the run had one")
_OUTPUT = flags.DEFINE_string('output', None, 'folder for the JSON, per-class CSV and confusion')
flags.mark_flags_as_required(['workdir'])

BAD_INPUT_STATUS = 2
OUTPUT_FILES = ('evaluation.json', 'per_class.csv', 'confusion.png', 'confusion.svg')


@dataclasses.dataclass(frozen=True)
class Request:
  """A checked request: the run's config, the step to restore and where to write."""

  workdir: Path
  config: ml_collections.ConfigDict
  step: int
  split: str
  output: Path | None


def check(workdir: str, which: str, split: str, output: str | None) -> Request:
  """Every check before any work; a ConfigError naming the problem and the fix."""
  run = Path(workdir)
  saved = read_config(run) if run.is_dir() else {}
  if not saved:
    raise ConfigError(f'{run} holds no run (no config.json): give the --workdir of a run')
  config = ml_collections.ConfigDict(saved)
  config_lib.validate(config)
  splits = ('val', 'test') if config.val_split else ('test',)
  if split not in splits:
    raise ConfigError(f'--split={split}: this run has {" and ".join(splits)}; use one of them')
  step = _step(run, config, which, splits[0])
  out = None if output is None else Path(output)
  if out is not None and out.exists() and not out.is_dir():
    raise ConfigError(f'--output={out} is a file: give a folder')
  if out is not None and any((out / name).exists() for name in OUTPUT_FILES):
    raise ConfigError(f'--output={out} holds an earlier evaluation: give another folder or '
                      'remove it')
  return Request(run, config, step, split, out)


def _step(run: Path, config, which: str, ranked_by: str) -> int:
  """The step of 'latest', 'best' or a number, among the checkpoints on disk."""
  with checkpoint.Checkpointer(str(run), config.keep_checkpoints, f'{ranked_by}_error') as ckpt:
    kept = ckpt.steps()
  if not kept:
    raise ConfigError(f'{run} has no checkpoint: train it first (python -m resnet_jax.main)')
  if which == 'latest':
    return kept[-1]
  if which == 'best':
    errors = {row['step']: row[f'{ranked_by}_error']
              for row in metrics.read_rows(str(run / metrics.METRICS_FILE))
              if f'{ranked_by}_error' in row}
    ranked = [step for step in kept if step in errors]
    if not ranked:
      raise ConfigError(f'{run} kept no evaluated checkpoint, so no best one: use '
                        f'--checkpoint=latest or one of the steps {kept}')
    return min(ranked, key=lambda step: (errors[step], step))
  if not which.isdigit() or int(which) not in kept:
    raise ConfigError(f'--checkpoint={which}: use best, latest or one of the steps {kept}')
  return int(which)


def predictions(request: Request) -> tuple[np.ndarray, np.ndarray, list[str], int]:
  """(logits [N, classes] float32, labels [N]) of every example of the split in order, the
  class names and the restored step."""
  mesh = parallel.make_mesh()
  setup = loop.build(request.config, mesh)
  ranked_by = setup.data.eval_splits[0]
  with checkpoint.Checkpointer(str(request.workdir), request.config.keep_checkpoints,
                               f'{ranked_by}_error') as ckpt:
    try:
      state, _ = ckpt.restore_step(request.step, setup.state)
    except ValueError as error:
      raise ConfigError(str(error)) from None
  prepare = setup.data.prepare

  @jax.jit
  def logits_of(state, arrays, batch):
    images, labels = prepare(arrays, batch, None, False)
    logits = state.apply_fn({'params': state.params, 'batch_stats': state.batch_stats}, images,
                            train=False)
    return logits.astype(np.float32), labels

  arrays = setup.data.arrays(request.split)
  logits, labels = [], []
  for batch in setup.data.eval_batches(request.split):
    out, truth = jax.device_get(logits_of(state, arrays, batch))
    mask = np.asarray(jax.device_get(batch['mask']), bool)
    logits.append(out[mask])
    labels.append(truth[mask])
  return (np.concatenate(logits), np.concatenate(labels), list(setup.data.class_names),
          int(state.step))


def summarize(logits: np.ndarray, labels: np.ndarray, step: int, split: str) -> dict:
  """The JSON line: top-1 (and for 100+ classes top-5) error, mean cross-entropy, counts."""
  loss = float(np.mean(jax.device_get(steps.cross_entropy(logits, labels))))
  row = {'split': split, 'checkpoint_step': step, 'examples': int(len(labels)),
         'top1_error': float(np.mean(np.argmax(logits, -1) != labels)), 'loss': loss}
  if logits.shape[1] >= 100:
    top5 = np.argsort(-logits, axis=-1)[:, :5]
    row['top5_error'] = float(np.mean(~np.any(top5 == labels[:, None], axis=-1)))
  return row


def confusion(logits: np.ndarray, labels: np.ndarray, classes: int) -> np.ndarray:
  """counts[true, predicted]."""
  counts = np.zeros((classes, classes), np.int64)
  np.add.at(counts, (labels, np.argmax(logits, -1)), 1)
  return counts


def per_class_csv(counts: np.ndarray, names: list[str]) -> str:
  text = io.StringIO()
  writer = csv.writer(text, lineterminator='\n')
  writer.writerow(('class', 'examples', 'correct', 'accuracy'))
  for i, name in enumerate(names):
    examples, correct = int(counts[i].sum()), int(counts[i, i])
    writer.writerow((name, examples, correct, f'{correct / examples:.4f}' if examples else ''))
  return text.getvalue()


def confusion_figure(counts: np.ndarray, names: list[str], title: str) -> Figure:
  size = max(4.0, 0.45 * len(names) + 2)
  fig = Figure(figsize=(size, size))
  ax = fig.add_subplot()
  ax.imshow(counts, cmap='Blues')
  ax.set_xticks(range(len(names)), names, rotation=90)
  ax.set_yticks(range(len(names)), names)
  ax.set_xlabel('predicted class')
  ax.set_ylabel('true class')
  ax.set_title(title)
  if len(names) <= 20:
    for (i, j), value in np.ndenumerate(counts):
      ax.text(j, i, str(value), ha='center', va='center', fontsize=7,
              color='white' if value > counts.max() / 2 else 'black')
  fig.tight_layout()
  return fig


def write_outputs(output: Path, row: dict, counts: np.ndarray, names: list[str]) -> list[Path]:
  output.mkdir(parents=True, exist_ok=True)
  atomic_write_text(output / 'evaluation.json', json.dumps(row, indent=2) + '\n')
  atomic_write_text(output / 'per_class.csv', per_class_csv(counts, names))
  title = (f'{row["split"]} split, step {row["checkpoint_step"]}: top-1 error '
           f'{100 * row["top1_error"]:.2f}%')
  fig = confusion_figure(counts, names, title)
  paths = [output / name for name in OUTPUT_FILES]
  for path in paths[2:]:
    save_figure(fig, path)
  return paths


def evaluate(workdir: str, which: str = 'best', split: str = 'test',
             output: str | None = None) -> dict:
  """Checks the request, evaluates, writes the outputs; returns the JSON line's dict."""
  request = check(workdir, which, split, output)
  logits, labels, names, step = predictions(request)
  row = summarize(logits, labels, step, request.split)
  if request.output is not None:
    write_outputs(request.output, row, confusion(logits, labels, len(names)), names)
  return row


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  try:
    row = evaluate(_WORKDIR.value, _CHECKPOINT.value, _SPLIT.value, _OUTPUT.value)
  except (ConfigError, ValueError) as error:
    print(f'error: {error}', file=sys.stderr)
    sys.exit(BAD_INPUT_STATUS)
  print(json.dumps(row))


if __name__ == '__main__':
  app.run(main)
