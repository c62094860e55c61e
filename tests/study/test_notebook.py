"""notebooks/degradation.ipynb runs top to bottom on the CPU (quick preset shrunk to seconds)."""

import base64
import json
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from resnet_jax.study import runner

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / 'notebooks' / 'degradation.ipynb'


def _outputs(notebook, output_type: str) -> list:
  return [out for cell in notebook.cells if cell.cell_type == 'code' for out in cell.outputs
          if out.output_type == output_type]


def test_notebook_runs_the_quick_preset_and_shows_the_figures(tmp_path, monkeypatch):
  workdir = tmp_path / 'study'
  monkeypatch.setenv(runner.QUICK_STEPS_ENV, '12')
  monkeypatch.setenv('RESNET_JAX_NOTEBOOK_WORKDIR', str(workdir))
  monkeypatch.setenv('RESNET_JAX_NOTEBOOK_FLAGS',
                     '--models=plain8 --dataset=synthetic --config.synthetic_size=128 '
                     '--config.val_split=32 --config.batch_size=16 --config.eval_batch_size=32 '
                     '--config.log_grad_norms=True --config.train_subset=0 --config.test_subset=16')
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  NotebookClient(notebook, timeout=300, kernel_name='python3',
                 resources={'metadata': {'path': str(REPO / 'notebooks')}}).execute()

  streams = ''.join(out.text for out in _outputs(notebook, 'stream'))
  invocation = json.loads((workdir / 'run_info.json').read_text())['invocations'][-1]
  assert invocation['device']['backend'] == 'cpu' and invocation['preset'] == 'quick'
  config = json.loads((workdir / 'plain8' / 'seed0' / 'config.json').read_text())
  assert config['num_train_steps'] == 12  # the quick preset at RESNET_JAX_QUICK_STEPS
  assert 'plain8/seed0: start' in streams and 'plain8/seed0: done' in streams
  last = (workdir / 'plain8' / 'seed0' / 'metrics.jsonl').read_text().splitlines()[-1]
  assert json.loads(last)['event'] == 'end'
  shown = _outputs(notebook, 'display_data')
  images = [out for out in shown if 'image/png' in out.data]
  assert [base64.b64decode(out.data['image/png']) for out in images] == [
      (workdir / 'figures' / f'{name}.png').read_bytes()
      for name in ('figure1', 'figure6', 'error_vs_depth', 'grad_norms')]
  markdown = [out.data.get('text/markdown', '') for out in shown]
  tables = [text for text in markdown if '| plain8 |' in text]
  assert tables == [(workdir / 'results.md').read_text()]
