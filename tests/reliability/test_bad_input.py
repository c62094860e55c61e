"""Bad input through the CLI: exit status 2, one line on stderr, the workdir untouched.

Grey-scale and palette images are not bad input: they are converted to RGB
(tests/data/test_sources.py).
"""

import os

import pytest
from PIL import Image

from configs import cifar10
from resnet_jax import models, parallel
from resnet_jax.train import checkpoint
from resnet_jax.train.state import create_train_state
from tests.reliability import harness
from tests.tiny import TINY, optimizer_of

BAD_INPUT_STATUS = 2
FIELDS = {k: v for k, v in TINY.items() if k != 'dataset'}


def image_folder(root, sizes=None, skip_test_class=None):
  """2 classes of 8x8 PNGs (train 4, test 2 each); sizes maps a file to another size."""
  for split, count in (('train', 4), ('test', 2)):
    for name in ('cat', 'dog'):
      if split == 'test' and name == skip_test_class:
        continue
      for i in range(count):
        path = root / split / name / f'{i}.png'
        path.parent.mkdir(parents=True, exist_ok=True)
        size = (sizes or {}).get(f'{split}/{name}/{i}.png', (8, 8))
        Image.new('RGB', size, (i * 30, 90, 200)).save(path)
  return root


def unreadable_file(tmp_path):
  root = image_folder(tmp_path / 'data')
  (root / 'train' / 'dog' / '9.png').write_bytes(b'not an image')
  return {'dataset': 'image_folder', 'data_dir': root}


def different_classes(tmp_path):
  root = image_folder(tmp_path / 'data', skip_test_class='dog')
  return {'dataset': 'image_folder', 'data_dir': root}


def mixed_sizes(tmp_path):
  root = image_folder(tmp_path / 'data', sizes={'test/dog/1.png': (8, 9)})
  return {'dataset': 'image_folder', 'data_dir': root}


def workdir_under_a_file(tmp_path):
  (tmp_path / 'file').write_text('in the way')
  return {'workdir': tmp_path / 'file' / 'run'}


def read_only_workdir(tmp_path):
  (tmp_path / 'run').mkdir()
  (tmp_path / 'run').chmod(0o500)
  return {}


def another_run(tmp_path):
  (tmp_path / 'run').mkdir()
  checkpoint.write_config(cifar10.get_config('resnet14'), str(tmp_path / 'run'))
  return {}


def checkpoint_of_another_model(tmp_path):
  """checkpoints/ of a resnet14 run (config.json gone, e.g. copied by hand)."""
  config = cifar10.get_config('resnet14')
  mesh = parallel.make_mesh()
  state = create_train_state(models.get_model('resnet14'), optimizer_of(config).tx,
                             (8, 8, 3), 0, mesh)
  with checkpoint.Checkpointer(str(tmp_path / 'run'), keep=1, best_metric='test_error') as saver:
    saver.save(4, state, {'wall_time': 1.0})
  return {}


CASES = {
    'zero batch size': ({'batch_size': 0}, 'batch_size=0 must be > 0'),
    'negative steps': ({'num_train_steps': -5}, 'num_train_steps=-5 must be > 0'),
    'unknown schedule': ({'schedule': 'linear'}, "schedule='linear' is unknown"),
    'unknown model': ({'model': 'convnet9'}, "unknown model 'convnet9'"),
    'validation split of all the data': (
        {'val_split': 64}, r'val_split=64 must be in [0, 64) (the train split has 64 examples)'),
    'batch larger than the data': ({'batch_size': 128}, 'exceeds the 64 training examples'),
    'no data folder': ({'dataset': 'image_folder', 'data_dir': '/nowhere'}, 'is not a directory'),
    'unreadable image': (unreadable_file, 'cannot read image'),
    'train and test classes differ': (different_classes, "only in train ['dog'], only in test []"),
    'images of different sizes': (mixed_sizes, 'is 8x9 but the first image'),
    'workdir under a file': (workdir_under_a_file, 'cannot be created'),
    'read-only workdir': (read_only_workdir, 'is not writable'),
    'workdir of another run': (another_run, "holds another run (model='resnet14'"),
    'checkpoint of another model': (checkpoint_of_another_model,
                                    'holds the state of another model or optimiser'),
}


def contents(path) -> dict | None:
  return harness.files(path) if os.path.exists(path) else None


@pytest.mark.parametrize('case', CASES)
def test_bad_input_is_one_line_exit_2_and_changes_nothing(tmp_path, xla_cache, case):
  setup, message = CASES[case]
  if case == 'read-only workdir' and os.geteuid() == 0:
    pytest.skip('root writes into read-only folders')
  overrides = setup(tmp_path) if callable(setup) else dict(setup)
  workdir = overrides.pop('workdir', tmp_path / 'run')
  model = overrides.pop('model', 'resnet8')
  fields = {'dataset': 'synthetic', **FIELDS, **overrides}
  before = contents(workdir)

  result = harness.run(harness.command(workdir, model, **fields), harness.env(xla_cache))
  lines = result.stderr.strip().splitlines()
  assert (result.returncode, len(lines)) == (BAD_INPUT_STATUS, 1), result.stderr[-3000:]
  assert lines[0].startswith('error: ') and message in lines[0], lines[0]
  assert contents(workdir) == before

