"""python -m resnet_jax.interop.convert and init_from: PyTorch weights into a workdir and back out
(strict torch loading), released .th files as they are, fine-tuning starts from them, and bad input
is one line, exit 2 and nothing written."""

import json
import os
import re
from pathlib import Path

import jax
import numpy as np
import pytest

torch = pytest.importorskip('torch')

from benchmarks import torch_peer  # noqa: E402
from resnet_jax import models, parallel  # noqa: E402
from resnet_jax.config import Run  # noqa: E402
from resnet_jax.errors import BAD_INPUT_STATUS, ConfigError  # noqa: E402
from resnet_jax.interop import convert, pytorch, torch_files  # noqa: E402
from resnet_jax.train import checkpoint, loop  # noqa: E402
from tests.tiny import tiny_config  # noqa: E402

MODEL = 'resnet8'


def random_peer(seed: int = 0, num_classes: int = 10, name: str = MODEL) -> torch.nn.Module:
  """The PyTorch network `name` with random weights and BN statistics (so BN is no identity)."""
  torch.manual_seed(seed)
  model = torch_peer.build_model(name, num_classes)
  for module in model.modules():
    if isinstance(module, torch.nn.BatchNorm2d):
      module.weight.data.uniform_(0.5, 1.5)
      module.bias.data.normal_(0, 0.1)
      module.running_mean.normal_(0, 0.1)
      module.running_var.uniform_(0.5, 1.5)
  return model.eval()


def released_file(path: Path, model: torch.nn.Module) -> Path:
  """A file as akamaster/pytorch_resnet_cifar10 releases them: {'state_dict': ...} of a
  DataParallel model ('module.' prefixes) beside other entries."""
  state = {f'module.{k}': v for k, v in model.state_dict().items()}
  torch.save({'epoch': 200, 'best_prec1': 91.0, 'state_dict': state}, path)
  return path


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
  """convert's command in this process: (exit status, stdout, stderr)."""
  try:
    convert.cli.run(convert.main, convert.FLAGS, ['convert', *args])
    status = 0
  except SystemExit as stop:
    status = stop.code
  out, err = capsys.readouterr()
  return status, out, err


def test_released_th_files_load_as_they_are(tmp_path):
  model = random_peer()
  loaded = torch_files.load_state_dict(str(released_file(tmp_path / 'w.th', model)))
  assert loaded.keys() == model.state_dict().keys()
  assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())


def test_import_then_export_gives_back_the_tensors_under_strict_loading(tmp_path, capsys):
  model = random_peer()
  source = released_file(tmp_path / 'w.th', model)
  workdir = tmp_path / 'imported'
  status, out, err = run_cli(capsys, f'--torch_weights={source}', f'--model={MODEL}',
                             f'--workdir={workdir}')
  assert status == 0, err
  assert json.loads(out) == {'workdir': str(workdir), 'model': MODEL, 'classes': 10,
                             'checkpoint_step': 0, 'tensors': len(model.state_dict())}
  saved = json.loads((workdir / checkpoint.CONFIG_FILE).read_text())
  assert (saved['model'], saved['normalization']) == (MODEL, 'given')
  exported = tmp_path / 'back.pt'
  status, out, err = run_cli(capsys, f'--workdir={workdir}', f'--to_torch={exported}')
  assert status == 0, err
  assert json.loads(out)['checkpoint_step'] == 0
  back = torch_peer.build_model(MODEL, 10)
  back.load_state_dict(torch.load(exported, weights_only=True), strict=True)
  for name, value in model.state_dict().items():
    if not name.endswith('num_batches_tracked'):
      torch.testing.assert_close(back.state_dict()[name], value, rtol=0, atol=0)


def test_a_trained_run_exports_its_best_checkpoint(tmp_path, capsys):
  workdir = tmp_path / 'run'
  loop.train_and_evaluate(tiny_config(num_train_steps=8), str(workdir))
  best = checkpoint.choose_step(str(workdir), 'best', val_split=0)
  status, out, err = run_cli(capsys, f'--workdir={workdir}', f'--to_torch={tmp_path / "r.pt"}')
  assert status == 0, err
  assert json.loads(out)['checkpoint_step'] == best
  variables = checkpoint.restore_variables(str(workdir), best, parallel.make_mesh())
  peer = torch_peer.build_model(MODEL, 10)
  peer.load_state_dict(torch.load(tmp_path / 'r.pt', weights_only=True), strict=True)
  kernel = np.asarray(variables['params']['head']['kernel'])
  np.testing.assert_array_equal(peer.linear.weight.detach().numpy(), kernel.T)


@pytest.mark.parametrize('existing', [False, True])
def test_an_import_cut_midway_leaves_the_workdir_as_it_was(tmp_path, monkeypatch, existing):
  """A failure after the checkpoint is written (here: config.json cannot be) leaves no trace;
  the same import then writes exactly the run, into a new or an existing empty folder."""
  model = random_peer(seed=3)
  weights, workdir = released_file(tmp_path / 'w.th', model), tmp_path / 'imported'
  if existing:
    workdir.mkdir()
  before = sorted(path.relative_to(tmp_path) for path in tmp_path.rglob('*'))
  def disk_full(*args):
    raise OSError('full')
  with monkeypatch.context() as patch:
    patch.setattr(checkpoint, 'write_config', disk_full)
    with pytest.raises(OSError, match='full'):
      convert.import_torch(str(weights), MODEL, str(workdir))
  assert sorted(path.relative_to(tmp_path) for path in tmp_path.rglob('*')) == before
  convert.import_torch(str(weights), MODEL, str(workdir))
  assert sorted(path.name for path in tmp_path.iterdir()) == ['imported', 'w.th']
  assert sorted(path.name for path in workdir.iterdir()) == [checkpoint.CHECKPOINT_DIR,
                                                             checkpoint.CONFIG_FILE]
  variables = checkpoint.restore_variables(str(workdir), 0, parallel.make_mesh())
  np.testing.assert_array_equal(np.asarray(variables['params']['head']['kernel']),
                                model.linear.weight.detach().numpy().T)


@pytest.mark.parametrize('name, layout', [(MODEL, 'unrolled'), ('resnet14', 'stacked')])
@pytest.mark.parametrize('source', ['file', 'workdir'])
def test_init_from_sets_params_and_batch_stats_only(tmp_path, source, name, layout):
  """In the run's own layout, whichever layout the source has (a file and an import: unrolled)."""
  model = random_peer(seed=1, name=name)
  weights = released_file(tmp_path / 'w.th', model)
  if source == 'workdir':
    convert.import_torch(str(weights), name, str(tmp_path / 'imported'))
  init_from = str(weights if source == 'file' else tmp_path / 'imported')
  config = tiny_config(model=name, scan_blocks=layout, init_from=init_from)
  mesh = parallel.make_mesh()
  setup = loop.build(Run.of(config), mesh)
  assert models.layout_of(setup.state.params) == layout
  state = loop.initialize_from(init_from, name, setup.state, setup.data.num_classes, mesh)
  expected = models.convert_layout(pytorch.from_torch(model.state_dict(), name), layout)
  network = {'params': state.params, 'batch_stats': state.batch_stats}
  assert jax.tree.structure(network) == jax.tree.structure(expected)
  jax.tree.map(lambda ours, theirs: np.testing.assert_array_equal(np.asarray(ours), theirs),
               network, expected)
  assert not np.array_equal(np.asarray(setup.state.params['head']['kernel']),
                            expected['params']['head']['kernel'])  # control: init differs
  assert int(state.step) == 0 and state.opt_state is setup.state.opt_state


def test_fine_tuning_run_starts_from_the_torch_file(tmp_path):
  weights = released_file(tmp_path / 'w.th', random_peer(seed=2))
  summary = loop.train_and_evaluate(tiny_config(init_from=str(weights), num_train_steps=4),
                                    str(tmp_path / 'tuned'))
  assert summary['step'] == 4
  saved = json.loads((tmp_path / 'tuned' / checkpoint.CONFIG_FILE).read_text())
  assert saved['init_from'] == str(weights)


def test_init_from_a_file_of_another_model_names_the_tensor_and_writes_nothing(tmp_path):
  weights = tmp_path / 'w.th'
  torch.save(torch_peer.build_model('resnet14', 10).state_dict(), weights)
  with pytest.raises(ConfigError, match=r"init_from=.*w.th: state_dict has \d+ key\(s\) that "
                                        r"resnet8 with 10 classes lacks, first 'layer1.1"):
    loop.train_and_evaluate(tiny_config(init_from=str(weights)), str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()


def bad_inputs(tmp_path: Path) -> dict[str, list[str]]:
  """Each bad command line, after the files it names are written."""
  good = released_file(tmp_path / 'good.th', random_peer())
  torch.save([1, 2, 3], tmp_path / 'list.pt')
  (tmp_path / 'junk.pt').write_bytes(b'not a torch file')
  (tmp_path / 'taken').mkdir()
  (tmp_path / 'taken' / checkpoint.CONFIG_FILE).write_text('{}')
  (tmp_path / 'empty_run').mkdir()
  (tmp_path / 'empty_run' / checkpoint.CONFIG_FILE).write_text(
      json.dumps(tiny_config().to_dict()))
  new = f'--workdir={tmp_path / "new"}'
  return {
      r'holds a list, not a state_dict of tensors': [
          f'--torch_weights={tmp_path / "list.pt"}', f'--model={MODEL}', new],
      r'is not a PyTorch weight file': [
          f'--torch_weights={tmp_path / "junk.pt"}', f'--model={MODEL}', new],
      r"state_dict has no 'layer1.1.conv1.weight'": [
          f'--torch_weights={good}', '--model=resnet14', new],
      r'already holds a run \(config.json\)': [
          f'--torch_weights={good}', f'--model={MODEL}', f'--workdir={tmp_path / "taken"}'],
      r'has no checkpoint: train it first': [
          f'--workdir={tmp_path / "empty_run"}', f'--to_torch={tmp_path / "out.pt"}'],
      r'holds no run \(no config.json\)': [
          f'--workdir={tmp_path / "nowhere"}', f'--to_torch={tmp_path / "out.pt"}'],
      r'--torch_weights needs --model': [f'--torch_weights={good}', new],
  }


def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, capsys):
  cases = bad_inputs(tmp_path)
  before = sorted(tmp_path.rglob('*'))
  for message, args in cases.items():
    status, out, err = run_cli(capsys, *args)
    assert status == BAD_INPUT_STATUS, (args, err)
    assert out == '' and len(err.strip().splitlines()) == 1, err
    assert err.startswith('error: ') and re.search(message, err), (message, err)
  assert sorted(tmp_path.rglob('*')) == before
  assert not os.path.exists(tmp_path / 'new')
