"""Compile time, step time and memory of the train step against depth, in both layouts.

    python benchmarks/compile_depth.py --output=benchmarks/results/compile_depth.json
    python benchmarks/compile_depth.py --rows=resnet110:stacked:128:0:3 --timeout=900

A row is MODEL:LAYOUT:BATCH:REMAT:STEPS: the network, its variables' layout (unrolled or
stacked, resnet_jax/models/layout.py), the global batch, 1 to rematerialise every block
(config.remat_blocks) and the train steps per timed window (0: compile only). Each row runs in
a fresh child process, so that no compile cache or memory of one row reaches the next, and is
killed after --timeout seconds ('did not finish in N s'). The child builds the train step as
the loop does (resnet_jax.train.loop.build for configs/cifar10.py's recipe on synthetic data,
benchmarks/throughput.jax_config; on the CPU with its stream barriers and loop_conv) and
reports:
- lower_s, compile_s: `.lower(...)` and `.compile()` of the jitted train step;
- memory: the compiled step's `memory_analysis()` (arguments, outputs, temporaries; peak =
  arguments + outputs - aliased + temporaries), the figure an accelerator would need for it;
- with STEPS > 0: ms per image of the median of --windows windows of STEPS steps after one
  warm-up step (one synchronisation per window);
- the child's peak resident memory.
Results go to --output (JSON) and a Markdown table beside it (.md), rewritten after every row.

    python benchmarks/compile_depth.py --chain --output=/tmp/chain.json

--chain instead times the cause of the CPU cost alone: a chain of CHAIN_LAYERS residual 3x3
conv-ReLU layers of stage 1 (32x32, 16 channels), forward and backward, unrolled, as a lax.scan
with jax's convolution, and as a lax.scan with resnet_jax.models.loop_conv, with the dimension
labels of the convolutions XLA:CPU compiled for each.
"""

from __future__ import annotations

import dataclasses
import json
import re
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from absl import app, flags

from benchmarks import throughput
from benchmarks.throughput import fmt
from resnet_jax import config as config_lib
from resnet_jax import models, parallel
from resnet_jax.config import LAYOUTS
from resnet_jax.files import atomic_write_text
from resnet_jax.models import loop_conv
from resnet_jax.train import loop

REPO = Path(__file__).resolve().parents[1]

MIB = 2 ** 20
# The default rows: compile (and a step at batch 16) of the deep networks in both layouts,
# ResNet-110's per-image step at the papers' batch 128 in both, and ResNet-1001's memory at
# batch 128 with and without rematerialisation.
DEFAULT_ROWS = (
    'resnet110:unrolled:128:0:2', 'resnet110:stacked:128:0:2',
    'resnet1202:stacked:16:0:1', 'resnet1001_v2:stacked:16:0:1',
    'resnet1001_v2:stacked:128:0:0', 'resnet1001_v2:stacked:128:1:0',
    'resnet1202:unrolled:16:0:1', 'resnet1001_v2:unrolled:16:0:1',
)

FLAGS = flags.FLAGS
flags.DEFINE_list('rows', list(DEFAULT_ROWS), 'MODEL:LAYOUT:BATCH:REMAT:STEPS, run in order')
flags.DEFINE_integer('timeout', 600, 'seconds a row may take (build, compile, steps) before it is '
                     'killed and reported as not finished')
flags.DEFINE_string('child', '', 'internal: measure this one row and print it as JSON')
flags.DEFINE_bool('chain', False, 'time the conv chain (unrolled, scanned, scanned with loop_conv) '
                  'instead of the rows')
flags.DEFINE_integer('chain_batch', 32, 'batch of the --chain measurement')
# --windows (timed windows, the median reported) and --output (the JSON; the Markdown table goes
# beside it) are benchmarks/throughput.py's flags, with this script's defaults.
FLAGS.set_default('windows', 3)
FLAGS.set_default('output', 'compile_depth.json')


@dataclasses.dataclass(frozen=True)
class Row:
  model: str
  layout: str
  batch_size: int
  remat: bool
  steps: int

  @property
  def spec(self) -> str:
    return f'{self.model}:{self.layout}:{self.batch_size}:{int(self.remat)}:{self.steps}'


def parse_row(item: str) -> Row:
  """One MODEL:LAYOUT:BATCH:REMAT:STEPS row; one-line ValueError naming what is wrong."""
  parts = item.split(':')
  if len(parts) != 5:
    raise ValueError(f'--rows={item}: write MODEL:LAYOUT:BATCH:REMAT:STEPS, e.g. '
                     'resnet110:stacked:128:0:2')
  model, layout, batch, remat, steps = parts
  models.parse_name(model)
  if layout not in LAYOUTS:
    raise ValueError(f'--rows={item}: layout {layout!r} is not one of {LAYOUTS}')
  if not batch.isdigit() or int(batch) < 1 or remat not in ('0', '1') or not steps.isdigit():
    raise ValueError(f'--rows={item}: BATCH must be a positive integer, REMAT 0 or 1, STEPS an '
                     'integer >= 0')
  return Row(model, layout, int(batch), remat == '1', int(steps))


# --- the child: one row ----------------------------------------------------------------


def memory(compiled) -> dict[str, int]:
  """The compiled step's memory_analysis() in bytes, with the peak that throughput reports."""
  analysis = compiled.memory_analysis()
  fields = ('argument_size_in_bytes', 'output_size_in_bytes', 'alias_size_in_bytes',
            'temp_size_in_bytes', 'generated_code_size_in_bytes')
  return {'peak_bytes': throughput._compiled_bytes(compiled),  # pylint: disable=protected-access
          **{name: int(getattr(analysis, name)) for name in fields}}


def measure(row: Row, windows: int) -> dict[str, Any]:
  """Builds the row's train step as the loop does, compiles it, and times it (STEPS > 0)."""
  setting = throughput.Setting(row.model, row.batch_size, 'float32')
  config = throughput.jax_config(setting, synthetic_size=2 * row.batch_size)
  config.update(scan_blocks=row.layout, remat_blocks=row.remat)
  setup = loop.build(config_lib.Run.of(config), parallel.make_mesh())
  arrays = setup.data.arrays('train')
  calls = 1 + windows * row.steps
  batches = [setup.data.train_batch(i) for i in range(calls if row.steps else 1)]
  start = time.perf_counter()
  lowered = setup.train_step.lower(setup.state, arrays, batches[0])
  lower_s = time.perf_counter() - start
  start = time.perf_counter()
  compiled = lowered.compile()
  result = {'lower_s': lower_s, 'compile_s': time.perf_counter() - start,
            'memory': memory(compiled)}
  if row.steps:
    holder = {'state': setup.state, 'i': 0}

    def call():
      holder['state'], metrics = compiled(holder['state'], arrays, batches[holder['i']])
      holder['i'] += 1
      return metrics

    timing = throughput.time_calls(call, jax.block_until_ready, 1, row.steps, windows)
    result.update(step_ms_per_image=1e3 * timing.median_s / row.batch_size,
                  windows_ms_per_image=[1e3 * t / row.batch_size for t in timing.windows_s],
                  warmup_s=timing.warmup_s)
  result['host_peak_rss_bytes'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  return result


# --- the cause alone: a chain of convolutions, unrolled and in a loop ---------------------

CHAIN_LAYERS = 6


def chain_losses() -> dict[str, Callable]:
  """loss(kernels [L, 3, 3, C, C], x) of the chain, by how it is compiled."""
  def layer(conv, x, w):
    return x + jax.nn.relu(conv(x, w, (1, 1), ((1, 1), (1, 1)),
                                dimension_numbers=('NHWC', 'HWIO', 'NHWC')))

  def unrolled(conv):
    def loss(ws, x):
      for w in ws:
        x = layer(conv, x, w)
      return jnp.sum(x * x)
    return loss

  def scanned(conv):
    def loss(ws, x):
      x, _ = jax.lax.scan(lambda x, w: (layer(conv, x, w), None), x, ws)
      return jnp.sum(x * x)
    return loss

  lax_conv = jax.lax.conv_general_dilated
  return {'unrolled, lax conv': unrolled(lax_conv), 'scan, lax conv': scanned(lax_conv),
          'scan, loop_conv': scanned(loop_conv.loop_conv)}


def measure_chain(batch: int, windows: int) -> list[dict[str, Any]]:
  """ms per forward + backward of the chain (the best of `windows` calls after one), the
  convolutions' dimension labels after compilation, and the gradients' relative difference from
  the unrolled ones."""
  channels, size = 16, 32
  ws = 0.05 * jax.random.normal(jax.random.key(0), (CHAIN_LAYERS, 3, 3, channels, channels))
  x = jax.random.normal(jax.random.key(1), (batch, size, size, channels))
  rows, reference = [], None
  for name, loss in chain_losses().items():
    compiled = jax.jit(jax.grad(loss, (0, 1))).lower(ws, x).compile()
    grads = jax.block_until_ready(compiled(ws, x))
    reference = grads if reference is None else reference
    timing = throughput.time_calls(lambda: compiled(ws, x), jax.block_until_ready, 0, 1, windows)
    labels = sorted(set(re.findall(r'convolution\([^\n]*dim_labels=([a-z0-9_>-]+)',
                                   compiled.as_text())))
    error = max(float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))
                for a, b in zip(grads, reference))
    rows.append({'chain': name, 'batch_size': batch, 'ms': 1e3 * min(timing.windows_s),
                 'dim_labels': labels, 'grads_relative_error': error})
  return rows


def chain_markdown(rows: Sequence[dict[str, Any]]) -> str:
  lines = ['| chain | batch | ms fwd+bwd | conv dim_labels | grads rel. error |',
           '|---|---|---|---|---|']
  lines += [f'| {r["chain"]} | {r["batch_size"]} | {r["ms"]:.1f} | {", ".join(r["dim_labels"])} '
            f'| {r["grads_relative_error"]:.1e} |' for r in rows]
  return '\n'.join(lines) + '\n'


def write_chain(output: Path, rows: list[dict[str, Any]]) -> None:
  output.parent.mkdir(parents=True, exist_ok=True)
  report = {'environment': throughput.environment(peer=False, compile_mode='off'), 'rows': rows}
  atomic_write_text(output, json.dumps(report, indent=1) + '\n')
  atomic_write_text(output.with_suffix('.md'), chain_markdown(rows))
  print(chain_markdown(rows), end='')


# --- the parent: rows in children, the report ------------------------------------------


def run_row(row: Row, timeout: int, windows: int) -> dict[str, Any]:
  """The row measured in a child process: its numbers, or why there are none."""
  command = [sys.executable, str(Path(__file__).resolve()), f'--child={row.spec}',
             f'--windows={windows}']
  start = time.perf_counter()
  try:
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=timeout)
  except subprocess.TimeoutExpired:
    return {'status': f'did not finish in {timeout} s', 'wall_s': time.perf_counter() - start}
  wall_s = time.perf_counter() - start
  lines = done.stdout.strip().splitlines()
  if done.returncode or not lines:
    tail = (done.stderr.strip().splitlines() or ['no output'])[-1]
    return {'status': f'failed (exit {done.returncode}): {tail}', 'wall_s': wall_s}
  return {'status': 'ok', 'wall_s': wall_s, **json.loads(lines[-1])}


TABLE_COLUMNS = ('model', 'layout', 'batch', 'remat', 'status', 'lower s', 'compile s',
                 'step ms/image', 'XLA peak MiB', 'XLA temp MiB', 'host peak RSS MiB')


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
  lines = ['| ' + ' | '.join(TABLE_COLUMNS) + ' |', '|' + '---|' * len(TABLE_COLUMNS)]
  for r in rows:
    mem = r.get('memory', {})
    mib = lambda v: None if v is None else v / MIB
    cells = [r['model'], r['layout'], str(r['batch_size']), 'yes' if r['remat'] else 'no',
             r['status'], fmt(r.get('lower_s'), 1), fmt(r.get('compile_s'), 1),
             fmt(r.get('step_ms_per_image'), 2), fmt(mib(mem.get('peak_bytes')), 0),
             fmt(mib(mem.get('temp_size_in_bytes')), 0),
             fmt(mib(r.get('host_peak_rss_bytes')), 0)]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


def markdown_report(report: dict[str, Any]) -> str:
  return (throughput.report_header('Train step compile time, step time and memory by depth',
                                   report['environment'])
          + f'- timeout per row: {report["timeout_s"]} s\n\n' + markdown_table(report['rows']))


def run(rows: Sequence[Row], timeout: int, windows: int, output: Path) -> dict[str, Any]:
  """Every row in its own child, the JSON and Markdown rewritten after each."""
  output.parent.mkdir(parents=True, exist_ok=True)
  report = {'environment': throughput.environment(peer=False, compile_mode='off'),
            'timeout_s': timeout, 'rows': []}
  for row in rows:
    report['rows'].append({**dataclasses.asdict(row), **run_row(row, timeout, windows)})
    print(markdown_table(report['rows'][-1:]).splitlines()[-1], flush=True)
    atomic_write_text(output, json.dumps(report, indent=1) + '\n')
    atomic_write_text(output.with_suffix('.md'), markdown_report(report))
  return report


def validate() -> list[Row]:
  """Every flag check before any work: one-line ValueError naming the flag and the fix."""
  for name in ('timeout', 'windows', 'chain_batch'):
    if FLAGS[name].value < 1:
      raise ValueError(f'--{name}={FLAGS[name].value} must be >= 1')
  if not FLAGS.output.endswith('.json'):
    raise ValueError(f'--output={FLAGS.output} must end in .json (the table goes beside it)')
  if not FLAGS.rows:
    raise ValueError('--rows is empty: give MODEL:LAYOUT:BATCH:REMAT:STEPS rows')
  return [parse_row(item) for item in FLAGS.rows]


def main(argv: Sequence[str]) -> None:
  del argv
  if FLAGS.child:
    print(json.dumps(measure(parse_row(FLAGS.child), FLAGS.windows)))
    return
  try:
    rows = validate()
  except ValueError as error:
    sys.exit(f'error: {error}')
  if FLAGS.chain:
    write_chain(Path(FLAGS.output), measure_chain(FLAGS.chain_batch, FLAGS.windows))
    return
  run(rows, FLAGS.timeout, FLAGS.windows, Path(FLAGS.output))


if __name__ == '__main__':
  app.run(main)
