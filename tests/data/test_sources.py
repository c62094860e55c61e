"""In-memory sources: tfds (mocked, and the manual_dir path), image folders, synthetic data."""

import pathlib
import shutil
import socket
from unittest import mock

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image
from tensorflow_datasets.core.download.download_manager import NonMatchingChecksumError

from resnet_jax.config import Data, InMemory, section
from resnet_jax.data import sources


def make_config(**fields):
  config = ml_collections.ConfigDict(dict(
      dataset='synthetic', batch_size=8, eval_batch_size=8, synthetic_size=40, image_size=8))
  config.update(fields)
  return config


def load_dataset(config, rows=None) -> sources.Dataset:
  return sources.load_dataset(section(config, Data), section(config, InMemory), rows)


def assert_one_line_error(match, function, *args):
  with pytest.raises(ValueError, match=match) as error:
    function(*args)
  assert '\n' not in str(error.value)
  return error.value


# --- tfds ---------------------------------------------------------------------------


@pytest.mark.parametrize('name,num_classes', [('cifar10', 10), ('cifar100', 100)])
def test_tfds_gives_uint8_images_and_int32_labels(tmp_path, name, num_classes, monkeypatch):
  monkeypatch.setattr(sources, 'reachable', lambda host, port: True)  # mock_data downloads nothing
  with tfds.testing.mock_data(num_examples=6):
    dataset = load_dataset(make_config(dataset=name, data_dir=str(tmp_path), val_split=2))
  assert dataset.num_classes == num_classes and len(dataset.class_names) == num_classes
  assert all(isinstance(c, str) for c in dataset.class_names)  # names come with real data
  for split, size in ((dataset.train, 4), (dataset.val, 2), (dataset.test, 6)):
    assert split.images.shape == (size, 32, 32, 3) and split.images.dtype == np.uint8
    assert split.labels.shape == (size,) and split.labels.dtype == np.int32
    assert np.all((split.labels >= 0) & (split.labels < num_classes))


def test_tfds_manual_dir_reaches_the_download_config(tmp_path):
  manual_dir = tmp_path / 'manual'
  manual_dir.mkdir()
  (manual_dir / 'cifar-10-binary.tar.gz').write_bytes(b'archive')
  config = make_config(dataset='cifar10', data_dir=str(tmp_path), tfds_manual_dir=str(manual_dir))
  with tfds.testing.mock_data(num_examples=2), mock.patch.object(
      tfds.core.DatasetBuilder, 'download_and_prepare', autospec=True) as prepare:
    load_dataset(config)
  download_config = prepare.call_args.kwargs['download_config']
  assert pathlib.Path(download_config.manual_dir) == manual_dir


@pytest.fixture
def no_proxy(monkeypatch):
  """An environment without proxy settings (tfds would download directly)."""
  for name in ('https_proxy', 'http_proxy', 'all_proxy', 'no_proxy'):
    monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(name.upper(), raising=False)


@pytest.mark.usefixtures('no_proxy')
def test_unreachable_download_host_is_a_one_line_error_before_any_download(tmp_path, monkeypatch):
  asked = []
  monkeypatch.setattr(sources, 'reachable', lambda host, port: asked.append((host, port)))
  config = make_config(dataset='cifar10', data_dir=str(tmp_path))
  with mock.patch.object(tfds.core.DatasetBuilder, 'download_and_prepare') as prepare:
    assert_one_line_error(
        r'^cifar10 must be downloaded from www.cs.toronto.edu, which is unreachable: put the '
        r'official archive cifar-10-binary.tar.gz \(from https://www.cs.toronto.edu/~kriz/'
        r'cifar-10-binary.tar.gz\) in a folder and set tfds_manual_dir to it, or use '
        r'dataset=image_folder$', load_dataset, config)
  assert asked == [('www.cs.toronto.edu', 443)] and not prepare.called


@pytest.mark.usefixtures('no_proxy')
def test_downloads_through_a_proxy_are_not_checked(tmp_path, monkeypatch):
  asked = []
  monkeypatch.setattr(sources, 'reachable', lambda host, port: asked.append(host))
  monkeypatch.setenv('https_proxy', 'http://proxy.example:3128')
  config = make_config(dataset='cifar10', data_dir=str(tmp_path))
  with mock.patch.object(tfds.core.DatasetBuilder, 'download_and_prepare') as prepare, \
      mock.patch.object(tfds.core.DatasetBuilder, 'as_dataset', side_effect=StopIteration):
    with pytest.raises(StopIteration):  # past the check, at the (mocked) download and read
      load_dataset(config)
  assert asked == [] and prepare.called
  monkeypatch.setenv('no_proxy', 'www.cs.toronto.edu')  # bypassed: a direct connection, checked
  assert_one_line_error('unreachable', load_dataset, config)
  assert asked == ['www.cs.toronto.edu']


def test_reachable_is_whether_a_tcp_connection_opens():
  with socket.create_server(('127.0.0.1', 0)) as server:
    port = server.getsockname()[1]
    assert sources.reachable('127.0.0.1', port)
  assert not sources.reachable('127.0.0.1', port)  # closed: refused at once


def test_tfds_reads_the_archive_from_manual_dir(tmp_path):
  """Unmocked tfds finds the archive in manual_dir (offline) and checks its checksum."""
  manual_dir = tmp_path / 'manual'
  manual_dir.mkdir()
  archive = manual_dir / 'cifar-10-binary.tar.gz'
  archive.write_bytes(b'not the official archive')
  config = make_config(dataset='cifar10', data_dir=str(tmp_path / 'tfds'),
                       tfds_manual_dir=str(manual_dir))
  error = assert_one_line_error('not the official one', load_dataset, config)
  assert isinstance(error.__cause__, NonMatchingChecksumError)
  assert str(archive) in str(error.__cause__)


def test_tfds_manual_dir_without_the_archive_is_refused(tmp_path):
  config = make_config(dataset='cifar10', data_dir=str(tmp_path), tfds_manual_dir=str(tmp_path))
  assert_one_line_error('has no cifar-10-binary.tar.gz', load_dataset, config)
  config.tfds_manual_dir = str(tmp_path / 'missing')
  assert_one_line_error('is not a directory', load_dataset, config)


# --- image folders ------------------------------------------------------------------

# Classes are created out of order and file names sort as text ('10' < '2'); every image
# is one colour (r, g, b) = (class position, file position, 7) so the order can be read back.
CLASSES = ('dog', 'cat', 'eel')
FILES = ('2.png', '10.png', '1.png')


def write_image(path, rgb, mode='RGB', size=(5, 4)):
  image = Image.new('RGB', size, rgb)
  if mode == 'L':
    image = Image.new('L', size, rgb[0])
  elif mode == 'P':
    image = image.convert('P', palette=Image.Palette.ADAPTIVE)
  path.parent.mkdir(parents=True, exist_ok=True)
  image.save(path)


@pytest.fixture
def image_folder(tmp_path):
  for split in ('train', 'test'):
    for name in CLASSES:
      for file in FILES:
        colour = (sorted(CLASSES).index(name) * 40 + 10, sorted(FILES).index(file) * 40 + 10, 7)
        write_image(tmp_path / split / name / file, colour)
  write_image(tmp_path / 'train' / 'eel' / '10.png', (90, 90, 90), mode='L')
  write_image(tmp_path / 'train' / 'dog' / '2.png', (130, 50, 7), mode='P')
  write_image(tmp_path / 'test' / 'cat' / '3.jpg', (200, 100, 50))
  (tmp_path / 'train' / 'cat' / '.DS_Store').write_bytes(b'hidden, skipped')
  return tmp_path


def test_image_folder_reads_sorted_classes_and_files(image_folder):
  dataset = load_dataset(make_config(dataset='image_folder', data_dir=str(image_folder)))
  assert dataset.class_names == ('cat', 'dog', 'eel') and dataset.num_classes == 3
  train = dataset.train
  assert train.images.shape == (9, 4, 5, 3) and train.images.dtype == np.uint8
  np.testing.assert_array_equal(train.labels, [0, 0, 0, 1, 1, 1, 2, 2, 2])
  assert train.labels.dtype == np.int32
  colours = train.images[:, 0, 0]
  expected = [(c * 40 + 10, f * 40 + 10, 7) for c in range(3) for f in range(3)]
  expected[5] = (130, 50, 7)  # dog/2.png is a palette image
  expected[7] = (90, 90, 90)  # eel/10.png is grey-scale, converted to RGB
  np.testing.assert_array_equal(colours, expected)
  assert np.all(train.images == train.images[:, :1, :1])  # one colour per image
  np.testing.assert_array_equal(dataset.test.labels, [0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
  np.testing.assert_allclose(dataset.test.images[3, 0, 0], (200, 100, 50), atol=8)  # JPEG


def test_image_folder_decodes_the_same_with_any_number_of_threads(image_folder, monkeypatch):
  monkeypatch.setattr(sources, 'DECODE_CHUNK', 2)
  serial = sources.load_image_folder(str(image_folder), num_workers=1)
  parallel = sources.load_image_folder(str(image_folder), num_workers=3)
  for a, b in ((serial.train, parallel.train), (serial.test, parallel.test)):
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)


def test_image_folder_layout_errors(tmp_path):
  load = sources.load_image_folder
  assert_one_line_error('expected data_dir/{train,test}/<class>', load, '')
  assert_one_line_error('is not a directory', load, str(tmp_path / 'missing'))
  (tmp_path / 'train').mkdir()
  (tmp_path / 'test').mkdir()
  assert_one_line_error('has no class folders', load, str(tmp_path))
  (tmp_path / 'train' / 'cat').mkdir()
  (tmp_path / 'test' / 'cat').mkdir()
  assert_one_line_error('has no files', load, str(tmp_path))


def test_image_folder_class_sets_are_checked_before_decoding(image_folder, monkeypatch):
  shutil.rmtree(image_folder / 'test' / 'eel')
  write_image(image_folder / 'test' / 'fox' / '1.png', (1, 2, 3))
  monkeypatch.setattr(Image, 'open', mock.Mock(side_effect=AssertionError('decoded too early')))
  assert_one_line_error(r"only in train \['eel'\], only in test \['fox'\]",
                        sources.load_image_folder, str(image_folder))


def test_image_folder_refuses_an_unreadable_file(image_folder):
  bad = image_folder / 'train' / 'dog' / '5.png'
  bad.write_bytes(b'not an image')
  assert_one_line_error(f'cannot read image {bad}', sources.load_image_folder, str(image_folder))


@pytest.mark.parametrize('split', ['train', 'test'])
def test_image_folder_refuses_mixed_sizes(image_folder, split):
  odd = image_folder / split / 'dog' / '3.png'
  write_image(odd, (1, 2, 3), size=(5, 6))
  first = image_folder / 'train' / 'cat' / '1.png'
  assert_one_line_error(f'{odd} is 5x6 but the first image {first} is 5x4',
                        sources.load_image_folder, str(image_folder))


# --- synthetic data and the validation split ----------------------------------------


def test_synthetic_data_is_deterministic():
  config = make_config(num_classes=3)
  first, second = load_dataset(config), load_dataset(make_config(num_classes=3))
  assert first.train.images.shape == (40, 8, 8, 3) and first.train.images.dtype == np.uint8
  assert first.test.images.shape == (8, 8, 8, 3) and first.val is None
  assert first.num_classes == 3 and set(first.train.labels) == {0, 1, 2}
  assert first.train.labels.dtype == np.int32
  np.testing.assert_array_equal(first.train.images, second.train.images)
  np.testing.assert_array_equal(first.test.labels, second.test.labels)
  assert load_dataset(make_config()).num_classes == 10


def test_validation_split_is_fixed_and_disjoint_from_train():
  whole = load_dataset(make_config())
  split = load_dataset(make_config(val_split=10))
  again = load_dataset(make_config(val_split=10))
  assert len(split.train) == 30 and len(split.val) == 10
  np.testing.assert_array_equal(split.val.images, again.val.images)
  np.testing.assert_array_equal(split.test.images, whole.test.images)
  rows = {image.tobytes(): label for image, label in zip(whole.train.images, whole.train.labels)}
  train_rows = [image.tobytes() for image in split.train.images]
  val_rows = [image.tobytes() for image in split.val.images]
  assert sorted(train_rows + val_rows) == sorted(rows)
  for part in (split.train, split.val):
    assert [rows[image.tobytes()] for image in part.images] == list(part.labels)
  assert val_rows != [image.tobytes() for image in whole.train.images[-10:]]  # not just the tail


def _rows(split: sources.Split) -> list[tuple[bytes, int]]:
  return [(image.tobytes(), int(label)) for image, label in zip(split.images, split.labels)]


def test_subsets_are_fixed_nested_and_taken_after_the_validation_split():
  whole = load_dataset(make_config(val_split=10))
  small = load_dataset(make_config(val_split=10, train_subset=6, test_subset=3))
  large = load_dataset(make_config(val_split=10, train_subset=20, test_subset=5))
  assert (len(small.train), len(small.test), len(large.train), len(large.test)) == (6, 3, 20, 5)
  for part, subset in (('train', small.train), ('test', small.test)):
    kept = sources.subset_indices(len(getattr(whole, part)), len(subset), f'{part}_subset')
    assert _rows(subset) == [_rows(getattr(whole, part))[i] for i in kept]  # in split order
  assert set(_rows(small.train)) <= set(_rows(large.train))  # a smaller subset is in a larger
  assert set(_rows(small.test)) <= set(_rows(large.test))
  assert _rows(small.val) == _rows(whole.val)  # validation is left whole
  assert _rows(small.train) != _rows(whole.train)[:6]  # a random subset, not the head
  np.testing.assert_array_equal(sources.subset_indices(5, 0, 'test_subset'), np.arange(5))


def test_image_folder_decodes_only_the_subsets(image_folder, monkeypatch):
  whole = load_dataset(make_config(dataset='image_folder', data_dir=str(image_folder)))
  decoded = []
  decode = sources._decode
  monkeypatch.setattr(sources, '_decode',
                      lambda paths, *args: decoded.append(len(paths)) or decode(paths, *args))
  subset = load_dataset(make_config(dataset='image_folder', data_dir=str(image_folder),
                                    train_subset=4, test_subset=2))
  assert decoded == [4, 2]
  for part in ('train', 'test'):
    split = getattr(subset, part)
    kept = sources.subset_indices(len(getattr(whole, part)), len(split), f'{part}_subset')
    assert _rows(split) == [_rows(getattr(whole, part))[i] for i in kept]


@pytest.mark.parametrize('fields,match', [
    (dict(train_subset=41), r'train_subset=41 must be in \[0, 40\] \(the split has 40 '
     r'examples\); set train_subset=0 for the whole split'),
    (dict(val_split=10, train_subset=31), r'train_subset=31 must be in \[0, 30\]'),
    (dict(test_subset=-1), r'test_subset=-1 must be in \[0, 8\]'),
    (dict(val_split=40), r'val_split=40 must be in \[0, 40\)'),
    (dict(val_split=-1), 'val_split=-1'),
    (dict(dataset='imagenet2012'), 'not an in-memory source'),
    (dict(synthetic_size=0), 'synthetic_size >= 1'),
])
def test_bad_config_raises_one_line_errors(fields, match):
  assert_one_line_error(match, load_dataset, make_config(**fields))
