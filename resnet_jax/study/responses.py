"""He et al. 2015 Fig. 7 (sec. 4.2, "Analysis of Layer Responses"): the standard deviation of
each 3x3 layer's response, "the outputs of each 3x3 layer, after BN and before other
nonlinearity (ReLU/addition)", of trained plain networks and ResNets.

The paper's finding, which the figure lets a reader check: ResNets respond less than their
plain counterparts, and deeper ResNets less still ("the residual functions might be generally
closer to zero than the non-residual functions").

write_layer_responses(DIR) takes each post-activation plain/ResNet run of a study at its latest
checkpoint, applies it in inference mode (BN with its running statistics) to a fixed batch, the
first RESPONSE_IMAGES test images, and takes the standard deviation of every element of each
layer's response over that batch. The numbers go to DIR/figures/layer_responses.json; the
figure (top: layers in network order; bottom: sorted in descending order) is drawn from that
file only, so a study folder without checkpoints (a committed result) still redraws it.
"""

import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure

from resnet_jax import config as config_lib
from resnet_jax import parallel
from resnet_jax.files import atomic_write_text
from resnet_jax.models import layout
from resnet_jax.study import figures
from resnet_jax.study.runs import FAMILIES, describe, load_runs, models_of, parse_model
from resnet_jax.train import checkpoint, loop
from resnet_jax.train.state import network

RESPONSE_IMAGES = 500
RESPONSES_FILE = 'layer_responses.json'
FIGURE_NAME = 'layer_responses'


def response_layers(params: dict) -> list[tuple[str, ...]]:
  """Paths of the BN layers that follow a 3x3 convolution (the stem's and the blocks'), in
  network order; the BN of `conv{i}` is `bn{i}` in a post-activation unit (He 2015 Fig. 2)."""
  def is_3x3(module: dict, conv: str) -> bool:
    return conv in module and module[conv]['kernel'].shape[:2] == (3, 3)

  layers = [('stem_bn',)] if is_3x3(params, 'stem_conv') else []
  blocks = sorted((name for name in params if name.startswith('stage')),
                  key=lambda name: tuple(int(part) for part in
                                         name.removeprefix('stage').split('_block')))
  for block in blocks:
    convs = sorted(int(name.removeprefix('conv')) for name in params[block]
                   if name.startswith('conv'))
    layers += [(block, f'bn{i}') for i in convs if is_3x3(params[block], f'conv{i}')]
  return layers


def layer_stds(apply_fn: Callable, variables: dict, images: jnp.ndarray) -> list[float]:
  """The standard deviation of each response_layers output for `images` under `apply_fn` (a
  model's apply), in inference mode."""
  _, captured = apply_fn(variables, images, train=False, mutable=['intermediates'],
                         capture_intermediates=lambda module, _: isinstance(module, nn.BatchNorm))
  outputs = captured['intermediates']
  stds = []
  for path in response_layers(variables['params']):
    node = outputs
    for name in path:
      node = node[name]
    stds.append(float(jnp.std(node['__call__'][0].astype(jnp.float32))))
  return stds


def run_responses(run_dir: Path) -> dict:
  """{'model', 'step', 'images', 'std'} of the run in `run_dir` at its latest checkpoint."""
  run = config_lib.Run.of(checkpoint.run_config(str(run_dir)))
  setup = loop.build(run, parallel.make_mesh())
  with checkpoint.Checkpointer.reader(str(run_dir)) as ckpt:
    step = ckpt.latest_step()
    state, _ = ckpt.restore_step(step, setup.state)
  arrays = setup.data.arrays('test')
  batch = next(iter(setup.data.eval_batches('test')))
  images, _ = setup.data.prepare(arrays, batch, None, False)
  count = min(RESPONSE_IMAGES, int(np.sum(jax.device_get(batch['mask']))))
  # Fig. 7 walks the layers by name, so a run trained with its blocks stacked is read unrolled.
  unrolled = network(dataclasses.replace(run.model, scan_blocks='unrolled'), setup.data.num_classes)
  variables = layout.convert_layout(
      {'params': state.params, 'batch_stats': state.batch_stats}, 'unrolled')
  return {'model': run.model.model, 'step': int(step), 'images': count,
          'std': layer_stds(unrolled.apply, variables, images[:count])}


def _has_checkpoint(run_dir: Path) -> bool:
  return any((run_dir / checkpoint.CHECKPOINT_DIR).glob('[0-9]*'))


def collect(workdir: Path) -> dict[str, dict]:
  """{model: run_responses} for the first seed of every plain/ResNet run with a checkpoint;
  the entries of an earlier layer_responses.json are kept for runs whose checkpoints are gone."""
  path = Path(workdir) / figures.FIGURES_DIR / RESPONSES_FILE
  found = json.loads(path.read_text()) if path.exists() else {}
  runs = load_runs(workdir)
  for model in (model for family in FAMILIES for model in models_of(runs, family)):
    run_dir = Path(workdir) / model / f'seed{runs[model][0].seed}'
    if _has_checkpoint(run_dir):
      found[model] = run_responses(run_dir)
  return found


def figure7(responses: dict[str, dict], title: str) -> Figure:
  """He 2015 Fig. 7: std of the layer responses in network order (top) and sorted in
  descending order (bottom); plain networks dashed, ResNets solid, one colour per depth."""
  fig = Figure(figsize=(9, 7), layout='constrained')
  fig.suptitle(title, fontsize='small')
  top, bottom = fig.subplots(2, 1)
  for model in sorted(responses, key=parse_model):
    stds = responses[model]['std']
    style = dict(color=figures.colour(model), linestyle='--' if model.startswith('plain') else '-',
                 label=figures.label(model), linewidth=1.2)
    top.plot(range(1, len(stds) + 1), stds, gid=f'{model}/original', **style)
    bottom.plot(range(1, len(stds) + 1), sorted(stds, reverse=True), gid=f'{model}/sorted',
                **style)
  top.set(xlabel='layer index (original)', ylabel='std')
  bottom.set(xlabel='layer index (sorted by magnitude)', ylabel='std')
  top.legend(fontsize='small', ncol=2)
  return fig


def write_layer_responses(workdir: Path) -> list[Path]:
  """Computes (collect) and writes DIR/figures/layer_responses.json, then draws Fig. 7 from it
  as PNG and SVG; returns the files written (none, with a note, when no run qualifies)."""
  responses = collect(workdir)
  if not responses:
    print('figures: skipped layer_responses: no plain/ResNet run with a checkpoint',
          file=sys.stderr)
    return []
  out = Path(workdir) / figures.FIGURES_DIR
  out.mkdir(parents=True, exist_ok=True)
  path = out / RESPONSES_FILE
  atomic_write_text(path, json.dumps(responses, indent=1, sort_keys=True) + '\n')
  runs = load_runs(workdir)
  title = (f'{describe(runs)}\nstd of each 3x3 layer after BN on the first '
           f'{min(entry["images"] for entry in responses.values())} test images, at the last '
           'checkpoint (after He et al. 2015 Fig. 7)')
  fig = figure7(responses, title)
  written = [path]
  for suffix in ('.png', '.svg'):
    figures.save_figure(fig, out / f'{FIGURE_NAME}{suffix}')
    written.append(out / f'{FIGURE_NAME}{suffix}')
  return written

