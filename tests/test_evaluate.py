"""python -m resnet_jax.evaluate: a run's checkpoint evaluated on every example once, the same
numbers as the run's own evaluation, on 1 and 8 devices; files written; bad input refused (one
line, exit 2, nothing written); PyTorch weights give PyTorch's predictions on every image when
normalised as they were trained (normalization='given')."""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from resnet_jax import cli, evaluate
from resnet_jax import config as config_lib
from resnet_jax.data import sources
from resnet_jax.config import IMAGENET_MEAN, IMAGENET_STD
from resnet_jax.errors import BAD_INPUT_STATUS, ConfigError
from resnet_jax.interop import convert
from resnet_jax.train import loop, metrics
from tests.tiny import tiny_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def run(tmp_path_factory) -> Path:
  """A finished tiny run: checkpoints at steps 4, 8 and 12 (3 kept), evaluated at each."""
  workdir = tmp_path_factory.mktemp('run') / 'resnet8'
  loop.train_and_evaluate(tiny_config(keep_checkpoints=3), str(workdir))
  return workdir


def eval_rows(workdir: Path) -> dict[int, dict]:
  return {row['step']: row for row in metrics.read_rows(str(workdir / metrics.METRICS_FILE))
          if 'test_error' in row}


def test_latest_and_best_match_the_runs_own_evaluations(run):
  rows = eval_rows(run)
  run_sections = config_lib.Run.of(tiny_config())
  examples = len(sources.load_dataset(run_sections.data, run_sections.pipeline).test)
  latest = evaluate.evaluate(str(run), 'latest')
  assert (latest['checkpoint_step'], latest['examples'], latest['split']) == (12, examples, 'test')
  assert latest['top1_error'] == pytest.approx(rows[12]['test_error'], abs=1e-6)
  assert latest['loss'] == pytest.approx(rows[12]['test_loss'], rel=1e-5)
  best_step = min(rows, key=lambda step: (rows[step]['test_error'], step))
  best = evaluate.evaluate(str(run), 'best')
  assert best['checkpoint_step'] == best_step
  assert best['top1_error'] == pytest.approx(rows[best_step]['test_error'], abs=1e-6)
  assert 'top5_error' not in best  # 10 classes
  four = evaluate.evaluate(str(run), '4')
  assert four['top1_error'] == pytest.approx(rows[4]['test_error'], abs=1e-6)


def test_output_files_agree_with_the_json_line(run, tmp_path):
  out = tmp_path / 'eval'
  row = evaluate.evaluate(str(run), 'latest', output=str(out))
  assert sorted(os.listdir(out)) == sorted(evaluate.OUTPUT_FILES)
  assert json.loads((out / 'evaluation.json').read_text()) == row
  with open(out / 'per_class.csv') as f:
    classes = list(csv.DictReader(f))
  assert [c['class'] for c in classes] == [str(i) for i in range(10)]
  assert sum(int(c['examples']) for c in classes) == row['examples']
  correct = sum(int(c['correct']) for c in classes)
  assert correct == round(row['examples'] * (1 - row['top1_error']))
  assert (out / 'confusion.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  assert b'predicted class' in (out / 'confusion.svg').read_bytes()


def test_cli_on_eight_devices_prints_the_one_device_numbers(run):
  one = evaluate.evaluate(str(run), 'latest')
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8',
             JAX_PLATFORMS='cpu')
  done = subprocess.run([sys.executable, '-m', 'resnet_jax.evaluate', f'--workdir={run}',
                         '--checkpoint=latest'], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  eight = json.loads(done.stdout.strip().splitlines()[-1])
  assert (eight['examples'], eight['checkpoint_step']) == (one['examples'], one['checkpoint_step'])
  assert eight['top1_error'] == pytest.approx(one['top1_error'], abs=1e-6)
  assert eight['loss'] == pytest.approx(one['loss'], rel=1e-4)
  assert (one['devices'], eight['devices']) == (1, 8)


def unevaluated(run: Path, tmp_path: Path) -> Path:
  """A copy of the run whose metrics hold no evaluation, so no checkpoint can be ranked."""
  copy = tmp_path / 'unevaluated'
  shutil.copytree(run, copy)
  path = copy / metrics.METRICS_FILE
  rows = [row for row in metrics.read_rows(str(path)) if 'test_error' not in row]
  path.write_text(''.join(json.dumps(row) + '\n' for row in rows))
  return copy


def no_checkpoints(run: Path, tmp_path: Path) -> Path:
  copy = tmp_path / 'fresh'
  copy.mkdir()
  shutil.copy(run / 'config.json', copy / 'config.json')
  return copy


@pytest.mark.parametrize('make, flags, message', [
    (lambda run, tmp: tmp / 'nowhere', {}, r'holds no run \(no config.json\)'),
    (no_checkpoints, {}, r'has no checkpoint: train it first'),
    (lambda run, tmp: run, {'split': 'val'}, r'--split=val: this run has test; use one of them'),
    (unevaluated, {}, r'kept no evaluated checkpoint, so no best one: use --checkpoint=latest'),
    (lambda run, tmp: run, {'which': '7'}, r'--checkpoint=7: use best, latest or one of the steps '
                                           r'\[4, 8, 12\]'),
    (lambda run, tmp: run, {'output': 'file'}, r'--output=.* is a file: give a folder'),
    (lambda run, tmp: run, {'output': 'earlier'}, r'holds an earlier evaluation'),
])
def test_bad_input_is_refused_before_any_work(run, tmp_path, capsys, make, flags, message):
  workdir = make(run, tmp_path)
  output = flags.pop('output', None)
  if output == 'file':
    output = tmp_path / 'out.json'
    output.write_text('{}')
  elif output == 'earlier':
    output = tmp_path / 'earlier'
    output.mkdir()
    (output / 'per_class.csv').write_text('class\n')
  before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob('*'))
  with pytest.raises(ConfigError, match=message) as error:
    evaluate.check(str(workdir), flags.get('which', 'best'), flags.get('split', 'test'),
                   None if output is None else str(output))
  assert '\n' not in str(error.value)
  argv = [f'--workdir={workdir}', f'--checkpoint={flags.get("which", "best")}',
          f'--split={flags.get("split", "test")}']
  argv += [] if output is None else [f'--output={output}']
  with pytest.raises(SystemExit) as stop:
    cli.run(evaluate.main, evaluate.FLAGS, ['evaluate', *argv])
  assert stop.value.code == BAD_INPUT_STATUS
  out, err = capsys.readouterr()
  assert out == '' and len(err.strip().splitlines()) == 1 and err.startswith('error: ')
  assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob('*')) == before


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path):
  done = subprocess.run([sys.executable, '-m', 'resnet_jax.evaluate',
                         f'--workdir={tmp_path / "nowhere"}', f'--output={tmp_path / "out"}'],
                        cwd=REPO, capture_output=True, text=True, timeout=120)
  assert done.returncode == BAD_INPUT_STATUS
  assert done.stderr.strip().splitlines()[-1].startswith('error: ')
  assert 'holds no run' in done.stderr and not (tmp_path / 'out').exists()


@pytest.mark.parametrize('extra, named', [
    (['--model=resnet20'], '--model are'),
    (['--model=resnet20', f'--config={REPO / "configs" / "cifar10.py"}'],
     '--model and --config are'),
])
def test_workdir_refuses_the_flags_of_torch_weights(tmp_path, capsys, extra, named):
  with pytest.raises(SystemExit) as stop:
    cli.run(evaluate.main, evaluate.FLAGS,
            ['evaluate', f'--workdir={tmp_path / "nowhere"}', *extra])
  assert stop.value.code == BAD_INPUT_STATUS
  err = capsys.readouterr().err
  assert len(err.strip().splitlines()) == 1 and f'{named} for --torch_weights' in err


@pytest.mark.parametrize('command', ['evaluate', 'convert'])
@pytest.mark.parametrize('help_flag', cli.HELP_FLAGS)
def test_help_prints_the_commands_usage_and_flags_and_runs_nothing(tmp_path, capsys, command,
                                                                    help_flag):
  module = {'evaluate': evaluate, 'convert': convert}[command]
  argv = [command, f'--workdir={tmp_path / "run"}', help_flag]
  with pytest.raises(SystemExit) as stop:
    cli.run(module.main, module.FLAGS, argv)
  out, err = capsys.readouterr()
  assert stop.value.code == 0 and err == ''
  assert out.startswith(module.__doc__.splitlines()[0])
  names = [flag.name for flag in module.FLAGS.get_flags_for_module(module.__name__)]
  assert 'workdir' in names and all(f'--{name}:' in out for name in names)
  assert list(tmp_path.iterdir()) == []


def test_evaluate_and_convert_import_beside_modules_with_global_flags():
  import benchmarks.throughput  # noqa: F401  defines a global --output, as evaluate once did
  import resnet_jax.main  # noqa: F401  defines a global --config and --workdir
  assert convert.FLAGS is not evaluate.FLAGS
  assert 'output' in evaluate.FLAGS and 'config' in evaluate.FLAGS


# --- PyTorch weights: the same predictions as PyTorch on the same normalised inputs ---------

PEER_CLASSES = 3
TEST_IMAGES = 13  # with eval batches of 8 on 8 devices: a partial batch, and devices without any
EVAL_BATCH = 8


def peer_and_folder(root: Path):
  """A random-weight PyTorch resnet8 of PEER_CLASSES classes, saved as a released .th file, and
  an image folder whose test images are filed under the class PyTorch predicts for them (each
  with a clear margin), so that matching predictions read as top-1 error 0.

  Returns (weights file, data_dir, PyTorch logits of the test images in folder order).
  """
  import torch  # pylint: disable=import-outside-toplevel
  from PIL import Image  # pylint: disable=import-outside-toplevel
  from tests.test_convert import random_peer, released_file
  model = random_peer(seed=3, num_classes=PEER_CLASSES)
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (400, 32, 32, 3), dtype=np.uint8)
  logits = torch_logits(model, images)
  model.linear.bias.data -= torch.from_numpy(logits.mean(axis=0))  # spread the predictions
  logits = torch_logits(model, images)
  ordered = np.sort(logits, axis=1)
  clear = np.flatnonzero(ordered[:, -1] - ordered[:, -2] > 1e-2)
  predicted = logits.argmax(axis=1)
  chosen = [next(i for i in clear if predicted[i] == c) for c in range(PEER_CLASSES)]
  chosen += [i for i in clear if i not in chosen][:TEST_IMAGES - PEER_CLASSES]
  data_dir = root / 'data'
  for n, i in enumerate(chosen):
    for split in ('train', 'test'):
      folder = data_dir / split / f'c{predicted[i]}'
      folder.mkdir(parents=True, exist_ok=True)
      Image.fromarray(images[i]).save(folder / f'{n:02d}.png')
  order = sorted(chosen, key=lambda i: (predicted[i], f'{chosen.index(i):02d}'))
  return released_file(root / 'peer.th', model), data_dir, torch_logits(model, images[order])


def torch_logits(model, images: np.ndarray) -> np.ndarray:
  """PyTorch's logits of uint8 NHWC images normalised as config normalization='given' (ImageNet's
  mean and std)."""
  import torch  # pylint: disable=import-outside-toplevel
  x = (images / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
  with torch.no_grad():
    return model(torch.from_numpy(x.transpose(0, 3, 1, 2)).float()).numpy()


def peer_flags(weights: Path, data_dir: Path) -> list[str]:
  return [f'--torch_weights={weights}', '--model=resnet8', '--config=configs/cifar10.py:resnet8',
          '--config.dataset=image_folder', f'--config.data_dir={data_dir}',
          '--config.normalization=given', f'--config.batch_size={EVAL_BATCH}',
          f'--config.eval_batch_size={EVAL_BATCH}']


def peer_config(data_dir: Path, **values):
  from configs import cifar10  # pylint: disable=import-outside-toplevel
  config = cifar10.get_config('resnet8')
  config.update(dict(dataset='image_folder', data_dir=str(data_dir), normalization='given',
                     batch_size=EVAL_BATCH, eval_batch_size=EVAL_BATCH, **values))
  return config


def peer_request(weights: Path, data_dir: Path, **values) -> evaluate.Request:
  return evaluate.check_torch(str(weights), 'resnet8', peer_config(data_dir, **values))


def test_torch_weights_predict_as_pytorch_on_every_image_on_1_and_8_devices(tmp_path):
  pytest.importorskip('torch')
  weights, data_dir, expected = peer_and_folder(tmp_path)
  logits, labels, names, step = evaluate.predictions(peer_request(weights, data_dir))
  assert (len(labels), step, names) == (TEST_IMAGES, None, ['c0', 'c1', 'c2'])
  np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
  np.testing.assert_array_equal(logits.argmax(axis=1), expected.argmax(axis=1))
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8',
             JAX_PLATFORMS='cpu', PYTHONPATH=str(REPO))
  done = subprocess.run([sys.executable, '-m', 'resnet_jax.evaluate',
                         *peer_flags(weights, data_dir), f'--output={tmp_path / "out"}'],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  row = json.loads(done.stdout.strip().splitlines()[-1])
  assert (row['examples'], row['checkpoint_step'], row['top1_error']) == (TEST_IMAGES, None, 0.0)
  assert row['devices'] == 8
  import torch  # pylint: disable=import-outside-toplevel
  loss = torch.nn.functional.cross_entropy(torch.from_numpy(expected), torch.from_numpy(
      expected.argmax(axis=1))).item()
  assert row['loss'] == pytest.approx(loss, rel=1e-4, abs=1e-6)
  with open(tmp_path / 'out' / 'per_class.csv') as f:
    assert [c['accuracy'] for c in csv.DictReader(f)] == ['1.0000'] * PEER_CLASSES


def test_torch_weights_of_another_model_or_no_state_dict_are_refused(tmp_path):
  import torch  # pylint: disable=import-outside-toplevel
  weights, data_dir, _ = peer_and_folder(tmp_path)
  with pytest.raises(ConfigError, match=r"--torch_weights=.*: state_dict has no "
                                        r"'layer1.1.conv1.weight'"):
    evaluate.check_torch(str(weights), 'resnet14', peer_config(data_dir))
  torch.save({'epoch': 3}, tmp_path / 'meta.pt')
  with pytest.raises(ConfigError, match=r'holds a dict, not a state_dict of tensors'):
    peer_request(tmp_path / 'meta.pt', data_dir)
