"""Ours against the common PyTorch CIFAR ResNet on the paper's recipe, seed by seed.

    python experiments/torch_reference.py --workdir=DIR --data_dir=CIFAR [--seeds=3] [--steps=400]
        [--model=resnet56] [--parallel=2]

Per seed, two runs of the first `steps` iterations of He et al. 2015 sec. 4.2 (batch 128, SGD with
momentum 0.9, the L2 term 1e-4 * w on every parameter before the momentum, lr 0.1, per-pixel mean
subtracted, pad-4 crop and flip) on all 50k training images of an image-folder CIFAR-10:
- ours: `python -m resnet_jax.main --config=configs/cifar10.py:MODEL` (DIR/ours/seedK);
- torch: benchmarks/torch_peer.py's network with the initialisation of the common PyTorch CIFAR
  ResNet (He-normal convolutions and classifier weights, PyTorch's default classifier bias), its
  own data order and augmentation draws, trained by torch_peer.make_update (DIR/torch/seedK);
  with --torch_init=flax its classifier starts as ours, flax's default Dense (truncated LeCun
  normal weights, zero bias) (DIR/torch_flax_head/seedK).
Both log the mean training loss and error of every LOG_EVERY steps to metrics.jsonl. The runs go
through the study runner (resnet_jax.study.runner.run_jobs: resumable, --parallel pinned CPU
slots). DIR/agreement.md and DIR/agreement.csv give, per side and seed, the mean training error
over the last 100 steps and the mean loss of steps 1-10 (the initial spike), and whether the two
sides' means agree: within 5 points or twice the standard error of their difference, whichever
is larger (one comparison per PyTorch variant found). DIR/run_info.json records the command,
commit, device and versions.
"""

import argparse
import csv
import io
import math
import os
import statistics
import sys
import time
from pathlib import Path

from resnet_jax import provenance
from resnet_jax.files import atomic_write_text
from resnet_jax.study import runner
from resnet_jax.study.runs import Run
from resnet_jax.train.metrics import METRICS_FILE, MetricsWriter, read_rows

LOG_EVERY = 10
LAST_STEPS = 100  # the window of the compared training error
SPIKE_STEPS = LOG_EVERY  # the window of the initial loss: the first log row
MIN_TOLERANCE = 5.0  # points of training error
TRUNCATED_NORMAL_STD = 0.87962566103423978  # of a unit normal truncated to [-2, 2]
TORCH_SIDES = {'common': 'torch', 'flax': 'torch_flax_head'}  # --torch_init -> folder


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--workdir', required=True, type=Path)
  parser.add_argument('--data_dir', required=True, help='CIFAR-10 as DIR/{train,test}/<class>/*')
  parser.add_argument('--model', default='resnet56', help='plain<6n+2> or resnet<6n+2>')
  parser.add_argument('--seeds', default=3, type=int)
  parser.add_argument('--steps', default=400, type=int)
  parser.add_argument('--parallel', default=2, type=int)
  parser.add_argument('--torch_init', default='common', choices=sorted(TORCH_SIDES))
  parser.add_argument('--train-torch', type=int, default=None, metavar='SEED',
                      help=argparse.SUPPRESS)  # one PyTorch run, as a job of the runner
  return parser


def train_torch(args: argparse.Namespace, seed: int) -> None:
  """The PyTorch side of one seed: writes DIR/torch/seedK/metrics.jsonl like our loop."""
  import torch  # pylint: disable=import-outside-toplevel

  from benchmarks import torch_peer  # pylint: disable=import-outside-toplevel
  from resnet_jax.data import sources  # pylint: disable=import-outside-toplevel
  from resnet_jax.data.augment import pixel_stats  # pylint: disable=import-outside-toplevel

  torch.set_num_threads(len(os.sched_getaffinity(0)))
  torch.manual_seed(seed)
  generator = torch.Generator().manual_seed(seed)
  train = sources.load_image_folder(args.data_dir).train
  mean, std = pixel_stats(train.images, 'per_pixel_mean')
  data = torch_peer.PeerData(torch.from_numpy(train.images), torch.from_numpy(train.labels).long(),
                             torch.from_numpy(mean), torch.from_numpy(std))
  model = torch_peer.build_model(args.model)
  for module in model.modules():  # the common PyTorch CIFAR ResNet's initialisation
    if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
      torch.nn.init.kaiming_normal_(module.weight)
  if args.torch_init == 'flax':  # flax's Dense default: truncated normal of variance 1/fan_in
    std = (1 / model.linear.in_features) ** 0.5 / TRUNCATED_NORMAL_STD
    torch.nn.init.trunc_normal_(model.linear.weight, std=std, a=-2 * std, b=2 * std)
    torch.nn.init.zeros_(model.linear.bias)
  step = torch_peer.make_train_step(model, torch_peer.StepConfig(), data, generator)
  batches_per_epoch = len(train) // 128
  run_dir = args.workdir / TORCH_SIDES[args.torch_init] / f'seed{seed}'
  run_dir.mkdir(parents=True, exist_ok=True)
  start, losses, wrong = time.monotonic(), [], 0
  with MetricsWriter(str(run_dir)) as writer:
    writer.start({'event': 'start', 'step': 0, 'wall_time': 0.0, 'model': args.model,
                  'framework': f'torch {torch.__version__}', 'batch_size': 128,
                  'num_train_steps': args.steps})
    for index in range(args.steps):
      if index % batches_per_epoch == 0:
        order = torch.randperm(len(train), generator=generator)
      batch = order[index % batches_per_epoch * 128:][:128]
      loss, errors = step(batch)
      losses.append(float(loss))
      wrong += int(errors)
      if (index + 1) % LOG_EVERY == 0:
        writer.write({'step': index + 1, 'wall_time': time.monotonic() - start,
                      'train_loss': statistics.fmean(losses[-LOG_EVERY:]),
                      'train_error': wrong / (LOG_EVERY * 128)})
        wrong = 0
    writer.write({'event': 'end', 'step': args.steps, 'wall_time': time.monotonic() - start})


def jobs(args: argparse.Namespace) -> list[runner.Job]:
  """Our run and the PyTorch run of every seed, ours first (the longer ones)."""
  script = Path(__file__).resolve()
  made = []
  for seed in range(args.seeds):
    ours = args.workdir / 'ours' / f'seed{seed}'
    made.append(runner.Job(args.model, seed, ours, (
        sys.executable, '-m', 'resnet_jax.main', f'--config=configs/cifar10.py:{args.model}',
        f'--workdir={ours}', f'--config.seed={seed}', f'--config.num_train_steps={args.steps}',
        f'--config.log_every_steps={LOG_EVERY}', f'--config.eval_every_steps={args.steps}',
        f'--config.checkpoint_every_steps={args.steps}', '--config.test_subset=1000',
        '--config.eval_batch_size=1000', '--config.dataset=image_folder',
        f'--config.data_dir={args.data_dir}')))
  for seed in range(args.seeds):
    side = TORCH_SIDES[args.torch_init]
    made.append(runner.Job(f'{side}-{args.model}', seed, args.workdir / side / f'seed{seed}', (
        sys.executable, str(script), f'--workdir={args.workdir}', f'--data_dir={args.data_dir}',
        f'--model={args.model}', f'--steps={args.steps}', f'--torch_init={args.torch_init}',
        f'--train-torch={seed}')))
  return made


def summary(runs: list[Run]) -> list[float]:
  """(mean training error % over the last LAST_STEPS steps, mean loss of steps 1-SPIKE_STEPS)."""
  values = []
  for run in runs:
    errors = run.series('train_error')
    last = [100 * errors[step] for step in errors if step > run.last_step - LAST_STEPS]
    values.append((statistics.fmean(last), run.series('train_loss')[SPIKE_STEPS]))
  return values


def agreement(workdir: Path) -> tuple[str, str]:
  """The Markdown and CSV tables of every finished seed of ours and of each PyTorch variant."""
  sides = ['ours', *(side for side in TORCH_SIDES.values() if (workdir / side).is_dir())]
  rows = {}
  for side in sides:
    runs = [Run(side, int(path.parent.name[4:]), read_rows(path))
            for path in (workdir / side).glob(f'seed*/{METRICS_FILE}')]
    rows[side] = summary(sorted((run for run in runs if run.finished), key=lambda r: r.seed))
  table = io.StringIO()
  writer = csv.writer(table, lineterminator='\n')
  writer.writerow(('side', 'seed', 'train_error_last100_pct', 'loss_steps1_10'))
  lines = ['| side | seed | training error %, last 100 steps | mean loss, steps 1-10 |',
           '|---|---:|---:|---:|']
  for side in sides:
    for seed, (error, spike) in enumerate(rows[side]):
      writer.writerow((side, seed, f'{error:.2f}', f'{spike:.4f}'))
      lines.append(f'| {side} | {seed} | {error:.2f} | {spike:.3f} |')
  for side in sides:
    errors = [error for error, _ in rows[side]]
    lines.append(f'| **{side} mean** | {len(errors)} seeds | {statistics.fmean(errors):.2f} ± '
                 f'{statistics.stdev(errors):.2f} | '
                 f'{statistics.fmean(spike for _, spike in rows[side]):.3f} |')
  lines.append('')
  ours = [error for error, _ in rows['ours']]
  for side in sides[1:]:
    theirs = [error for error, _ in rows[side]]
    se = math.sqrt(statistics.variance(ours) / len(ours) +
                   statistics.variance(theirs) / len(theirs))
    difference = statistics.fmean(ours) - statistics.fmean(theirs)
    tolerance = max(MIN_TOLERANCE, 2 * se)
    verdict = 'agree' if abs(difference) <= tolerance else 'DISAGREE'
    lines.append(f'Ours minus {side}: {difference:+.2f} points (standard error of the difference '
                 f'{se:.2f}); tolerance max({MIN_TOLERANCE:g}, 2 x SE) = {tolerance:.2f}: '
                 f'{verdict}.')
  return '\n'.join(lines) + '\n', table.getvalue()


def main(argv: list[str] | None = None) -> None:
  args = _parser().parse_args(argv)
  args.workdir = args.workdir.resolve()
  if args.train_torch is not None:
    train_torch(args, args.train_torch)
    return
  made = jobs(args)
  device = provenance.device_info(runner.child_env(args.parallel))
  args.workdir.mkdir(parents=True, exist_ok=True)
  runner.record_invocation(args.workdir, sys.argv[1:] if argv is None else argv, made, device,
                           script='experiments/torch_reference.py', torch_init=args.torch_init)
  failures = runner.run_jobs(made, args.parallel, runner.cpu_slots(args.parallel,
                                                                   device.get('backend', '')))
  if failures:
    raise SystemExit(f'torch_reference: {len(failures)} runs failed: {"; ".join(failures)}')
  markdown, table = agreement(args.workdir)
  atomic_write_text(args.workdir / 'agreement.md', markdown)
  atomic_write_text(args.workdir / 'agreement.csv', table)
  print(markdown)


if __name__ == '__main__':
  main()
