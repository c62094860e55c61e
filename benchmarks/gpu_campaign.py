"""Every accelerator figure in one rehearsed command: throughput, the paper-recipe curves, figures.

    bash benchmarks/gpu_campaign.sh OUT [--budget_s=570] [--parts=throughput,study,figures]

Run it from the repo root of a copy of the working tree on the GPU machine. First, here, where the
package registry is reachable, `python -m benchmarks.gpu_campaign --prepare` fills the ignored
folder gpu_carry/ with what must travel with the tree (name it in the device tool's `carry`):
gpu_carry/wheels/ (WHEELS, the packages the GPU image lacks) and gpu_carry/cifar10-jpeg.tar.gz.
The campaign checks both before any work, installs the wheels into gpu_carry/site, extracts the
data into gpu_carry/data and runs three parts, each under its own cap:

  throughput  benchmarks/throughput.py, ours against the PyTorch peer, the rows of
              Sizes.throughput in order of importance; a capped part keeps the rows it finished.
  study       experiments/degradation.py: the paper's recipe for plain-20/56 and ResNet-20/56 at
              the longest preset of Sizes.ladder whose estimate from the throughput rows fits what
              is left (choose_study), all runs at once on an accelerator, with the fastest
              measured steps per call. The runs resume: the same command with
              --parts=study,figures continues them.
  figures     the study's figures and table, copied without checkpoints to
              OUT/degradation/<preset>_<device>/ (the layout of experiments/results/degradation/).

Everything comes back under OUT: gpu.json and gpu.md (the throughput rows), degradation/,
logs/<part>.log, and campaign.json (per invocation: command, date, device, versions, commit,
each part's cap, wall time and status: done, capped or failed, and the study's decisions). Bad
input is one line and exit 2 before anything is written; a failed part ends it with exit 1.
RESNET_JAX_CAMPAIGN_REHEARSAL=1 shrinks every size (a tiny model, a few steps) for the CPU
rehearsal of tests/benchmarks/test_gpu_campaign.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Sequence
from pathlib import Path

from resnet_jax import provenance
from resnet_jax.errors import ConfigError
from resnet_jax.files import atomic_write_text

REPO_ROOT = Path(__file__).resolve().parents[1]
CARRY = REPO_ROOT / 'gpu_carry'  # the default --carry
WHEELS = ('ml-collections', 'absl-py', 'tensorboardX')  # what the GPU image lacks, pure Python
TARBALL = 'cifar10-jpeg.tar.gz'
SHARED_TARBALL = REPO_ROOT.parent / 'shared' / 'data' / TARBALL
REHEARSAL_ENV = 'RESNET_JAX_CAMPAIGN_REHEARSAL'
PARTS = ('throughput', 'study', 'figures')
STOP_GRACE_S = 30  # SIGTERM this long before a cap, SIGKILL at it: the runs checkpoint meanwhile
RUN_START_S = 40  # a run's process start, data decoding and first compile, beyond (a)'s compile
EVAL_OVERHEAD = 1.15  # evaluations, logging and checkpoints on top of the train steps
MEMORY_FRACTION = 0.9  # of the accelerator, shared by the parallel runs (runner.child_env)


@dataclasses.dataclass(frozen=True)
class Sizes:
  """Everything the rehearsal shrinks."""

  throughput: tuple[str, ...]  # throughput.py --settings rows, the most important first
  timing: tuple[str, ...]  # throughput.py's --steps, --windows, --warmup
  ladder: tuple[str, ...]  # runner presets, longest first
  models: tuple[str, ...]  # the study's networks
  study_flags: tuple[str, ...] = ()  # given to every run
  study_env: tuple[tuple[str, str], ...] = ()
  budget_s: int = 570  # the device tool's 600 s a command, less a margin
  throughput_cap_s: int = 180
  figures_cap_s: int = 60


STUDY_FUSED = 20  # divides every interval of the 'paper' and 'short' presets (100, 500, 1000)


def _rows(*specs: str) -> tuple[str, ...]:
  """MODEL:BATCH:PRECISION rows at one step per call and STUDY_FUSED steps per call."""
  return tuple(f'{spec}:{k}' for spec in specs for k in (1, STUDY_FUSED))


FULL = Sizes(
    # The targets first (resnet56 and resnet50_v1_5 in bf16), then the study's float32 steps.
    throughput=(*_rows('resnet56:128:bfloat16'), 'resnet50_v1_5:256:bfloat16:1',
                *_rows('resnet56:128:float32', 'resnet20:128:float32', 'resnet20:128:bfloat16',
                       'resnet110:128:bfloat16', 'resnet110:128:float32')),
    timing=('--steps=10', '--windows=5', '--warmup=3'),
    ladder=('paper', 'short'),
    models=('plain20', 'plain56', 'resnet20', 'resnet56'))
REHEARSAL = Sizes(
    throughput=('resnet8:8:float32:1', 'resnet8:8:float32:2'),
    timing=('--steps=2', '--windows=1', '--warmup=1'),
    ladder=('quick',),
    models=('plain8', 'resnet8'),
    study_flags=('--config.batch_size=8', '--config.train_subset=0', '--config.test_subset=0',
                 '--config.eval_batch_size=8'),
    study_env=(('RESNET_JAX_QUICK_STEPS', '8'),),
    budget_s=400, throughput_cap_s=150, figures_cap_s=90)


def sizes() -> Sizes:
  return REHEARSAL if os.environ.get(REHEARSAL_ENV) == '1' else FULL


# --- the study's decisions ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Decision:
  preset: str
  steps: int
  steps_per_call: int
  parallel: int
  estimate_s: float | None  # None: no throughput row to estimate from
  fits: bool
  reason: str


def _proxy(model: str) -> str:
  """The network whose measured step stands for `model`'s: a plain net costs its ResNet's."""
  return model.replace('plain', 'resnet', 1)


def step_seconds(rows: Sequence[dict], model: str, steps_per_call: int) -> float | None:
  """The measured float32 train step of `model` (or its proxy) at that many steps per call."""
  times = [row['ours']['train_step_ms'] / 1e3 for row in rows
           if row.get('ours') and row['model'] == _proxy(model) and row['precision'] == 'float32'
           and row['steps_per_call'] == steps_per_call]
  return min(times, default=None)


def choose_study(rows: Sequence[dict], presets: dict[str, dict], models: Sequence[str],
                 device: dict, cores: int, time_s: float) -> Decision:
  """The longest preset whose estimated wall time fits `time_s`, from the throughput rows.

  `presets` maps each preset of the ladder, longest first, to its 'steps' and 'interval' (the
  greatest common divisor of its log, eval and checkpoint intervals, which steps per call must
  divide). The estimate counts every run's steps one after another (no credit for runs that
  overlap on the device), times EVAL_OVERHEAD, plus the slowest compile and RUN_START_S. All runs
  train at once on an accelerator, where memory allows; on the CPU, one per core.
  """
  peaks = [row['ours']['peak_memory_bytes'] or 0 for row in rows if row.get('ours')]
  if device.get('backend') == 'cpu':
    parallel = min(len(models), cores)
  elif device.get('memory_bytes') and max(peaks, default=0):
    parallel = min(len(models), max(1, int(MEMORY_FRACTION * device['memory_bytes'] / max(peaks))))
  else:
    parallel = len(models)
  compile_s = max((row['ours']['compile_s'] for row in rows if row.get('ours')), default=0.0)
  last = None
  for preset, spec in presets.items():
    fused = sorted({row['steps_per_call'] for row in rows} | {1})
    options = []
    for k in fused:
      per_step = [step_seconds(rows, model, k) for model in models]
      if spec['interval'] % k == 0 and None not in per_step:
        options.append((sum(per_step) * spec['steps'], k))
    if not options:
      last = Decision(preset, spec['steps'], 1, parallel, None, False,
                      'no float32 throughput row for every network: no estimate')
      continue
    train_s, k = min(options)
    estimate = train_s * EVAL_OVERHEAD + compile_s + RUN_START_S
    last = Decision(preset, spec['steps'], k, parallel, round(estimate, 1), estimate <= time_s,
                    f'estimate {estimate:.0f} s for {time_s:.0f} s left')
    if last.fits:
      return last
  return dataclasses.replace(last, reason=last.reason + '; the shortest preset runs anyway and '
                             'resumes with --parts=study,figures')


# --- running a part under its cap -------------------------------------------------------


def run_part(name: str, command: Sequence[str], cap_s: float, env: dict[str, str],
             out: Path) -> dict:
  """Runs `command` in its own session, logging to OUT/logs/<name>.log; SIGTERM STOP_GRACE_S
  (at most half the cap) before `cap_s`, SIGKILL at it."""
  log = out / 'logs' / f'{name}.log'
  grace = min(STOP_GRACE_S, cap_s / 2)
  start = time.monotonic()
  status = 'done'
  with open(log, 'a') as file:
    file.write(f'$ {shlex.join(command)}\n')
    file.flush()
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=file,
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
      process.wait(timeout=max(0.0, cap_s - grace))
    except subprocess.TimeoutExpired:
      status = 'capped'
      os.killpg(process.pid, signal.SIGTERM)
      try:
        process.wait(timeout=grace)
      except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
  if status == 'done' and process.returncode:
    status = 'failed'
  return {'part': name, 'cap_s': round(cap_s, 1), 'wall_s': round(time.monotonic() - start, 1),
          'status': status, 'returncode': process.returncode, 'command': shlex.join(command),
          'log': str(log.relative_to(out))}


# --- set-up -----------------------------------------------------------------------------


def wheel_files(wheels: Path) -> list[Path]:
  """One wheel per package of WHEELS; ConfigError naming the first missing one and the fix."""
  if not wheels.is_dir():
    raise ConfigError(f'{wheels} is not a folder of wheels: run `python -m '
                      'benchmarks.gpu_campaign --prepare` where the package registry is '
                      'reachable')
  found = []
  for package in WHEELS:
    prefix = package.replace('-', '_').lower() + '-'
    matches = sorted(p for p in wheels.glob('*.whl') if p.name.lower().startswith(prefix))
    if not matches:
      raise ConfigError(f'no wheel of {package} in {wheels}: run `python -m '
                          'benchmarks.gpu_campaign --prepare` where the package registry is '
                          'reachable')
    found.append(matches[-1])
  return found


def check_tarball(tarball: Path) -> None:
  if not tarball.is_file() or not tarfile.is_tarfile(tarball):
    raise ConfigError(f'{tarball} is not the CIFAR-10 tarball: copy {SHARED_TARBALL} there '
                        '(python -m benchmarks.gpu_campaign --prepare does)')


def install(wheels: Sequence[Path], site: Path) -> None:
  subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-index', '--no-deps',
                  '--upgrade', '--target', str(site), *map(str, wheels)], check=True)


def extract(tarball: Path, data: Path) -> Path:
  """The tarball's train/ and test/ under `data`, extracted once per tarball (size and mtime)."""
  stamp = f'{tarball.stat().st_size} {tarball.stat().st_mtime_ns}'
  marker = data / '.extracted'
  if not (marker.exists() and marker.read_text() == stamp):
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    with tarfile.open(tarball) as archive:
      archive.extractall(data, filter='data')
    marker.write_text(stamp)
  return data


def download_wheels(wheels: Path) -> None:
  """WHEELS at the versions installed here, from the package registry."""
  import importlib.metadata  # pylint: disable=import-outside-toplevel
  pins = [f'{p}=={importlib.metadata.version(p)}' for p in WHEELS]
  subprocess.run([sys.executable, '-m', 'pip', 'download', '-q', '--no-deps', '-d', str(wheels),
                  *pins], check=True)


def prepare(carry: Path) -> None:
  """Fills `carry` here: the wheels and the CIFAR-10 tarball."""
  download_wheels(carry / 'wheels')
  shutil.copyfile(SHARED_TARBALL, carry / TARBALL)


# --- the campaign -----------------------------------------------------------------------


def device_slug(device: dict) -> str:
  """'cpu', or the accelerator's model in lower case: 'NVIDIA H200' -> 'h200', 'TPU v5 lite' ->
  'tpuv5'."""
  if device.get('backend') == 'cpu':
    return 'cpu'
  words = device.get('kind', 'device').lower().split()
  words = words[1:] if words[0] == 'nvidia' and len(words) > 1 else words
  return ''.join(c for c in ''.join(words[:2] if words[0] == 'tpu' else words[:1]) if c.isalnum())


def preset_specs(ladder: Sequence[str], env: dict[str, str]) -> dict[str, dict]:
  """Each preset's steps and the interval its steps per call must divide, asked of the runner
  (in a child process, which sees the installed wheels)."""
  probe = f'''import json, math
from resnet_jax.study import runner, studies
out = {{}}
for preset in {list(ladder)!r}:
  config = runner.resolve_config(studies.DEGRADATION, 'resnet20', [])
  config.update(runner.preset_overrides(studies.DEGRADATION, preset, 'resnet20'))
  out[preset] = {{'steps': config.num_train_steps, 'interval': math.gcd(config.log_every_steps,
      config.eval_every_steps, config.checkpoint_every_steps)}}
print(json.dumps(out))'''
  result = subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True, env=env,
                          cwd=REPO_ROOT)
  if result.returncode:
    raise RuntimeError(f'the presets could not be read: {result.stderr.strip()[-500:]}')
  return json.loads(result.stdout.splitlines()[-1])


def export_study(workdir: Path, dest: Path) -> None:
  """The study's figures, tables, run_info.json and each run's metrics, config and log, without
  checkpoints, in the layout of experiments/results/degradation/<name>/, replaced whole."""
  tmp = dest.with_name(f'.{dest.name}.tmp')
  shutil.rmtree(tmp, ignore_errors=True)
  tmp.mkdir(parents=True)
  for item in ('figures', 'results.md', 'results.csv', 'run_info.json'):
    source = workdir / item
    if source.is_dir():
      shutil.copytree(source, tmp / item)
    elif source.exists():
      shutil.copy2(source, tmp / item)
  for metrics in sorted(workdir.glob('*/seed*/metrics.jsonl')):
    run = metrics.parent
    target = tmp / 'runs' / run.relative_to(workdir)
    target.mkdir(parents=True)
    for name in ('metrics.jsonl', 'config.json'):
      if (run / name).exists():
        shutil.copy2(run / name, target / name)
    if run.with_suffix('.log').exists():
      shutil.copy2(run.with_suffix('.log'), target / 'train.log')
  shutil.rmtree(dest, ignore_errors=True)
  os.replace(tmp, dest)


class Campaign:
  """The parts in order, each under its cap, with campaign.json rewritten after each."""

  def __init__(self, out: Path, carry: Path, args: argparse.Namespace, argv: Sequence[str]):
    self.out, self.carry, self.args, self.sizes = out, carry, args, sizes()
    self.parts = args.parts.split(',')
    path = out / 'campaign.json'
    self.earlier = json.loads(path.read_text())['invocations'] if path.exists() else []
    budget_s = args.budget_s or self.sizes.budget_s
    self.deadline = time.monotonic() + budget_s
    self.record = {
        'command': shlex.join(['bash', 'benchmarks/gpu_campaign.sh', *argv]),
        'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'rehearsal': self.sizes is REHEARSAL, 'budget_s': budget_s, 'sizes':
        dataclasses.asdict(self.sizes), 'git': provenance.git_commit(), 'parts': []}
    site = carry / 'site'
    self.env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(site), str(REPO_ROOT), *filter(None, [os.environ.get('PYTHONPATH')])]),
                    **dict(self.sizes.study_env))

  def left(self) -> float:
    return self.deadline - time.monotonic()

  def save(self) -> None:
    """campaign.json: every invocation's record, this one last."""
    info = {'invocations': [*self.earlier, self.record]}
    atomic_write_text(self.out / 'campaign.json', json.dumps(info, indent=2) + '\n')

  def part(self, name: str, command: Sequence[str], cap_s: float) -> dict:
    result = run_part(name, command, cap_s, self.env, self.out)
    self.record['parts'].append(result)
    self.save()
    print(f'{name}: {result["status"]} in {result["wall_s"]} s (cap {result["cap_s"]} s)',
          flush=True)
    return result

  def decide(self, rows: list[dict], device: dict, study_s: float) -> Decision:
    """choose_study's decision, or the last invocation's when this one measures nothing new, so
    that a continuation resumes the runs it started."""
    earlier = [record['study'] for record in self.earlier if 'study' in record]
    if earlier and 'throughput' not in self.parts:
      return Decision(**earlier[-1])
    presets = preset_specs(self.sizes.ladder, self.env)
    return choose_study(rows, presets, self.sizes.models, device, os.cpu_count() or 1, study_s)

  def run(self, data: Path) -> list[str]:
    """Runs the parts; returns the names of those that failed."""
    device = provenance.device_info(self.env)
    self.record.update(device=device, versions=provenance.versions())
    self.save()
    if 'throughput' in self.parts:
      self.part('throughput', [sys.executable, 'benchmarks/throughput.py',
                               f'--settings={",".join(self.sizes.throughput)}',
                               *self.sizes.timing, f'--output={self.out / "gpu.json"}'],
                min(self.args.throughput_cap_s or self.sizes.throughput_cap_s, self.left()))
    report = self.out / 'gpu.json'
    rows = json.loads(report.read_text())['rows'] if report.exists() else []
    figures_s = self.args.figures_cap_s or self.sizes.figures_cap_s
    study_s = self.args.study_cap_s or self.left() - (figures_s if 'figures' in self.parts else 0)
    decision = self.decide(rows, device, study_s)
    self.record['study'] = dataclasses.asdict(decision)
    self.save()
    workdir = self.carry / 'study' / decision.preset
    base = [sys.executable, 'experiments/degradation.py', f'--workdir={workdir}',
            f'--preset={decision.preset}', f'--models={",".join(self.sizes.models)}']
    if 'study' in self.parts:
      self.part('study', [*base, f'--parallel={decision.parallel}', '--dataset=image_folder',
                          f'--data_dir={data}',
                          f'--config.steps_per_call={decision.steps_per_call}',
                          *self.sizes.study_flags], study_s)
    if 'figures' in self.parts:
      result = self.part('figures', [*base, '--plot-only'], min(figures_s, max(1.0, self.left())))
      if result['status'] == 'done':
        export_study(workdir, self.out / 'degradation' / f'{decision.preset}_{device_slug(device)}')
    return [part['part'] for part in self.record['parts'] if part['status'] == 'failed']


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='benchmarks/gpu_campaign.sh',
                                   description=__doc__.splitlines()[0])
  parser.add_argument('out', nargs='?', type=Path, help='output folder (OUT)')
  parser.add_argument('--parts', default=','.join(PARTS), help=f'comma list of {PARTS}')
  parser.add_argument('--carry', type=Path, default=CARRY, help='the folder that traveled: '
                      'wheels/ and the tarball in; site/, data/ and study/ made there')
  parser.add_argument('--budget_s', type=float, help='seconds for all parts (default: Sizes)')
  for part in PARTS:
    parser.add_argument(f'--{part}_cap_s', type=float,
                        help=f'seconds for the {part} part (default: Sizes; study: what is left)')
  parser.add_argument('--prepare', action='store_true',
                      help='fill gpu_carry/ here (wheels and data) instead of running')
  return parser


def check(args: argparse.Namespace) -> tuple[list[Path], Path]:
  """Every check before any work: the wheels, the tarball, the output folder and the parts."""
  if args.out is None:
    raise ConfigError('give the output folder: bash benchmarks/gpu_campaign.sh OUT')
  if args.out.exists() and not args.out.is_dir():
    raise ConfigError(f'{args.out} is a file: give a folder for the results')
  parts = args.parts.split(',')
  unknown = [part for part in parts if part not in PARTS]
  if unknown or not parts:
    raise ConfigError(f'--parts={args.parts}: use a comma list of {", ".join(PARTS)}')
  for name in ('budget_s', *(f'{part}_cap_s' for part in PARTS)):
    value = getattr(args, name)
    if value is not None and value <= 0:
      raise ConfigError(f'--{name}={value}: give a positive number of seconds')
  wheels = wheel_files(args.carry / 'wheels')
  check_tarball(args.carry / TARBALL)
  return wheels, args.carry / TARBALL


def main(argv: Sequence[str] | None = None) -> None:
  argv = list(sys.argv[1:] if argv is None else argv)
  args = _parser().parse_args(argv)
  if args.prepare:
    prepare(args.carry)
    return
  try:
    wheels, tarball = check(args)
  except ConfigError as error:
    print(f'gpu_campaign: {error}', file=sys.stderr)
    raise SystemExit(2) from None
  carry = args.carry.resolve()
  install(wheels, carry / 'site')
  data = extract(tarball, carry / 'data')
  out = args.out.resolve()
  (out / 'logs').mkdir(parents=True, exist_ok=True)
  failed = Campaign(out, carry, args, argv).run(data)
  if failed:
    raise SystemExit(f'gpu_campaign: {", ".join(failed)} failed; see {out / "logs"}')


if __name__ == '__main__':
  main()
