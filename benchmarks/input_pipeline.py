"""Input throughput of the streaming pipeline (resnet_jax/data/streaming.py) on this host.

    python -m benchmarks.input_pipeline [--num_images=2048] [--sizes=500x375,375x500,...]
        [--batch_size=64] [--steps=24] [--output=/tmp/input_pipeline.json]

Writes JPEGs of ImageNet-like sizes and content into --images_dir (under /tmp; never commit
them) as an image_folder_stream source, then times batches of 224 x 224 training crops
(augmentation 'paper' and 'inception') and evaluation crops. Reports images per second, per
core (wall throughput / cores this process may use) and per CPU-second (images / CPU time of
the process, which stays fair when other work shares the cores), and how many such cores
feed an accelerator consuming --target_images_per_sec (resnet50 on one H100: about 3,000).
Writes JSON to --output and a Markdown table to the same path with .md.
"""

import json
import os
import time
from collections.abc import Iterator

import numpy as np
from absl import app, flags
from PIL import Image

from configs import imagenet
from resnet_jax import config as config_lib
from resnet_jax.data import streaming
from resnet_jax.files import atomic_write_text

_IMAGES_DIR = flags.DEFINE_string('images_dir', '/tmp/resnet_jax_input_pipeline_jpegs',
                                  'Folder for the generated JPEGs (one sub-folder per setting, '
                                  'reused once complete).')
_NUM_IMAGES = flags.DEFINE_integer('num_images', 2048, 'JPEGs to generate (one epoch).')
_SIZES = flags.DEFINE_list('sizes', ['500x375', '375x500', '500x333', '500x400', '333x500'],
                           'Image sizes WIDTHxHEIGHT, used in turn (ImageNet is ~400x350 mean).')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 64, 'Batch size.')
_STEPS = flags.DEFINE_integer('steps', 24, 'Timed training batches (within the first epoch).')
_WARMUP = flags.DEFINE_integer('warmup_steps', 3, 'Training batches before timing starts.')
_TARGET = flags.DEFINE_integer('target_images_per_sec', 3000,
                               'Images/s the accelerator consumes (resnet50, one H100).')
_OUTPUT = flags.DEFINE_string('output', '/tmp/input_pipeline.json', 'JSON output path.')

NUM_CLASSES = 10
JPEG_QUALITY = 90
PIPELINES = (('train, paper scale augmentation', 'paper'),
             ('train, inception crop', 'inception'),
             ('eval, centre crop (one pass)', None))


def natural_image(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
  """Smooth colour fields with fine noise: JPEG sizes like photographs (~50-150 kB)."""
  coarse = Image.fromarray(rng.integers(0, 256, (height // 24, width // 24, 3), dtype=np.uint8))
  image = np.asarray(coarse.resize((width, height), Image.BICUBIC), np.float32)
  image += rng.normal(0, 12, image.shape)
  return np.clip(image, 0, 255).astype(np.uint8)


def write_images(root: str, num_images: int, sizes: list[tuple[int, int]]) -> None:
  """root/train/<class>/*.jpg; root/val is the same folder (a link), so evaluation passes are
  as long as an epoch."""
  rng = np.random.default_rng(0)
  for i in range(num_images):
    folder = os.path.join(root, 'train', f'class{i % NUM_CLASSES:02d}')
    os.makedirs(folder, exist_ok=True)
    width, height = sizes[i % len(sizes)]
    Image.fromarray(natural_image(rng, width, height)).save(
        os.path.join(folder, f'{i:06d}.jpg'), quality=JPEG_QUALITY)
  if not os.path.islink(os.path.join(root, 'val')):
    os.symlink('train', os.path.join(root, 'val'))
  with open(os.path.join(root, 'complete'), 'w') as marker:
    marker.write('done')


def throughput(batches: Iterator, num_batches: int, batch_size: int) -> dict:
  """Wall and process CPU time of the next `num_batches` batches."""
  wall, cpu = time.perf_counter(), time.process_time()
  for _ in range(num_batches):
    next(batches)
  wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
  images = num_batches * batch_size
  cores = len(os.sched_getaffinity(0))
  return {'images': images, 'seconds': wall, 'cpu_seconds': cpu, 'cores': cores,
          'images_per_sec': images / wall, 'images_per_sec_per_core': images / wall / cores,
          'images_per_cpu_second': images / cpu}


def measure(root: str) -> list[dict]:
  """Training (after warm-up batches) for each augmentation, then one whole evaluation pass."""
  rows = []
  for name, augmentation in PIPELINES:
    config = imagenet.get_config('resnet50')
    config.update(dataset='image_folder_stream', data_dir=root, batch_size=_BATCH_SIZE.value,
                  eval_batch_size=_BATCH_SIZE.value, augmentation=augmentation or 'paper')
    run = config_lib.Run.of(config)
    data = streaming.load_streaming(run.data, run.pipeline, run.loop.seed, process_index=0,
                                    process_count=1)
    if augmentation:
      batches = data.train_iter(0)
      for _ in range(_WARMUP.value):
        next(batches)
      row = throughput(batches, _STEPS.value, _BATCH_SIZE.value)
    else:
      row = throughput(data.eval_iter('test'), data.num_eval_batches['test'], _BATCH_SIZE.value)
    row['cores_per_accelerator'] = _TARGET.value / row['images_per_cpu_second']
    rows.append({'pipeline': name, **row})
  return rows


def parse_sizes(values: list[str]) -> list[tuple[int, int]]:
  """WIDTHxHEIGHT strings as (width, height); one-line UsageError otherwise."""
  parts = [value.split('x') for value in values]
  if not parts or not all(len(p) == 2 and all(v.isdigit() and int(v) >= 24 for v in p)
                          for p in parts):
    raise app.UsageError(f'--sizes={",".join(values)}: give WIDTHxHEIGHT values, each side '
                         'at least 24, e.g. 500x375')
  return [(int(width), int(height)) for width, height in parts]


def markdown(rows: list[dict], settings: dict) -> str:
  target = settings['target_images_per_sec']
  lines = [
      f'| pipeline | images/s ({rows[0]["cores"]} cores) | images/s per core '
      f'| images per CPU-second | cores to feed {target} images/s |',
      '| --- | ---: | ---: | ---: | ---: |']
  for row in rows:
    lines.append(f'| {row["pipeline"]} | {row["images_per_sec"]:.0f} | '
                 f'{row["images_per_sec_per_core"]:.0f} | {row["images_per_cpu_second"]:.0f} | '
                 f'{row["cores_per_accelerator"]:.1f} |')
  lines.append(f'\n{settings["num_images"]} JPEGs of {", ".join(settings["sizes"])} (quality '
               f'{settings["jpeg_quality"]}), batch {settings["batch_size"]}, 224 x 224 crops; '
               f'cores to feed = {target} / images per CPU-second.')
  return '\n'.join(lines) + '\n'


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  sizes = parse_sizes(_SIZES.value)
  root = os.path.join(_IMAGES_DIR.value, f'{_NUM_IMAGES.value}_{"_".join(_SIZES.value)}')
  if not os.path.exists(os.path.join(root, 'complete')):
    write_images(root, _NUM_IMAGES.value, sizes)
  rows = measure(root)
  settings = {'num_images': _NUM_IMAGES.value, 'sizes': _SIZES.value,
              'batch_size': _BATCH_SIZE.value, 'steps': _STEPS.value,
              'target_images_per_sec': _TARGET.value, 'jpeg_quality': JPEG_QUALITY}
  os.makedirs(os.path.dirname(os.path.abspath(_OUTPUT.value)), exist_ok=True)
  atomic_write_text(_OUTPUT.value, json.dumps({'settings': settings, 'rows': rows}, indent=2))
  table = markdown(rows, settings)
  atomic_write_text(os.path.splitext(_OUTPUT.value)[0] + '.md', table)
  print(table)


if __name__ == '__main__':
  app.run(main)
