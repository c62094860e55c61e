"""The streaming pipeline on generated image folders, tfds mock data and a fake ILSVRC download.

Test images carry their own coordinates: red = 2 x column, green = 2 x row, and blue a code
naming the image. From a preprocessed crop the tests read back which image it came from and
where the crop lay in it (a linear fit of red and green), and check that against the recipes.
"""

import io
import json
import os
import pathlib
import re
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from configs import imagenet, imagenet_v1_5
from resnet_jax.config import IMAGENET_MEAN, IMAGENET_STD, Data, Run, section
from resnet_jax.data import augment, streaming

CROP = 32  # image_size in tests; sources are 64-96 px, scale_range (36, 64), eval resize 36
SCALE_RANGE = (36, 64)
EVAL_RESIZE = 36
CLASSES = ('apple', 'bus', 'cat')
TRAIN_SIZES = [(64, 96), (96, 64), (72, 80), (80, 72), (64, 64), (90, 70), (70, 90), (66, 84),
               (84, 66)]  # (height, width); image i is of class i % 3
EVAL_SIZES = [(64, 80), (80, 64), (96, 72), (72, 96), (68, 68)]
SYNSETS = ('n01440764', 'n01443537')  # the first two ImageNet classes (labels 0 and 1)
REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def code_to_blue(code: int) -> int:
  return 10 + 15 * code  # codes 0-15


def blue_to_code(blue: float) -> int:
  return int(round((blue - 10) / 15))


def coordinate_image(height: int, width: int, code: int) -> np.ndarray:
  rows, cols = np.mgrid[:height, :width]
  return np.stack([2 * cols, 2 * rows, np.full_like(rows, code_to_blue(code))], -1).astype(np.uint8)


def jpeg_bytes(image: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format='JPEG', quality=95, subsampling=0)
  return buffer.getvalue()


def make_config(**overrides):
  config = imagenet.get_config('resnet18')
  config.update({**dict(image_size=CROP, scale_range=SCALE_RANGE, eval_resize_size=EVAL_RESIZE,
                        pca_lighting_std=0.0, batch_size=4, eval_batch_size=4,
                        shuffle_buffer_size=64), **overrides})
  return config


def load(config, process_index: int = 0, process_count: int = 1) -> streaming.StreamingData:
  """The streaming source of a flat config's sections, as the loop loads it."""
  run = Run.of(config)
  return streaming.load_streaming(run.data, run.pipeline, run.loop.seed,
                                  run.model.half_precision, process_index, process_count)


def pixels(batch: dict, config) -> np.ndarray:
  """Undoes the normalisation: RGB in [0, 255] as float64."""
  mean, std = streaming.stream_stats(section(config, Data))
  return (np.asarray(batch['image'], np.float64) * std + mean) * 255


def codes(images: np.ndarray) -> list[int]:
  return [blue_to_code(image[..., 2].mean()) for image in images]


def fit_axis(values: np.ndarray, size: int) -> tuple[float, float, bool]:
  """(start, length, backwards): where, in source pixels, a crop resized to `size` lay along one
  axis, from the coordinate ramp `values` (2 x source coordinate) along that output axis.
  Output pixel j samples source coordinate start - 0.5 + (j + 0.5) * length / size."""
  inner = np.arange(3, size - 3)  # antialiasing bends the ramp at the borders
  slope, intercept = np.polyfit(inner, values[inner] / 2, 1)
  if slope < 0:
    start, length, _ = fit_axis(values[::-1], size)
    return start, length, True
  return intercept + 0.5 - 0.5 * slope, slope * size, False


def crop_window(image: np.ndarray) -> tuple[float, float, float, float, bool]:
  """(y, x, h, w, flipped) of the source window an output image was cut from."""
  x, w, flipped = fit_axis(image[..., 0].mean(0), image.shape[1])
  y, h, _ = fit_axis(image[..., 1].mean(1), image.shape[0])
  return y, x, h, w, flipped


@pytest.fixture(scope='module')
def folder(tmp_path_factory) -> str:
  """train/<class>/ with codes 0-8 and val/<class>/ with codes 9-13, of varied sizes; the
  fifth image of each split is a PNG, the others JPEGs."""
  root = tmp_path_factory.mktemp('folder')
  for split, sizes, first in (('train', TRAIN_SIZES, 0), ('val', EVAL_SIZES, len(TRAIN_SIZES))):
    for i, (height, width) in enumerate(sizes):
      class_dir = root / split / CLASSES[i % len(CLASSES)]
      class_dir.mkdir(parents=True, exist_ok=True)
      image = coordinate_image(height, width, first + i)
      if i == 4:
        Image.fromarray(image).save(class_dir / f'{i:03d}.png')
      else:
        (class_dir / f'{i:03d}.jpg').write_bytes(jpeg_bytes(image))
  (root / 'train' / CLASSES[0] / 'notes.txt').write_text('not an image')
  return str(root)


def size_of(code: int) -> tuple[int, int]:
  return (TRAIN_SIZES + EVAL_SIZES)[code]


def label_of(code: int) -> int:
  return (code if code < len(TRAIN_SIZES) else code - len(TRAIN_SIZES)) % len(CLASSES)


def take(iterator, count: int) -> list[dict]:
  return [next(iterator) for _ in range(count)]


# Image folders.

@pytest.mark.parametrize('half_precision,normalization',
                         [(False, 'per_pixel_mean'), (True, 'per_channel')])
def test_folder_batches_have_shapes_dtypes_labels_and_ranges(folder, half_precision, normalization):
  config = make_config(dataset='image_folder_stream', data_dir=folder,
                       half_precision=half_precision, normalization=normalization)
  data = load(config, 0, 1)
  assert (data.num_classes, data.class_names) == (3, CLASSES)
  assert (data.num_train_examples, data.steps_per_epoch, data.image_size) == (9, 2, CROP)
  assert data.eval_splits == ('test',)
  dtype = tf.bfloat16.as_numpy_dtype if half_precision else np.float32
  for batch in take(data.train_iter(0), 3) + list(data.eval_iter('test')):
    assert batch['image'].shape == (4, CROP, CROP, 3) and batch['image'].dtype == dtype
    assert batch['label'].shape == (4,) and batch['label'].dtype == np.int32
    image = pixels(batch, config)
    real = batch.get('mask', np.ones(4, bool))
    assert image[real].min() >= -1 and image[real].max() <= 256
    assert [label_of(code) for code in codes(image[real])] == batch['label'][real].tolist()
  # Units of the in-memory pipeline: per_channel (255 - 103.5) / 57.4 < 3, per_pixel_mean
  # (255 - 103.5) / 255 < 0.65, as augment.normalize gives for the same pixels.
  bound = 3 if normalization == 'per_channel' else 0.65
  assert np.abs(np.asarray(batch['image'], np.float32)).max() < bound


def test_paper_scale_augmentation_crops_squares_inside_the_image(folder):
  config = make_config(dataset='image_folder_stream', data_dir=folder, augmentation='paper')
  batches = take(load(config, 0, 1).train_iter(0), 10)
  images = np.concatenate([pixels(b, config) for b in batches])
  flips = set()
  for image, code in zip(images, codes(images)):
    height, width = size_of(code)
    y, x, h, w, flipped = crop_window(image)
    flips.add(flipped)
    assert -1 <= y and y + h <= height + 1 and -1 <= x and x + w <= width + 1
    assert abs(h - w) < 1.0  # a square crop of the resized image is a square here
    # Shorter side resized to S in [36, 64], then a 32 crop: side / shorter = 32 / S.
    assert CROP / SCALE_RANGE[1] - 0.03 <= w / min(height, width) <= CROP / SCALE_RANGE[0] + 0.03
  assert flips == {False, True}


def test_inception_crops_cover_8_to_100_percent_with_bounded_aspect(folder):
  config = make_config(dataset='image_folder_stream', data_dir=folder, augmentation='inception')
  batches = take(load(config, 0, 1).train_iter(0), 10)
  images = np.concatenate([pixels(b, config) for b in batches])
  areas = []
  for image, code in zip(images, codes(images)):
    height, width = size_of(code)
    y, x, h, w, _ = crop_window(image)
    assert -1 <= y and y + h <= height + 1 and -1 <= x and x + w <= width + 1
    assert 3 / 4 - 0.08 <= w / h <= 4 / 3 + 0.08
    areas.append(h * w / (height * width))
  assert 0.08 - 0.02 <= min(areas) and max(areas) <= 1.02
  assert np.ptp(areas) > 0.3  # the crop size varies


def test_eval_is_the_centre_crop_of_the_resized_image(folder):
  config = make_config(dataset='image_folder_stream', data_dir=folder)
  batches = list(load(config, 0, 1).eval_iter('test'))
  images = np.concatenate([pixels(b, config)[b['mask']] for b in batches])
  assert sorted(codes(images)) == list(range(9, 14))
  output = np.arange(CROP) + 0.5
  for image, code in zip(images, codes(images)):
    height, width = size_of(code)
    side = min(height, width) * CROP / EVAL_RESIZE  # shorter side to 36, then the centre 32
    expected_x = (width - side) / 2 - 0.5 + output * side / CROP
    expected_y = (height - side) / 2 - 0.5 + output * side / CROP
    # Within a pixel: windows are whole pixels, and JPEG ripples the ramp by a fraction of one.
    inner = slice(2, CROP - 2)  # antialiasing bends the ramp at the borders
    np.testing.assert_allclose(image[..., 0].mean(0)[inner] / 2, expected_x[inner], atol=1.0)
    np.testing.assert_allclose(image[..., 1].mean(1)[inner] / 2, expected_y[inner], atol=1.0)


def test_process_shards_are_disjoint_and_eval_covers_every_example_once(folder):
  config = make_config(dataset='image_folder_stream', data_dir=folder)
  shards = [load(config, index, 2) for index in range(2)]
  train = [sorted(code for b in take(data.train_iter(0), data.steps_per_epoch)
                  for code in codes(pixels(b, config))) for data in shards]
  assert [len(codes_) for codes_ in train] == [4, 4]  # 9 examples: the remainder is dropped
  assert not set(train[0]) & set(train[1]) and len(set(train[0] + train[1])) == 8
  evals = [list(data.eval_iter('test')) for data in shards]
  assert [len(batches) for batches in evals] == [2, 2]  # the same count on every process
  seen = []
  for batches in evals:
    for b in batches:
      assert b['image'].shape[0] == 2 and b['mask'].dtype == bool
      seen += codes(pixels(b, config)[b['mask']])
  assert sorted(seen) == list(range(9, 14))  # every eval example exactly once
  assert sum(int(b['mask'].sum()) for batches in evals for b in batches) == len(EVAL_SIZES)


def test_resuming_at_a_step_yields_the_batches_of_an_uninterrupted_run(folder):
  config = make_config(dataset='image_folder_stream', data_dir=folder, pca_lighting_std=0.1)
  data = load(config, 0, 1)
  uninterrupted = take(data.train_iter(0), 5)  # epochs of 2 steps: 0-1, 2-3, 4
  for start in (1, 3):
    for a, b in zip(uninterrupted[start:], take(data.train_iter(start), 5 - start)):
      np.testing.assert_array_equal(a['image'], b['image'])
      np.testing.assert_array_equal(a['label'], b['label'])
  epoch_orders = [codes(pixels(b, config)) for b in uninterrupted[:4]]
  assert epoch_orders[0] + epoch_orders[1] != epoch_orders[2] + epoch_orders[3]


def test_pca_lighting_adds_principal_components_scaled_by_eigenvalue_times_gaussian():
  eigvec, eigval = np.array(streaming.PCA_EIGVEC), np.array(streaming.PCA_EIGVAL)
  np.testing.assert_allclose(eigvec.T @ eigvec, np.eye(3), atol=1e-3)  # an orthonormal basis
  image = tf.random.uniform([8, 8, 3], 0, 255, seed=1)
  alphas = []
  for seed in range(300):
    shift = (streaming.pca_lighting(image, tf.constant([seed, 0], tf.int64), 0.1) - image).numpy()
    np.testing.assert_allclose(shift, np.broadcast_to(shift[0, 0], shift.shape), atol=1e-3)
    alphas.append(eigvec.T @ (shift[0, 0] / 255) / eigval)  # one shift per image
  # AlexNet [21]: component i is added with magnitude eigval_i * alpha_i, alpha_i ~ N(0, 0.1).
  np.testing.assert_allclose(np.std(alphas, axis=0), 0.1, rtol=0.2)
  np.testing.assert_allclose(np.mean(alphas, axis=0), 0.0, atol=0.03)


@pytest.mark.parametrize('overrides,message', [
    (dict(augmentation='autoaugment'), 'augmentation'),
    (dict(normalization='zca'), 'normalization'),
    (dict(batch_size=5), 'not divisible'),
    (dict(scale_range=(16, 64)), 'scale_range'),
    (dict(eval_resize_size=16), 'eval_resize_size'),
    (dict(val_split=100), 'val_split'),
    (dict(dataset='cifar10'), 'not a streaming source'),
    (dict(data_dir='/nonexistent'), '/nonexistent/train is not a directory'),
])
def test_bad_config_raises_one_line(folder, overrides, message):
  config = make_config(dataset='image_folder_stream', data_dir=folder)
  config.update(overrides)
  with pytest.raises(ValueError, match=message) as error:
    load(config, 0, 2)
  assert '\n' not in str(error.value)


@pytest.mark.parametrize('layout,message', [
    ({'train/a/1.jpg'}, 'no val/ or test/ folder'),
    ({'train/a/1.jpg', 'val/b/1.jpg'}, "only in train ['a'], only in val ['b']"),
    ({'train/a/notes.txt', 'val/a/1.jpg'}, 'has no files with an image extension (.jpg,'),
])
def test_bad_folder_layout_raises_one_line(tmp_path, layout, message):
  for name in layout:
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_bytes(jpeg_bytes(coordinate_image(8, 8, 0)))
  config = make_config(dataset='image_folder_stream', data_dir=str(tmp_path))
  with pytest.raises(ValueError, match=re.escape(message)) as error:
    load(config, 0, 1)
  assert '\n' not in str(error.value)


def test_bad_iterator_arguments_raise(folder):
  data = load(make_config(dataset='image_folder_stream', data_dir=folder))
  with pytest.raises(ValueError, match='start_step'):
    data.train_iter(-1)
  with pytest.raises(ValueError, match="unknown eval split 'val'"):
    data.eval_iter('val')


# tfds.

def write_tfds_metadata(builder, num_examples: int) -> None:
  """dataset_info.json for a mocked builder, so its split sizes are known."""
  builder.data_path.mkdir(parents=True)
  builder.info.set_splits(tfds.core.SplitDict([tfds.core.SplitInfo(
      name=split, shard_lengths=[num_examples], num_bytes=0,
      filename_template=tfds.core.ShardedFileTemplate(
          data_dir=builder.data_path, template='{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}',
          dataset_name=builder.name, split=split, filetype_suffix='tfrecord'))
      for split in ('train', 'validation')]))
  builder.info.write_to_directory(builder.data_path)


@pytest.mark.parametrize('half_precision', [False, True])
def test_tfds_mock_imagenette_batches_and_masks(tmp_path, half_precision):
  write_tfds_metadata(tfds.builder('imagenette/320px-v2', data_dir=tmp_path), 6)
  config = make_config(dataset='imagenette', data_dir=str(tmp_path), half_precision=half_precision,
                       augmentation='inception')
  with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_FILES,
                              data_dir=str(tmp_path)):
    data = load(config, 0, 1)
    train = take(data.train_iter(0), 2)
    evals = list(data.eval_iter('test'))
  assert (data.num_classes, data.num_train_examples, data.steps_per_epoch) == (10, 6, 1)
  dtype = tf.bfloat16.as_numpy_dtype if half_precision else np.float32
  for batch in train + evals:
    assert batch['image'].shape == (4, CROP, CROP, 3) and batch['image'].dtype == dtype
    assert batch['label'].dtype == np.int32
    assert 0 <= batch['label'].min() <= batch['label'].max() < 10
    image = pixels(batch, config)
    assert image.min() >= -1 and image.max() <= 256 and image.std() > 10  # random noise images
  assert [b['mask'].tolist() for b in evals] == [[True] * 4, [True, True, False, False]]
  assert not np.any(np.asarray(evals[-1]['image'][2:], np.float32))


@pytest.fixture
def manual_download(tmp_path):
  """data_dir with the ILSVRC 2012 tar files in downloads/manual, as tfds documents: a train tar
  of per-synset tars (5 images of SYNSETS[0], 4 of SYNSETS[1]) and a val tar of 7 images."""
  manual_dir = tmp_path / 'downloads' / 'manual'
  manual_dir.mkdir(parents=True)

  def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))

  code = 0
  with tarfile.open(manual_dir / 'ILSVRC2012_img_train.tar', 'w') as train_tar:
    for synset, count in zip(SYNSETS, (5, 4)):
      inner = io.BytesIO()
      with tarfile.open(fileobj=inner, mode='w') as synset_tar:
        for i in range(count):
          image = coordinate_image(64 + 4 * i, 80, code)
          add(synset_tar, f'{synset}_{i}.JPEG', jpeg_bytes(image))
          code += 1
      add(train_tar, f'{synset}.tar', inner.getvalue())
  with tarfile.open(manual_dir / 'ILSVRC2012_img_val.tar', 'w') as val_tar:
    for i in range(7):
      add(val_tar, f'ILSVRC2012_val_{i + 1:08d}.JPEG', jpeg_bytes(coordinate_image(72, 64, code)))
      code += 1
  return tmp_path


def test_imagenet2012_from_the_manual_download_shards_per_process(manual_download):
  config = make_config(dataset='imagenet2012', data_dir=str(manual_download))
  first = load(config, 0, 1)  # prepares imagenet2012 from the tar files
  assert (first.num_classes, first.num_train_examples) == (1000, 9)
  assert first.class_names[:2] == SYNSETS
  shards = [load(config, index, 2) for index in range(2)]
  train = [[(code, label) for b in take(data.train_iter(0), data.steps_per_epoch)
            for code, label in zip(codes(pixels(b, config)), b['label'].tolist())]
           for data in shards]
  assert [len(pairs) for pairs in train] == [4, 4]  # 9 split in two, the remainder dropped
  seen = [code for pairs in train for code, _ in pairs]
  assert len(set(seen)) == 8 and set(seen) <= set(range(9))
  assert all(label == (0 if code < 5 else 1) for pairs in train for code, label in pairs)
  evaluated = [code for data in shards for b in data.eval_iter('test')
               for code in codes(pixels(b, config)[b['mask']])]
  assert sorted(evaluated) == list(range(9, 16))  # 7 validation images, each exactly once


def test_missing_manual_download_names_the_files_and_folder(tmp_path):
  config = make_config(dataset='imagenet2012', data_dir=str(tmp_path))
  manual_dir = os.path.join(tmp_path, 'downloads', 'manual')
  with pytest.raises(ValueError) as error:
    load(config, 0, 1)
  message = str(error.value)
  assert 'ILSVRC2012_img_train.tar' in message and 'ILSVRC2012_img_val.tar' in message
  assert manual_dir in message and '\n' not in message
  assert os.listdir(tmp_path) == []  # raised before tfds wrote anything


def test_unprepared_imagenet2012_in_a_multi_process_run_asks_for_one_preparation(manual_download):
  config = make_config(dataset='imagenet2012', data_dir=str(manual_download))
  with pytest.raises(ValueError, match='prepare it once with a single process'):
    load(config, 0, 2)
  assert sorted(os.listdir(manual_download)) == ['downloads']


def test_resnet18_trains_at_224_from_imagenet2012_through_the_loop(manual_download):
  from resnet_jax.train import loop  # pylint: disable=import-outside-toplevel
  config = make_config(dataset='imagenet2012', data_dir=str(manual_download), image_size=224,
                       scale_range=(256, 480), eval_resize_size=256, batch_size=2,
                       eval_batch_size=2, num_train_steps=3, eval_every_steps=3,
                       checkpoint_every_steps=3, log_every_steps=1, lr_boundaries=(),
                       learning_rate=0.01)
  workdir = manual_download / 'workdir'
  loop.train_and_evaluate(config, str(workdir))
  rows = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  assert rows[0]['event'] == 'start' and rows[0]['dataset'] == 'imagenet2012'
  train = [row for row in rows if 'train_loss' in row]
  assert [row['step'] for row in train] == [1, 2, 3]
  assert all(np.isfinite(row['train_loss']) and 0 <= row['train_error'] <= 1 for row in train)
  evaluated = [row for row in rows if 'test_error' in row]
  assert [row['step'] for row in evaluated] == [3]
  assert 0 <= evaluated[0]['test_top5_error'] <= evaluated[0]['test_error'] <= 1
  assert rows[-1]['event'] == 'end'


# Configs.

@pytest.mark.parametrize('model', imagenet.MODELS)
def test_imagenet_config_is_the_paper_recipe(model):
  config = imagenet.get_config(model)
  assert (config.model, config.batch_size, config.learning_rate) == (model, 256, 0.1)
  assert (config.num_train_steps, config.weight_decay, config.momentum) == (600_000, 1e-4, 0.9)
  assert config.augmentation == 'paper' and tuple(config.scale_range) == (256, 480)
  assert config.checkpoint_every_steps % config.log_every_steps == 0


def test_imagenet_config_rejects_models_outside_the_study():
  with pytest.raises(ValueError, match='plain18'):
    imagenet.get_config('resnet20')


def test_v1_5_learning_rate_and_length_follow_the_batch_size():
  config = imagenet_v1_5.get_config()
  assert (config.model, config.augmentation, config.half_precision) == (
      'resnet50_v1_5', 'inception', True)
  assert (config.learning_rate, config.num_train_steps, config.warmup_steps) == (
      0.4, 90 * 1251, 5 * 1251)
  config.batch_size = 256
  assert (config.learning_rate, config.num_train_steps, config.warmup_steps) == (
      0.1, 90 * 5004, 5 * 5004)


# Benchmark.

def test_input_pipeline_benchmark_writes_json_and_markdown(tmp_path):
  output = tmp_path / 'out' / 'bench.json'
  subprocess.run([sys.executable, '-m', 'benchmarks.input_pipeline', f'--images_dir={tmp_path}',
                  '--num_images=24', '--sizes=96x64,64x80', '--batch_size=4', '--steps=2',
                  '--warmup_steps=1', '--target_images_per_sec=3000', f'--output={output}'],
                 check=True, capture_output=True, cwd=REPO_ROOT)
  rows = json.loads(output.read_text())['rows']
  assert [row['images'] for row in rows] == [8, 8, 24]  # 2 train batches each, one eval pass
  for row in rows:
    assert row['images_per_cpu_second'] == pytest.approx(row['images'] / row['cpu_seconds'])
    assert row['cores_per_accelerator'] == pytest.approx(3000 / row['images_per_cpu_second'])
  table = (tmp_path / 'out' / 'bench.md').read_text().splitlines()
  assert len(table) == 4 + len(rows) and 'cores to feed 3000 images/s' in table[0]
  bad = subprocess.run([sys.executable, '-m', 'benchmarks.input_pipeline', '--sizes=500-375'],
                       capture_output=True, text=True, cwd=REPO_ROOT)
  assert bad.returncode != 0 and 'give WIDTHxHEIGHT values' in bad.stderr


@pytest.mark.parametrize('normalization, std', [('per_pixel_mean', (1.0, 1.0, 1.0)),
                                                ('per_channel', IMAGENET_STD),
                                                ('given', (0.5, 0.25, 0.125))])
def test_streamed_inputs_are_in_the_units_of_the_in_memory_pipeline(normalization, std):
  """normalization means one thing in both pipelines: (x / 255 - mean) / std (augment.normalize),
  with ImageNet's per-channel mean and, for per_channel, std; 'given' takes the config's."""
  pixels_uint8 = np.random.default_rng(0).integers(0, 256, (2, 4, 4, 3)).astype(np.uint8)
  mean = (0.25, 0.5, 0.75) if normalization == 'given' else IMAGENET_MEAN
  config = make_config(normalization=normalization, half_precision=False,
                       normalization_mean=mean, normalization_std=std)
  run = Run.of(config)
  prep = streaming.Preprocessing.of(run.data, run.pipeline, run.model.half_precision)
  streamed = streaming._normalize(tf.constant(pixels_uint8, tf.float32), prep).numpy()
  in_memory = augment.normalize(pixels_uint8.astype(np.float32), np.array(mean), np.array(std))
  np.testing.assert_allclose(streamed, np.asarray(in_memory), rtol=1e-5, atol=1e-6)
  assert np.abs(streamed - np.asarray(in_memory) * 255).max() > 1  # control: 0-255 units differ
