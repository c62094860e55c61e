"""Evaluates a run's checkpoint, or PyTorch weights, on one split, every example exactly once.

    python -m resnet_jax.evaluate --workdir=DIR [--checkpoint=best|latest|STEP] [--split=test|val]
        [--output=OUT]
    python -m resnet_jax.evaluate --torch_weights=FILE --model=NAME --config=configs/cifar10.py \\
        [--config.FIELD=VALUE ...] [--split=test|val] [--output=OUT]

With --workdir the run's config.json is taken as it is (model, data, normalisation); with
--torch_weights the data come from --config as for resnet_jax.main (pass
--config.normalization=given for weights trained on ImageNet-normalised inputs, as released
PyTorch CIFAR weights are). Prints one JSON line: "top1_error", "top5_error" (100 classes or
more), "loss", "examples", "checkpoint_step" (null for PyTorch weights), "split", "devices".
With --output it also writes OUT/evaluation.json, OUT/per_class.csv (examples, correct and
accuracy per class) and OUT/confusion.png and .svg (rows: true class, columns: predicted), each
atomically. 'best' is the kept checkpoint with the lowest error on the split the run ranked its
checkpoints by (val, else test: metrics.jsonl's eval rows); a run still training is only read.
Partial batches are padded and masked, on any number of devices. Bad input (a workdir without
checkpoints, an unknown split, no best checkpoint, a file that is no state_dict or does not fit
the model, an output folder that is a file or holds an earlier evaluation) is one line on stderr
and exit status 2, before anything is written.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import flags
from matplotlib.figure import Figure
from ml_collections import config_flags

from resnet_jax import cli, parallel
from resnet_jax import config as config_lib
from resnet_jax.errors import ConfigError
from resnet_jax.files import atomic_write_text
from resnet_jax.interop import pytorch, torch_files
from resnet_jax.study.figures import save_figure
from resnet_jax.train import checkpoint, loop, steps

FLAGS = flags.FlagValues()
_WORKDIR = flags.DEFINE_string('workdir', None, 'the run folder (config.json, checkpoints/)',
                               flag_values=FLAGS)
_CHECKPOINT = flags.DEFINE_string('checkpoint', 'best', "'best', 'latest' or a step number",
                                  flag_values=FLAGS)
_TORCH_WEIGHTS = flags.DEFINE_string('torch_weights', None, 'a PyTorch .pt/.th state_dict file',
                                     flag_values=FLAGS)
_MODEL = flags.DEFINE_string('model', None, 'the network of --torch_weights', flag_values=FLAGS)
_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'with --torch_weights: the data, e.g. configs/cifar10.py', flag_values=FLAGS)
_SPLIT = flags.DEFINE_string('split', 'test', "'test', or 'val' where the run had one",
                             flag_values=FLAGS)
_OUTPUT = flags.DEFINE_string('output', None, 'folder for the JSON, per-class CSV and confusion',
                              flag_values=FLAGS)

OUTPUT_FILES = ('evaluation.json', 'per_class.csv', 'confusion.png', 'confusion.svg')


@dataclasses.dataclass(frozen=True)
class Request:
  """A checked request: the run's sections, the network to evaluate and where to write.

  The network is checkpoint `step` of `workdir`, or `variables` converted from PyTorch.
  """

  run: config_lib.Run
  split: str
  output: Path | None
  workdir: Path | None = None
  step: int | None = None
  variables: dict[str, Any] | None = None


def check(workdir: str, which: str = 'best', split: str = 'test',
          output: str | None = None) -> Request:
  """Every check of a run's evaluation before any work; a ConfigError naming the problem and
  the fix."""
  try:
    run = config_lib.Run.of(checkpoint.run_config(workdir))
    parallel.check_divisible('eval_batch_size', run.data.eval_batch_size)
    _check_split(run.data, split)
    step = checkpoint.choose_step(workdir, which, run.data.val_split)
  except ValueError as error:
    raise ConfigError(str(error)) from None
  return Request(run, split, _check_output(output), workdir=Path(workdir), step=step)


def check_torch(torch_weights: str, model: str, config: ml_collections.ConfigDict | None,
                split: str = 'test', output: str | None = None) -> Request:
  """Every check of an evaluation of PyTorch weights before the data are read: the file holds a
  state_dict that fits `model` (the first missing or mis-shaped tensor named otherwise)."""
  if config is None:
    raise ConfigError('--torch_weights needs --config for the data, e.g. '
                      '--config=configs/cifar10.py --config.dataset=image_folder')
  if not model:
    raise ConfigError('--torch_weights needs --model, the network the file holds')
  config = ml_collections.ConfigDict(config.to_dict())
  config.model = model
  try:
    config_lib.validate(config)
    run = config_lib.Run.of(config)
    parallel.check_divisible('eval_batch_size', run.data.eval_batch_size)
    _check_split(run.data, split)
    state_dict = torch_files.load_state_dict(torch_weights)
    variables = pytorch.from_torch(state_dict, model, pytorch.head_classes(state_dict, model))
  except ValueError as error:
    raise ConfigError(f'--torch_weights={torch_weights}: {error}') from None
  return Request(run, split, _check_output(output), variables=variables)


def _check_split(data: config_lib.Data, split: str) -> None:
  if split not in data.eval_splits:
    raise ValueError(f'--split={split}: this run has {" and ".join(data.eval_splits)}; use one '
                     'of them')


def _check_output(output: str | None) -> Path | None:
  if output is None:
    return None
  out = Path(output)
  if out.exists() and not out.is_dir():
    raise ConfigError(f'--output={out} is a file: give a folder')
  if any((out / name).exists() for name in OUTPUT_FILES):
    raise ConfigError(f'--output={out} holds an earlier evaluation: give another folder or '
                      'remove it')
  return out


def predictions(request: Request) -> tuple[np.ndarray, np.ndarray, list[str], int | None]:
  """(logits [N, classes] float32, labels [N]) of every example of the split in order, the
  class names and the restored step (None for PyTorch weights)."""
  mesh = parallel.make_mesh()
  setup = loop.build(request.run, mesh)
  state = _network(request, setup, mesh)
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
          request.step)


def _network(request: Request, setup: loop.Setup, mesh):
  """setup.state holding the network to evaluate: the checkpoint, or the converted weights."""
  if request.variables is None:
    with checkpoint.Checkpointer.reader(str(request.workdir)) as ckpt:
      try:
        return ckpt.restore_step(request.step, setup.state)[0]
      except ValueError as error:
        raise ConfigError(str(error)) from None
  classes = request.variables['params']['head']['kernel'].shape[-1]
  if classes != setup.data.num_classes:
    raise ConfigError(f'the PyTorch weights have {classes} classes but the data '
                      f'{setup.data.num_classes}; give the matching --config.dataset')
  return checkpoint.with_network(setup.state, request.variables)


def summarize(logits: np.ndarray, labels: np.ndarray, step: int | None, split: str) -> dict:
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
  """class, examples, correct, accuracy: one row per class of the confusion counts."""
  text = io.StringIO()
  writer = csv.writer(text, lineterminator='\n')
  writer.writerow(('class', 'examples', 'correct', 'accuracy'))
  for i, name in enumerate(names):
    examples, correct = int(counts[i].sum()), int(counts[i, i])
    writer.writerow((name, examples, correct, f'{correct / examples:.4f}' if examples else ''))
  return text.getvalue()


def confusion_figure(counts: np.ndarray, names: list[str], title: str) -> Figure:
  """The confusion counts as an image, class names on both axes (counts written up to 20)."""
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
  """OUTPUT_FILES in `output`, each atomically; returns their paths."""
  output.mkdir(parents=True, exist_ok=True)
  atomic_write_text(output / 'evaluation.json', json.dumps(row, indent=2) + '\n')
  atomic_write_text(output / 'per_class.csv', per_class_csv(counts, names))
  step = row['checkpoint_step']
  title = (f'{row["split"]} split, {"PyTorch weights" if step is None else f"step {step}"}: '
           f'top-1 error {100 * row["top1_error"]:.2f}%')
  fig = confusion_figure(counts, names, title)
  paths = [output / name for name in OUTPUT_FILES]
  for path in paths[2:]:
    save_figure(fig, path)
  return paths


def evaluate(workdir: str, which: str = 'best', split: str = 'test',
             output: str | None = None) -> dict:
  """Checks the request, evaluates the run's checkpoint, writes the outputs; returns the JSON
  line's dict."""
  return run(check(workdir, which, split, output))


def run(request: Request) -> dict:
  """Evaluates a checked request and writes its outputs; returns the JSON line's dict."""
  logits, labels, names, step = predictions(request)
  row = {**summarize(logits, labels, step, request.split), 'devices': jax.device_count()}
  if request.output is not None:
    write_outputs(request.output, row, confusion(logits, labels, len(names)), names)
  return row


def main() -> None:
  """The command: a run's checkpoint (--workdir) or PyTorch weights (--torch_weights)."""
  if (_WORKDIR.value is None) == (_TORCH_WEIGHTS.value is None):
    raise ConfigError('give either --workdir=DIR or --torch_weights=FILE --model=NAME '
                      '--config=...')
  given = [f'--{flag.name}' for flag in (_MODEL, _CONFIG) if flag.value is not None]
  if _WORKDIR.value is not None and given:
    raise ConfigError(f'{" and ".join(given)} are for --torch_weights: --workdir is evaluated '
                      "with the run's own config.json; drop them")
  if _WORKDIR.value is not None:
    request = check(_WORKDIR.value, _CHECKPOINT.value, _SPLIT.value, _OUTPUT.value)
  else:
    request = check_torch(_TORCH_WEIGHTS.value, _MODEL.value, _CONFIG.value, _SPLIT.value,
                          _OUTPUT.value)
  print(json.dumps(run(request)))


if __name__ == '__main__':
  cli.run(main, FLAGS)
