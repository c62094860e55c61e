"""Training and evaluation throughput of our train step against a PyTorch peer.

    python benchmarks/throughput.py --output=/tmp/throughput.json
    python benchmarks/throughput.py --models=resnet56 --batch_sizes=128 --precisions=bfloat16

For every (model, global batch size, precision), on whatever backend jax and torch find:
- ours: the jitted train and eval steps of resnet_jax.train.loop.build, the very functions the
  loop runs (gather from the in-memory uint8 data set, pad-crop-flip augmentation and
  normalisation on the device, forward, backward, SGD + momentum + L2, BN statistics; He 2015
  sec. 4.2), for configs/cifar10.py's recipe on synthetic data;
- peer: the same networks and step in PyTorch (benchmarks/torch_peer.py), when torch imports.
Images per second come from the median of timed windows after a warm-up; a window ends with one
device synchronisation (jax.block_until_ready / torch.cuda.synchronize) and no step inside it
waits for the host. Results go to --output (JSON) and a Markdown table beside it (.md).

--steps_per_call=1,8 adds rows with K steps fused in one call (config.steps_per_call); on XLA:CPU
(jax 0.10) a fused call is far slower, see benchmarks/RESULTS.md.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


import jax
import numpy as np
from absl import app, flags

from configs import cifar10
from resnet_jax import config as config_lib
from resnet_jax import models, parallel, provenance
from resnet_jax.files import atomic_write_text
from resnet_jax.train import inputs, loop

FRAMEWORKS = ('jax', 'torch', 'both')
PRECISIONS = ('float32', 'bfloat16')
DEFAULT_MODELS = ('resnet20', 'resnet56', 'resnet110', 'resnet50_v1_5')
CIFAR_BATCH_SIZES = (128, 1024)  # the paper's (He 2015 sec. 4.2) and a large one
IMAGENET_BATCH_PER_DEVICE = 256  # He 2015 sec. 3.4
IMAGENET_CLASSES = 1000
MIB = 2 ** 20

FLAGS = flags.FLAGS
flags.DEFINE_list('models', list(DEFAULT_MODELS), 'model names (resnet_jax.models.get_model)')
flags.DEFINE_list('batch_sizes', [], 'global batch sizes for every model; empty: 128,1024 for '
                  'CIFAR models and 256 per device for ImageNet models')
flags.DEFINE_list('precisions', list(PRECISIONS), 'float32 and/or bfloat16 (config.half_precision '
                  'for ours, autocast for the peer)')
flags.DEFINE_integer('steps', 10, 'calls per timed window (one call of ours runs steps_per_call '
                     'steps)')
flags.DEFINE_integer('windows', 5, 'timed windows; the median window is reported')
flags.DEFINE_integer('warmup', 3, 'untimed calls before the first window')
flags.DEFINE_list('steps_per_call', ['1'], 'train steps fused per call of ours '
                  '(config.steps_per_call, lax.scan), one row each; the peer runs one step per '
                  'call')
flags.DEFINE_list('settings', [], 'MODEL:BATCH:PRECISION:STEPS_PER_CALL rows, run in this order '
                  'instead of the product of --models, --batch_sizes, --precisions and '
                  '--steps_per_call (e.g. resnet56:128:bfloat16:1,resnet56:128:bfloat16:20)')
flags.DEFINE_string('output', 'throughput.json', 'JSON path; the Markdown table goes beside it')
flags.DEFINE_enum('framework', 'both', FRAMEWORKS, 'jax (ours), torch (the peer) or both; both '
                  'runs ours alone when torch does not import')
flags.DEFINE_enum('torch_compile', 'auto', ['auto', 'on', 'off'], 'torch.compile the peer; auto: '
                  'on with CUDA, off on the CPU (slower there, benchmarks/RESULTS.md)')


@dataclasses.dataclass(frozen=True)
class Setting:
  model: str
  batch_size: int
  precision: str
  steps_per_call: int = 1

  @property
  def image_size(self) -> int:
    return models.input_size(self.model)

  @property
  def num_classes(self) -> int:
    return IMAGENET_CLASSES if self.image_size > 32 else 10


@dataclasses.dataclass(frozen=True)
class Timing:
  """Seconds per call: the median window, every window, and the warm-up calls together."""
  median_s: float
  windows_s: list[float]
  warmup_s: float


@dataclasses.dataclass
class Bench:
  """What a framework reports for one setting (per image and per train step)."""
  train_images_per_s: float
  eval_images_per_s: float
  train_step_ms: float
  eval_step_ms: float
  train_windows_ms: list[float]
  compile_s: float
  compile_source: str
  peak_memory_bytes: int | None
  memory_source: str
  extra: dict[str, Any] = dataclasses.field(default_factory=dict)


# --- timing and memory ---------------------------------------------------------------


def time_calls(call: Callable[[], Any], sync: Callable[[Any], None], warmup: int, steps: int,
               windows: int) -> Timing:
  """Runs `warmup` calls, then `windows` windows of `steps` calls, syncing once per window."""
  start = time.perf_counter()
  out = None
  for _ in range(warmup):
    out = call()
  sync(out)
  warmup_s = time.perf_counter() - start
  per_call = []
  for _ in range(windows):
    start = time.perf_counter()
    for _ in range(steps):
      out = call()
    sync(out)
    per_call.append((time.perf_counter() - start) / steps)
  return Timing(statistics.median(per_call), per_call, warmup_s)


def _proc_status_kib(field: str) -> int:
  with open('/proc/self/status') as f:
    for line in f:
      if line.startswith(field + ':'):
        return int(line.split()[1])
  raise KeyError(field)


class HostMemory:
  """Peak resident memory of this whole process while a setting runs (Linux /proc): it includes the
  interpreter and both frameworks' libraries, so compare settings, not absolute sizes."""

  source = 'host peak RSS of the process'

  def __enter__(self) -> HostMemory:
    self.available = os.path.exists('/proc/self/clear_refs')
    if self.available:
      with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')  # resets the peak RSS (VmHWM) to the current RSS
    return self

  def __exit__(self, *exc) -> None:
    self.peak_bytes = _proc_status_kib('VmHWM') * 1024 if self.available else None


# --- ours ----------------------------------------------------------------------------


def jax_config(setting: Setting, synthetic_size: int):
  """configs/cifar10.py's paper recipe for the model, on synthetic data of the model's size."""
  config = cifar10.get_config(setting.model)
  config.update(dataset='synthetic', synthetic_size=synthetic_size, image_size=setting.image_size,
                batch_size=setting.batch_size, eval_batch_size=setting.batch_size,
                half_precision=setting.precision == 'bfloat16',
                steps_per_call=setting.steps_per_call)
  config.num_classes = setting.num_classes
  return config


def _device_memory() -> tuple[int | None, str]:
  stats = jax.local_devices()[0].memory_stats() or {}
  if 'peak_bytes_in_use' in stats:
    return int(stats['peak_bytes_in_use']), 'device peak_bytes_in_use (process so far)'
  return None, ''


def _compiled_bytes(compiled) -> int | None:
  analysis = compiled.memory_analysis()
  if analysis is None:
    return None
  return int(analysis.argument_size_in_bytes + analysis.output_size_in_bytes
             + analysis.temp_size_in_bytes - analysis.alias_size_in_bytes)


def bench_ours(setting: Setting, warmup: int, steps_per_window: int, windows: int) -> Bench:
  """Times the train and eval steps that resnet_jax.train.loop.build makes for the setting's
  config, the very steps train_and_evaluate runs."""
  steps_per_call = setting.steps_per_call
  calls = warmup + windows * steps_per_window
  config = jax_config(setting, synthetic_size=2 * steps_per_call * setting.batch_size)
  with HostMemory() as host:
    setup = loop.build(config_lib.Run.of(config), parallel.make_mesh())
    data = setup.data
    arrays = data.arrays('train')
    batches = [data.train_batch(i * steps_per_call) for i in range(calls)]
    eval_batch = next(iter(data.eval_batches('test')))
    eval_arrays = data.arrays('test')
    start = time.perf_counter()
    compiled = setup.train_step.lower(setup.state, arrays, batches[0]).compile()  # fills the cache
    compile_s = time.perf_counter() - start
    holder = {'state': setup.state, 'i': 0}

    def train_call():
      holder['state'], metrics = setup.train_step(holder['state'], arrays, batches[holder['i']])
      holder['i'] += 1
      return metrics

    train = time_calls(train_call, jax.block_until_ready, warmup, steps_per_window, windows)
    evaluate = time_calls(lambda: setup.eval_step(holder['state'], eval_arrays, eval_batch),
                          jax.block_until_ready, warmup, steps_per_window, windows)
  peak, source = _device_memory()
  if peak is None:
    peak, source = host.peak_bytes, host.source
  step_s = train.median_s / steps_per_call
  return Bench(
      train_images_per_s=setting.batch_size / step_s,
      eval_images_per_s=setting.batch_size / evaluate.median_s,
      train_step_ms=1e3 * step_s, eval_step_ms=1e3 * evaluate.median_s,
      train_windows_ms=[1e3 * t / steps_per_call for t in train.windows_s],
      compile_s=compile_s, compile_source='train step lower + compile',
      peak_memory_bytes=peak, memory_source=source,
      extra={'xla_buffers_bytes': _compiled_bytes(compiled)})


# --- peer ----------------------------------------------------------------------------


def torch_available() -> bool:
  try:
    import torch  # noqa: F401
  except ImportError:
    return False
  return True


def bench_peer(setting: Setting, warmup: int, steps_per_window: int, windows: int,
               compile_mode: str) -> Bench:
  """Times the PyTorch peer's train and eval steps on the same synthetic data and recipe."""
  import torch

  from benchmarks import torch_peer
  device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
  use_compile = compile_mode == 'on' or (compile_mode == 'auto' and device.type == 'cuda')
  config = jax_config(setting, synthetic_size=2 * setting.batch_size)
  host_data = inputs.load_data(config_lib.Run.of(config), parallel.make_mesh())
  arrays = jax.device_get(host_data.arrays('train'))
  del host_data
  cuda = device.type == 'cuda'
  sync = (lambda _: torch.cuda.synchronize()) if cuda else (lambda _: None)
  if cuda:
    torch.cuda.reset_peak_memory_stats()
  with HostMemory() as host:
    data = torch_peer.PeerData(*(torch.from_numpy(np.array(arrays[k])).to(device)
                                 for k in ('images', 'labels', 'mean', 'std')))
    data = dataclasses.replace(data, labels=data.labels.long())
    step_config = torch_peer.StepConfig(
        learning_rate=config.learning_rate, momentum=config.momentum,
        weight_decay=config.weight_decay, bfloat16=setting.precision == 'bfloat16',
        compile=use_compile)
    model = torch_peer.build_model(setting.model, setting.num_classes).to(device)
    generator = torch.Generator(device).manual_seed(config.seed)
    train_step = torch_peer.make_train_step(model, step_config, data, generator)
    eval_step = torch_peer.make_eval_step(model, step_config, data)
    n = len(data.labels)
    index = torch.arange(setting.batch_size, device=device)
    holder = {'i': 0}

    def train_call():
      holder['i'] += 1
      return train_step((index + holder['i'] * setting.batch_size) % n)

    train = time_calls(train_call, sync, warmup, steps_per_window, windows)
    evaluate = time_calls(lambda: eval_step(index % n), sync, warmup, steps_per_window, windows)
  if cuda:
    peak, source = torch.cuda.max_memory_allocated(), 'torch.cuda.max_memory_allocated'
  else:
    peak, source = host.peak_bytes, host.source
  warmup_overhead = max(0.0, train.warmup_s - warmup * train.median_s)
  return Bench(
      train_images_per_s=setting.batch_size / train.median_s,
      eval_images_per_s=setting.batch_size / evaluate.median_s,
      train_step_ms=1e3 * train.median_s, eval_step_ms=1e3 * evaluate.median_s,
      train_windows_ms=[1e3 * t for t in train.windows_s],
      compile_s=warmup_overhead, compile_source='train warm-up minus steady-state time',
      peak_memory_bytes=peak, memory_source=source,
      extra={'torch_compile': use_compile, 'channels_last': True, 'device': device.type,
             'threads': torch.get_num_threads(), 'warmup_s': train.warmup_s})


# --- settings, report ----------------------------------------------------------------


def _positive_ints(name: str, values: Sequence[str]) -> list[int]:
  if not all(str(v).isdigit() and int(v) > 0 for v in values):
    raise ValueError(f'--{name}={",".join(values)}: use positive integers, e.g. 128,1024')
  return [int(v) for v in values]


def settings_from(model_names: Sequence[str], batch_sizes: Sequence[str],
                  precisions: Sequence[str],
                  steps_per_call: Sequence[str] = ('1',)) -> list[Setting]:
  """Every (model, batch, precision, steps per call); one-line ValueError on a bad name or size."""
  for name in model_names:
    models.parse_name(name)
  if not precisions or any(p not in PRECISIONS for p in precisions):
    raise ValueError(f'--precisions={",".join(precisions)}: use float32 and/or bfloat16')
  batches = _positive_ints('batch_sizes', batch_sizes)
  fused = _positive_ints('steps_per_call', steps_per_call) or [1]
  devices = jax.device_count()
  out = []
  for name in model_names:
    imagenet = models.input_size(name) > 32
    default = (IMAGENET_BATCH_PER_DEVICE * devices,) if imagenet else CIFAR_BATCH_SIZES
    for batch in batches or default:
      parallel.check_divisible('batch size', batch)
      out.extend(Setting(name, batch, p, k) for p in precisions for k in fused)
  return out


def parse_settings(items: Sequence[str]) -> list[Setting]:
  """--settings rows (MODEL:BATCH:PRECISION:STEPS_PER_CALL) in their order; one-line ValueError."""
  out = []
  for item in items:
    parts = item.split(':')
    if len(parts) != 4:
      raise ValueError(f'--settings={item}: write MODEL:BATCH:PRECISION:STEPS_PER_CALL, e.g. '
                       'resnet56:128:bfloat16:1')
    name, batch, precision, fused = parts
    out.extend(settings_from([name], [batch], [precision], [fused]))
  return out


def check_peer_models(model_names: Sequence[str]) -> None:
  from benchmarks import torch_peer
  for name in model_names:
    try:
      torch_peer.peer_stages(name)
    except ValueError as error:
      raise ValueError(f'{error}, or --framework=jax') from None


def _torch_cuda() -> str:
  if not torch_available():
    return ''
  import torch
  return torch.version.cuda or ''


def _cpu_model() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      return next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
  except (OSError, StopIteration):
    return platform.processor()


def _gpu_driver() -> str:
  try:
    out = subprocess.run(
        ['nvidia-smi', '--query-gpu=name,driver_version', '--format=csv,noheader'],
        capture_output=True, text=True, timeout=30, check=True)
  except (OSError, subprocess.SubprocessError):
    return ''
  return out.stdout.strip()


def environment(peer: bool, compile_mode: str) -> dict[str, Any]:
  device = jax.devices()[0]
  return {
      'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
      'command': ' '.join([Path(sys.executable).name, *sys.argv]),
      'backend': jax.default_backend(), 'device_kind': device.device_kind,
      'device_count': jax.device_count(), 'cpu': _cpu_model(), 'cpu_count': os.cpu_count(),
      'device_memory_bytes': (device.memory_stats() or {}).get('bytes_limit'),
      'gpu_driver': _gpu_driver(), 'xla_flags': os.environ.get('XLA_FLAGS', ''),
      'versions': provenance.versions(), 'torch_cuda': _torch_cuda(), 'peer': peer,
      'torch_compile': compile_mode,
  }


def ratio(ours: Bench | None, peer: Bench | None, field: str) -> float | None:
  if ours is None or peer is None:
    return None
  return getattr(ours, field) / getattr(peer, field)


def row_for(setting: Setting, ours: Bench | None, peer: Bench | None) -> dict[str, Any]:
  return {
      'model': setting.model, 'image_size': setting.image_size, 'batch_size': setting.batch_size,
      'precision': setting.precision, 'steps_per_call': setting.steps_per_call,
      'ours': None if ours is None else dataclasses.asdict(ours),
      'peer': None if peer is None else dataclasses.asdict(peer),
      'train_ratio': ratio(ours, peer, 'train_images_per_s'),
      'eval_ratio': ratio(ours, peer, 'eval_images_per_s'),
  }


TABLE_COLUMNS = ('model', 'image', 'batch', 'precision', 'steps/call', 'ours train img/s',
                 'peer train img/s', 'train ours/peer', 'ours eval img/s', 'peer eval img/s',
                 'eval ours/peer',
                 'ours step ms', 'peer step ms', 'ours compile s', 'peer compile s',
                 'ours peak MiB', 'peer peak MiB')


def fmt(value: float | None, digits: int = 0) -> str:
  """A table cell: the number with thousands separators, '-' for none."""
  return '-' if value is None else f'{value:,.{digits}f}'


def report_header(title: str, env: dict[str, Any], device_extra: str = '') -> str:
  """The heading, command, device and versions lines that every benchmark report starts with."""
  versions = ', '.join(f'{k} {v}' for k, v in env['versions'].items() if v)
  return (f'# {title} ({env["date"]})\n\n'
          f'- command: `{env["command"]}`\n'
          f'- device: {env["backend"]} / {env["device_kind"]} x{env["device_count"]}; '
          f'CPU {env["cpu"]} ({env["cpu_count"]} cores){device_extra}\n'
          f'- versions: {versions}\n')


def _mib(bench: dict[str, Any]) -> float | None:
  peak = bench.get('peak_memory_bytes')
  return None if peak is None else peak / MIB


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
  """One row per setting; ratios are ours / peer (higher is better for us)."""
  lines = ['| ' + ' | '.join(TABLE_COLUMNS) + ' |', '|' + '---|' * len(TABLE_COLUMNS)]
  for row in rows:
    ours, peer = row['ours'] or {}, row['peer'] or {}
    cells = [row['model'], f'{row["image_size"]}x{row["image_size"]}', str(row['batch_size']),
             row['precision'], str(row['steps_per_call']), fmt(ours.get('train_images_per_s')),
             fmt(peer.get('train_images_per_s')), fmt(row['train_ratio'], 2),
             fmt(ours.get('eval_images_per_s')), fmt(peer.get('eval_images_per_s')),
             fmt(row['eval_ratio'], 2), fmt(ours.get('train_step_ms'), 1),
             fmt(peer.get('train_step_ms'), 1), fmt(ours.get('compile_s'), 1),
             fmt(peer.get('compile_s'), 1), fmt(_mib(ours)), fmt(_mib(peer))]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


def markdown_report(report: dict[str, Any]) -> str:
  env = report['environment']
  sources = {b['memory_source'] for r in report['rows'] for b in (r['ours'], r['peer']) if b}
  return (report_header('Throughput', env, f'; GPU driver: {env["gpu_driver"] or "none"}')
          + f'- XLA_FLAGS: `{env["xla_flags"]}`; peer torch.compile: {env["torch_compile"]}\n'
          f'- memory: {"; ".join(sorted(sources))}\n\n'
          + markdown_table(report['rows']))


def run(settings: Sequence[Setting], framework: str, warmup: int, steps_per_window: int,
        windows: int, compile_mode: str, output: Path) -> dict[str, Any]:
  """Benchmarks every setting, rewriting the JSON and Markdown after each one (partial results).

  The peer runs once per (model, batch, precision) and shares its numbers across steps_per_call.
  """
  peer = framework != 'jax' and torch_available()
  output.parent.mkdir(parents=True, exist_ok=True)
  report = {'environment': environment(peer, compile_mode), 'rows': []}
  peers: dict[tuple, Bench] = {}
  for setting in settings:
    ours = None if framework == 'torch' else bench_ours(setting, warmup, steps_per_window, windows)
    key = (setting.model, setting.batch_size, setting.precision)
    if peer and key not in peers:
      peers[key] = bench_peer(setting, warmup, steps_per_window, windows, compile_mode)
    report['rows'].append(row_for(setting, ours, peers.get(key)))
    print(markdown_table(report['rows'][-1:]).splitlines()[-1], flush=True)
    atomic_write_text(output, json.dumps(report, indent=1) + '\n')
    atomic_write_text(output.with_suffix('.md'), markdown_report(report))
  return report


def validate() -> list[Setting]:
  """Every flag check before any work: one-line ValueError naming the flag and the fix."""
  for name, value, least in (('steps', FLAGS.steps, 1), ('windows', FLAGS.windows, 1),
                             ('warmup', FLAGS.warmup, 0)):
    if value < least:
      raise ValueError(f'--{name}={value} must be >= {least}')
  if not FLAGS.output.endswith('.json'):
    raise ValueError(f'--output={FLAGS.output} must end in .json (the table goes beside it)')
  if FLAGS.framework == 'torch' and not torch_available():
    raise ValueError('--framework=torch but torch does not import; install torch or use '
                     '--framework=jax')
  if FLAGS.settings:
    settings = parse_settings(FLAGS.settings)
  else:
    settings = settings_from(FLAGS.models, FLAGS.batch_sizes, FLAGS.precisions,
                             FLAGS.steps_per_call)
  if FLAGS.framework != 'jax' and torch_available():
    check_peer_models(list(dict.fromkeys(s.model for s in settings)))
  return settings


def main(argv: Sequence[str]) -> None:
  del argv
  try:
    settings = validate()
  except ValueError as error:
    sys.exit(f'error: {error}')
  run(settings, FLAGS.framework, FLAGS.warmup, FLAGS.steps, FLAGS.windows, FLAGS.torch_compile,
      Path(FLAGS.output))


if __name__ == '__main__':
  app.run(main)
