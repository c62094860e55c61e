"""The loop's data objects: every config.dataset has one pipeline, and picking one for an
in-memory data set never loads TensorFlow."""

import subprocess
import sys

import pytest

from resnet_jax.data import names


def test_every_dataset_has_exactly_one_pipeline():
  assert not set(names.IN_MEMORY_DATASETS) & set(names.STREAMING_DATASETS)
  assert set(names.DATASETS) == set(names.IN_MEMORY_DATASETS) | set(names.STREAMING_DATASETS)


@pytest.mark.parametrize('module, loads_tensorflow', [
    ('resnet_jax.train.loop', False),
    ('resnet_jax.data.streaming', True),  # control: the check sees TensorFlow when it is loaded
])
def test_only_streaming_loads_tensorflow(module, loads_tensorflow):
  code = (f'import sys; import {module}; '
          'print(any(m.split(".")[0] == "tensorflow" for m in sys.modules))')
  result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
  assert result.stdout.strip() == str(loads_tensorflow)
