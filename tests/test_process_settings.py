"""Importing reinforcepp before torch turns on PyTorch's huge-page allocation (Linux); a user's value wins."""

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="transparent huge pages are a Linux feature")

PROBE = "import reinforcepp, os; print(os.environ.get('THP_MEM_ALLOC_ENABLE'))"


def probe(code, **env):
    base = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    out = subprocess.run([sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_set_when_reinforcepp_comes_first():
    assert probe(PROBE) == "1"


def test_the_users_value_wins():
    assert probe(PROBE, THP_MEM_ALLOC_ENABLE="0") == "0"


def test_left_alone_when_torch_is_already_loaded():
    assert probe("import torch; " + PROBE) == "None"
