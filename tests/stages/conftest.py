"""A tiny local model shared by the stage tests."""

import pytest

from reinforcepp.testing import save_tiny_checkpoint


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "model")
