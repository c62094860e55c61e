"""Pad-crop-flip augmentation and normalisation against brute force and numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resnet_jax.config import Data
from resnet_jax.data import augment as augment_lib
from resnet_jax.data.augment import PAD, augment, given_stats, normalize, pixel_stats

jit_augment = jax.jit(augment)  # as in the train step; tests share shapes to compile rarely


def random_images(seed, shape):
  """uint8 images without zeros, so zero padding can never be mistaken for content."""
  return np.random.default_rng(seed).integers(1, 256, shape, dtype=np.uint8)


def candidate_windows(images):
  """All 81 pad-4 windows of each image and their mirrors: [B, 9, 9, 2, H, W, C]."""
  batch, height, width, channels = images.shape
  padded = np.zeros((batch, height + 2 * PAD, width + 2 * PAD, channels), images.dtype)
  padded[:, PAD:PAD + height, PAD:PAD + width] = images
  windows = np.lib.stride_tricks.sliding_window_view(padded, (height, width), axis=(1, 2))
  windows = np.moveaxis(windows, 3, -1)  # [B, 9, 9, H, W, C]
  return np.stack([windows, windows[:, :, :, :, ::-1]], axis=3)


def matched_transforms(images, outputs):
  """(dy, dx, flipped) of each output; asserts each output equals exactly one candidate."""
  outputs = np.asarray(outputs)[:, None, None, None]
  matches = np.all(candidate_windows(images) == outputs, axis=(4, 5, 6))  # [B, 9, 9, 2]
  assert np.all(matches.sum(axis=(1, 2, 3)) == 1), 'not one (mirrored) window of the padding'
  return [tuple(int(v) for v in np.argwhere(m)[0]) for m in matches]


def test_outputs_are_windows_of_the_padded_image_or_their_mirrors():
  images = random_images(0, (16, 32, 32, 3))
  outputs = jit_augment(jax.random.key(0), images)
  assert outputs.shape == images.shape and outputs.dtype == jnp.float32
  found = matched_transforms(images, outputs)
  assert len(set(found)) > 8  # per-image randomness, not one crop for the batch
  assert {flip for _, _, flip in found} == {0, 1}


def test_offsets_and_flips_are_uniform():
  images = random_images(1, (4096, 5, 5, 3))
  found = np.array(matched_transforms(images, jit_augment(jax.random.key(1), images)))
  offset_counts = np.bincount(found[:, 0] * 9 + found[:, 1], minlength=81)
  assert offset_counts.min() > 20 and offset_counts.max() < 90  # expected 50.6 each
  assert 0.46 < found[:, 2].mean() < 0.54


def test_flip_is_a_left_right_mirror():
  """Mirroring the input mirrors the crop: offset dx becomes 2 * PAD - dx, the flip stays."""
  images = random_images(2, (16, 32, 32, 3))
  key = jax.random.key(2)
  found = matched_transforms(images, jit_augment(key, images))
  unmirrored = np.asarray(jit_augment(key, images[:, :, ::-1]))[:, :, ::-1]
  assert matched_transforms(images, unmirrored) == [(dy, 2 * PAD - dx, f) for dy, dx, f in found]


def test_same_key_same_output_different_key_different_output():
  images = random_images(3, (16, 32, 32, 3))
  first = jit_augment(jax.random.key(5), images)
  np.testing.assert_array_equal(first, jit_augment(jax.random.key(5), images))
  assert not np.array_equal(first, jit_augment(jax.random.key(6), images))


@pytest.mark.parametrize('chunk', [7, 4096])
def test_pixel_stats_match_numpy(monkeypatch, chunk):
  monkeypatch.setattr(augment_lib, 'STATS_CHUNK', chunk)
  images = random_images(4, (50, 6, 5, 3))
  as_unit = images.astype(np.float64) / 255
  mean, std = pixel_stats(images, 'per_pixel_mean')
  assert mean.shape == std.shape == (6, 5, 3) and mean.dtype == np.float32
  np.testing.assert_allclose(mean, as_unit.mean(axis=0), rtol=1e-6)
  np.testing.assert_array_equal(std, np.ones((6, 5, 3)))
  mean, std = pixel_stats(images, 'per_channel')
  assert mean.shape == std.shape == (3,)
  np.testing.assert_allclose(mean, as_unit.reshape(-1, 3).mean(axis=0), rtol=1e-6)
  np.testing.assert_allclose(std, as_unit.reshape(-1, 3).std(axis=0), rtol=1e-5)


def test_normalize_centres_the_training_images():
  images = random_images(5, (40, 4, 4, 3))
  mean, std = pixel_stats(images, 'per_pixel_mean')
  centred = np.asarray(jax.jit(normalize)(images.astype(np.float32), mean, std))
  assert centred.dtype == np.float32
  np.testing.assert_allclose(centred, images / 255.0 - images.mean(axis=0) / 255.0, atol=1e-6)
  np.testing.assert_allclose(centred.mean(axis=0), 0.0, atol=1e-6)
  mean, std = pixel_stats(images, 'per_channel')
  standardised = np.asarray(normalize(images.astype(np.float32), mean, std)).reshape(-1, 3)
  np.testing.assert_allclose(standardised.mean(axis=0), 0.0, atol=1e-5)
  np.testing.assert_allclose(standardised.std(axis=0), 1.0, atol=1e-5)


@pytest.mark.parametrize('images,mode', [
    (np.zeros((2, 4, 4, 3), np.uint8), 'per_image'),
    (np.zeros((0, 4, 4, 3), np.uint8), 'per_channel'),
    (np.zeros((2, 4, 4, 3), np.uint8), 'given'),  # the config's values, never computed
])
def test_pixel_stats_bad_input_raises_one_line_error(images, mode):
  with pytest.raises(ValueError) as error:
    pixel_stats(images, mode)
  assert '\n' not in str(error.value)


def test_given_stats_normalise_with_the_configs_mean_and_std():
  data = Data(dataset='synthetic', batch_size=8, eval_batch_size=8,
              normalization_mean=(0.5, 0.25, 0.0), normalization_std=(0.5, 0.25, 1.0))
  mean, std = given_stats(data)
  assert mean.dtype == std.dtype == np.float32
  white = normalize(np.full((1, 1, 1, 3), 255.0, np.float32), mean, std)
  np.testing.assert_allclose(np.asarray(white).ravel(), [1.0, 3.0, 1.0])
