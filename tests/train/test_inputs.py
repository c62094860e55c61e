"""The loop's data objects: the streaming names agree with the streaming module."""

from resnet_jax.data import streaming
from resnet_jax.train import inputs


def test_streaming_dataset_names_match_the_streaming_module():
  assert inputs.STREAMING_DATASETS == streaming.DATASETS
