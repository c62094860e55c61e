"""One persistent XLA cache for every CLI subprocess of the reliability tests."""

import pytest


@pytest.fixture(scope='session')
def xla_cache(tmp_path_factory):
  return tmp_path_factory.mktemp('xla_cache')
