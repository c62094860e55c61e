"""The loop's data objects: every config.dataset has one pipeline, and picking one for an
in-memory data set never loads TensorFlow."""

import subprocess
import sys

import pytest

from resnet_jax import parallel
from resnet_jax.config import Run
from resnet_jax.data import names
from resnet_jax.train import inputs
from tests.tiny import tiny_config


def test_no_dataset_is_named_by_both_pipelines():
  assert not set(names.IN_MEMORY_DATASETS) & set(names.STREAMING_DATASETS)


@pytest.mark.parametrize('module, loads_tensorflow', [
    ('resnet_jax.train.loop', False),
    ('resnet_jax.data.streaming', True),  # control: the check sees TensorFlow when it is loaded
])
def test_only_streaming_loads_tensorflow(module, loads_tensorflow):
  code = (f'import sys; import {module}; '
          'print(any(m.split(".")[0] == "tensorflow" for m in sys.modules))')
  result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
  assert result.stdout.strip() == str(loads_tensorflow)


def test_in_memory_data_is_the_loops_seam():
  data = inputs.load_data(Run.of(tiny_config()), parallel.make_mesh())
  assert isinstance(data, inputs.Data)
  assert (data.num_classes, data.image_shape, data.eval_splits) == (10, (8, 8, 3), ('test',))
  assert len(data.class_names) == 10


def test_an_object_without_train_batch_is_not_the_seam():
  """Control: the Protocol check fails for a data object missing one member."""
  class Partial:
    num_classes, class_names, image_shape = 10, tuple('abcdefghij'), (8, 8, 3)
    eval_splits, prepare = ('test',), None

    def arrays(self, split):
      return {}

    def eval_batches(self, split):
      return []

  assert not isinstance(Partial(), inputs.Data)
