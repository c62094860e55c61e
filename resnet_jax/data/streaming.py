"""tf.data input pipeline for ImageNet-sized data that does not fit in memory.

Sources (data.dataset): 'imagenet2012' (tfds, from the manual download of
ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in data.tfds_manual_dir), 'imagenette'
(tfds imagenette/320px-v2, 10 classes) and 'image_folder_stream' (resnet_jax.data.folders in
data.data_dir). Every source is evaluated on its split named 'test': tfds' 'validation'
(ImageNet's 50,000 images of He 2015 Tables 2-4).

Each crop is decoded straight from the JPEG, resized (bilinear, antialiased) to
data.image_size and normalised in the units of the in-memory pipeline (_normalize). Train
crops: augmentation='paper' (He 2015 sec. 3.4: shorter side S ~ U[scale_range], a random
224 crop, flip, AlexNet PCA lighting) or 'inception' (8%-100% of the area, aspect in [3/4, 4/3],
flip; v1.5 recipes). Evaluation: shorter side eval_resize_size, the centre crop.

Each process reads only its shard; epoch e is shuffled with a seed of (seed, e), and
augmentation draws stateless random numbers from (epoch seed, position), so train_iter(k) yields
bitwise the batches an uninterrupted run yields from step k (same files, TensorFlow build and
CPU). Evaluation reads every example once across processes, the last batch padded and masked.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import os
from collections.abc import Callable, Iterator

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from resnet_jax.config import IMAGENET_MEAN, IMAGENET_STD, NORMALIZATIONS, Data, Streaming
from resnet_jax.data import folders
from resnet_jax.data.augment import given_stats, normalize
from resnet_jax.data.names import STREAMING_DATASETS, TFDS_STREAMED

# Principal components of ImageNet RGB in [0, 1], for the colour augmentation of AlexNet [21]
# (the values fb.resnet.torch uses); eigenvectors are the columns.
PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
PCA_EIGVEC = ((-0.5675, 0.7192, 0.4009),
              (-0.5808, -0.0045, -0.8140),
              (-0.5836, -0.6948, 0.4203))
INCEPTION_AREA = (0.08, 1.0)
INCEPTION_ASPECT = (3 / 4, 4 / 3)
ILSVRC_TARS = ('ILSVRC2012_img_train.tar', 'ILSVRC2012_img_val.tar')
AUGMENTATIONS = ('paper', 'inception')
# The accurate inverse DCT, as PIL (and so torchvision) decodes; TensorFlow's default fast one
# darkens red and blue by about one level.
JPEG_DCT = 'INTEGER_ACCURATE'


@dataclasses.dataclass(frozen=True)
class _Shard:
  """This process's part of one split: `size` (key, label) pairs, where `read(key)` gives the
  encoded image (the JPEG bytes themselves for tfds, a file path for folders).
  `dataset(seed)` lists them shuffled by `seed`, or in stored order for None."""
  size: int
  dataset: Callable[[int | None], tf.data.Dataset]
  read: Callable[[tf.Tensor], tf.Tensor]


@dataclasses.dataclass(frozen=True)
class _Source:
  train: _Shard
  test: _Shard
  num_test_examples: int
  class_names: tuple[str, ...]
  num_train_examples: int


@dataclasses.dataclass(frozen=True, eq=False)
class Preprocessing:
  """How an encoded image becomes a crop: the Data and Streaming sections, the normalisation
  statistics (stream_stats) and the output dtype."""
  data: Data
  streaming: Streaming
  mean: np.ndarray
  std: np.ndarray
  dtype: tf.DType

  @classmethod
  def of(cls, data: Data, streaming: Streaming, half_precision: bool) -> Preprocessing:
    mean, std = stream_stats(data)
    return cls(data, streaming, mean, std, tf.bfloat16 if half_precision else tf.float32)


@dataclasses.dataclass(frozen=True)
class StreamingData:
  """Per-process batches of a streaming source; see the module docstring for what they hold."""
  num_classes: int
  class_names: tuple[str, ...]
  num_train_examples: int
  eval_splits: tuple[str, ...]
  image_size: int
  steps_per_epoch: int
  num_eval_batches: dict[str, int]
  source: _Source
  preprocessing: Preprocessing
  seed: int
  batch_size: int
  eval_batch_size: int

  def train_iter(self, start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """Endless batches {'image' [B,H,W,C], 'label' int32 [B]} from train step `start_step` on."""
    if start_step < 0:
      raise ValueError(f'start_step must be >= 0, got {start_step}')
    return self._train_batches(start_step)

  def eval_iter(self, split: str = 'test') -> Iterator[dict[str, np.ndarray]]:
    """One pass over `split`: {'image', 'label', 'mask' bool [B]}, padded to whole batches."""
    if split not in self.eval_splits:
      raise ValueError(f'unknown eval split {split!r}; choose from {self.eval_splits}')
    shard, size, prep = self.source.test, self.image_size, self.preprocessing

    def example(key, label):
      image = _eval_image(shard.read(key), prep)
      return {'image': image, 'label': tf.cast(label, tf.int32), 'mask': True}

    padding = {'image': tf.zeros([size, size, 3], prep.dtype), 'label': 0, 'mask': False}
    ds = shard.dataset(None).map(example, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.concatenate(tf.data.Dataset.from_tensors(padding).repeat())
    ds = ds.take(self.num_eval_batches[split] * self.eval_batch_size)
    return _finish(ds, self.eval_batch_size).as_numpy_iterator()

  def _train_batches(self, start_step: int) -> Iterator[dict[str, np.ndarray]]:
    first_epoch, skip = divmod(start_step, self.steps_per_epoch)
    for epoch in itertools.count(first_epoch):
      yield from self._train_epoch(epoch, skip).as_numpy_iterator()
      skip = 0

  def _train_epoch(self, epoch: int, skip_batches: int) -> tf.data.Dataset:
    seed = epoch_seed(self.seed, epoch)
    shard = self.source.train

    def example(index, key_label):
      key, label = key_label
      example_seed = tf.stack([tf.constant(seed, tf.int64), index])
      image = _train_image(shard.read(key), example_seed, self.preprocessing)
      return {'image': image, 'label': tf.cast(label, tf.int32)}

    ds = shard.dataset(seed).enumerate().skip(skip_batches * self.batch_size)
    ds = ds.map(example, num_parallel_calls=tf.data.AUTOTUNE)
    return _finish(ds, self.batch_size)


def load_streaming(data: Data, streaming: Streaming, seed: int, half_precision: bool = False,
                   process_index: int | None = None,
                   process_count: int | None = None) -> StreamingData:
  """The streaming source of `data` for one process (default: this JAX process): `seed` orders
  and augments the epochs, half_precision gives bfloat16 images."""
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  _check(data, streaming, process_index, process_count)
  tf.config.set_visible_devices([], 'GPU')  # TensorFlow stays off the accelerators JAX uses.
  if data.dataset == 'image_folder_stream':
    source = _folder_source(data.data_dir, process_index, process_count)
  else:
    source = _tfds_source(data, streaming.shuffle_buffer_size, process_index, process_count)
  batch_size = data.batch_size // process_count
  eval_batch_size = data.eval_batch_size // process_count
  if source.train.size < batch_size:
    raise ValueError(f'{source.train.size} training examples per process are fewer than one '
                     f'batch of {batch_size}; lower batch_size')
  eval_per_process = math.ceil(source.num_test_examples / process_count)
  return StreamingData(
      num_classes=len(source.class_names), class_names=source.class_names,
      num_train_examples=source.num_train_examples, eval_splits=data.eval_splits,
      image_size=data.image_size, steps_per_epoch=source.train.size // batch_size,
      num_eval_batches={'test': math.ceil(eval_per_process / eval_batch_size)}, source=source,
      preprocessing=Preprocessing.of(data, streaming, half_precision), seed=seed,
      batch_size=batch_size, eval_batch_size=eval_batch_size)


def epoch_seed(seed: int, epoch: int) -> int:
  """The shuffle and augmentation seed of one epoch, a pure function of (seed, epoch)."""
  return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def _check(data: Data, streaming: Streaming, process_index: int, process_count: int) -> None:
  if data.dataset not in STREAMING_DATASETS:
    raise ValueError(f'dataset={data.dataset!r} is not a streaming source; choose '
                     f'from {STREAMING_DATASETS}')
  if streaming.augmentation not in AUGMENTATIONS:
    raise ValueError(f'augmentation={streaming.augmentation!r}; choose from {AUGMENTATIONS}')
  if data.normalization not in NORMALIZATIONS:
    raise ValueError(f'normalization={data.normalization!r}; choose from {NORMALIZATIONS}')
  if data.val_split:
    raise ValueError('val_split is not supported by streaming sources; set it to 0')
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index {process_index} is outside [0, {process_count})')
  for name in ('batch_size', 'eval_batch_size'):
    if getattr(data, name) % process_count:
      raise ValueError(f'{name}={getattr(data, name)} is not divisible by the '
                       f'{process_count} processes; make it a multiple')
  low, high = streaming.scale_range
  if not data.image_size <= low <= high:
    raise ValueError(f'scale_range={tuple(streaming.scale_range)} must satisfy '
                     f'image_size ({data.image_size}) <= low <= high')
  if streaming.eval_resize_size < data.image_size:
    raise ValueError(f'eval_resize_size={streaming.eval_resize_size} is smaller than '
                     f'image_size={data.image_size}; make it at least as large')
  if data.dataset == 'image_folder_stream' and not data.data_dir:
    raise ValueError("dataset 'image_folder_stream' needs data_dir, the folder that "
                     'holds train/ and val/ (or test/)')


# Sources.

def _folder_source(root: str, process_index: int, process_count: int) -> _Source:
  """An image folder (resnet_jax.data.folders): train/ and test/ or val/."""
  listing = folders.scan(root)
  train, test = listing.train, listing.test
  return _Source(
      train=_folder_shard(list(map(str, train.paths)), train.labels.tolist(), process_index,
                          process_count, True),
      test=_folder_shard(list(map(str, test.paths)), test.labels.tolist(), process_index,
                         process_count, False),
      num_test_examples=len(test.paths), class_names=listing.class_names,
      num_train_examples=len(train.paths))


def _folder_shard(paths: list[str], labels: list[int], process_index: int, process_count: int,
                  drop_remainder: bool) -> _Shard:
  """Every process_count-th file from process_index on (equal counts with drop_remainder)."""
  end = len(paths) // process_count * process_count if drop_remainder else len(paths)
  paths = paths[process_index:end:process_count]
  labels = np.array(labels[process_index:end:process_count], dtype=np.int32)

  def dataset(seed: int | None) -> tf.data.Dataset:
    ds = tf.data.Dataset.from_tensor_slices((paths, labels))
    return ds if seed is None else ds.shuffle(len(paths), seed=seed)

  return _Shard(size=len(paths), dataset=dataset, read=tf.io.read_file)


def _tfds_source(data: Data, shuffle_buffer_size: int, process_index: int,
                 process_count: int) -> _Source:
  builder = _prepared_builder(data, process_count)

  def shard(split: str, drop_remainder: bool) -> _Shard:
    return _tfds_shard(builder, tfds.split_for_jax_process(
        split, process_index=process_index, process_count=process_count,
        drop_remainder=drop_remainder), shuffle_buffer_size)

  return _Source(
      train=shard('train', True), test=shard('validation', False),
      num_test_examples=builder.info.splits['validation'].num_examples,
      class_names=tuple(builder.info.features['label'].names),
      num_train_examples=builder.info.splits['train'].num_examples)


def _prepared_builder(data: Data, process_count: int) -> tfds.core.DatasetBuilder:
  """The tfds builder of data.dataset, prepared first if need be (from the manual download
  for imagenet2012, whose tar files are checked before tfds starts)."""
  name = TFDS_STREAMED[data.dataset]
  builder = tfds.builder(name, data_dir=data.data_dir or None)
  if builder.is_prepared():
    return builder
  download_config = None
  if data.dataset == 'imagenet2012':
    manual_dir = (data.tfds_manual_dir
                  or os.path.join(builder.data_dir_root, 'downloads', 'manual'))
    missing = [tar for tar in ILSVRC_TARS if not tf.io.gfile.exists(os.path.join(manual_dir, tar))]
    if missing:
      raise ValueError(
          f'imagenet2012 is not prepared and its manual download {" and ".join(missing)} is not '
          f'in {manual_dir}; download it from https://image-net.org/download-images into that '
          'folder (or set tfds_manual_dir)')
    download_config = tfds.download.DownloadConfig(manual_dir=manual_dir)
  if process_count > 1:
    raise ValueError(f'{name} is not prepared in {builder.data_dir}; prepare it once with a '
                     f'single process (or `tfds build {name}`) before a multi-process run')
  builder.download_and_prepare(download_config=download_config)
  return builder


def _tfds_shard(builder: tfds.core.DatasetBuilder, split, shuffle_buffer_size: int) -> _Shard:
  """A tfds (sub)split read with the images still encoded."""
  size = builder.info.splits[split].num_examples

  def dataset(seed: int | None) -> tf.data.Dataset:
    ds = builder.as_dataset(
        split=split, shuffle_files=seed is not None,
        read_config=tfds.ReadConfig(shuffle_seed=seed, shuffle_reshuffle_each_iteration=False),
        decoders={'image': tfds.decode.SkipDecoding()})
    ds = ds.map(lambda example: (example['image'], example['label']))
    return ds if seed is None else ds.shuffle(min(shuffle_buffer_size, size), seed=seed)

  return _Shard(size=size, dataset=dataset, read=lambda key: key)


# Preprocessing (pure TensorFlow functions of an encoded image and a stateless seed).

def _train_image(encoded: tf.Tensor, seed: tf.Tensor, prep: Preprocessing) -> tf.Tensor:
  """A training crop: scale or inception augmentation, flip, optional PCA lighting."""
  if not prep.data.augment:
    return _eval_image(encoded, prep)
  size, crops = prep.data.image_size, prep.streaming
  crop_seed, flip_seed, lighting_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
  if crops.augmentation == 'paper':
    window = functools.partial(scale_window, seed=crop_seed, size=size,
                               scale_range=crops.scale_range)
  else:
    window = functools.partial(inception_window, seed=crop_seed,
                               fallback_fraction=size / crops.eval_resize_size)
  image = _resize(_decode_window(encoded, window), size)
  image = tf.where(tf.random.stateless_uniform([], flip_seed) < 0.5, tf.reverse(image, [1]), image)
  if crops.pca_lighting_std:
    image = pca_lighting(image, lighting_seed, crops.pca_lighting_std)
  return _normalize(image, prep)


def _eval_image(encoded: tf.Tensor, prep: Preprocessing) -> tf.Tensor:
  """The centre crop of evaluation: shorter side to eval_resize_size, centre image_size crop."""
  fraction = prep.data.image_size / prep.streaming.eval_resize_size
  image = _decode_window(encoded, functools.partial(center_window, fraction=fraction))
  return _normalize(_resize(image, prep.data.image_size), prep)


def scale_window(shape: tf.Tensor, seed: tf.Tensor, size: int,
                 scale_range: tuple[int, int]) -> tf.Tensor:
  """He 2015 sec. 3.4 scale augmentation as a window [y, x, h, w] of an image of `shape`:
  resizing the shorter side to S ~ U[scale_range] and cropping size x size there is cropping a
  square of side size * shorter / S here."""
  scale_seed, y_seed, x_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
  height, width = shape[0], shape[1]
  shorter = tf.minimum(height, width)
  scale = tf.random.stateless_uniform([], scale_seed, scale_range[0], scale_range[1] + 1, tf.int32)
  side = tf.cast(tf.round(size * tf.cast(shorter, tf.float32) / tf.cast(scale, tf.float32)),
                 tf.int32)
  side = tf.clip_by_value(side, 1, shorter)
  y = tf.random.stateless_uniform([], y_seed, 0, height - side + 1, tf.int32)
  x = tf.random.stateless_uniform([], x_seed, 0, width - side + 1, tf.int32)
  return tf.stack([y, x, side, side])


def inception_window(shape: tf.Tensor, seed: tf.Tensor, fallback_fraction: float) -> tf.Tensor:
  """Random-resized-crop window [y, x, h, w]: 8%-100% of the area, aspect ratio 3/4-4/3; the
  centre window of `fallback_fraction` when 10 attempts find none (the op then returns the
  whole image)."""
  begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape, tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed,
      min_object_covered=INCEPTION_AREA[0], aspect_ratio_range=INCEPTION_ASPECT,
      area_range=INCEPTION_AREA, max_attempts=10, use_image_if_no_bounding_boxes=True)
  window = tf.stack([begin[0], begin[1], crop_size[0], crop_size[1]])
  whole_image = tf.reduce_all(tf.equal(crop_size[:2], shape[:2]))
  return tf.where(whole_image, center_window(shape, fallback_fraction), window)


def center_window(shape: tf.Tensor, fraction: float) -> tf.Tensor:
  """The centre square window [y, x, h, w] whose side is `fraction` of the shorter side."""
  height, width = shape[0], shape[1]
  side = tf.cast(tf.round(fraction * tf.cast(tf.minimum(height, width), tf.float32)), tf.int32)
  side = tf.maximum(side, 1)
  return tf.stack([(height - side + 1) // 2, (width - side + 1) // 2, side, side])


def pca_lighting(image: tf.Tensor, seed: tf.Tensor, std: float) -> tf.Tensor:
  """AlexNet [21] colour augmentation: add the principal components of ImageNet RGB, each
  scaled by its eigenvalue times a N(0, std) draw (one shift per image)."""
  alpha = tf.random.stateless_normal([3], seed, stddev=std)
  shift = tf.linalg.matvec(tf.constant(PCA_EIGVEC), alpha * tf.constant(PCA_EIGVAL))
  return image + 255.0 * shift


def _decode_window(encoded: tf.Tensor, window_fn: Callable[[tf.Tensor], tf.Tensor]) -> tf.Tensor:
  """Decodes window_fn(shape) of an encoded image as uint8 RGB; a JPEG decodes only that window."""

  def jpeg() -> tf.Tensor:
    window = window_fn(tf.io.extract_jpeg_shape(encoded))
    return tf.image.decode_and_crop_jpeg(encoded, window, channels=3, dct_method=JPEG_DCT)

  def other() -> tf.Tensor:
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    y, x, h, w = tf.unstack(window_fn(tf.shape(image)))
    return image[y:y + h, x:x + w]

  return tf.cond(tf.io.is_jpeg(encoded), jpeg, other)


def _resize(image: tf.Tensor, size: int) -> tf.Tensor:
  image = tf.image.resize(image, [size, size], method='bilinear', antialias=True)
  return tf.ensure_shape(image, [size, size, 3])


def _normalize(image: tf.Tensor, prep: Preprocessing) -> tf.Tensor:
  """RGB in [0, 255] through resnet_jax.data.augment.normalize with stream_stats."""
  return tf.cast(normalize(image, prep.mean, prep.std), prep.dtype)


def stream_stats(data: Data) -> tuple[np.ndarray, np.ndarray]:
  """Mean and std (float32 [3], 0..1 units) of streamed inputs: ImageNet's mean with std 1
  ('per_pixel_mean': no mean image is computed from a stream) or ImageNet's std
  ('per_channel'), or the config's own ('given')."""
  if data.normalization == 'given':
    return given_stats(data)
  std = IMAGENET_STD if data.normalization == 'per_channel' else (1.0, 1.0, 1.0)
  return np.asarray(IMAGENET_MEAN, np.float32), np.asarray(std, np.float32)


def _finish(ds: tf.data.Dataset, batch_size: int) -> tf.data.Dataset:
  """Batches and prefetches in a fixed order."""
  options = tf.data.Options()
  options.deterministic = True
  ds = ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
  return ds.with_options(options)
