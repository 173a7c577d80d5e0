"""threads: torch's CPU threads, set and printed at start-up; the default is the cores this process may use."""

import pytest
import torch

from reinforcepp import threads
from reinforcepp.threads import apply_threads, default_threads


@pytest.fixture(autouse=True)
def keep_torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_a_set_count_is_applied_and_printed(capsys):
    assert apply_threads(3) == 3
    assert torch.get_num_threads() == 3
    assert capsys.readouterr().out == "threads: 3 (threads; set threads=N to change)\n"


def test_the_default_is_omp_num_threads_when_set(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    assert default_threads() == (5, "OMP_NUM_THREADS")


def test_the_default_is_the_affinity_shared_among_local_ranks(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6}, raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert default_threads() == (7, "the 7 cores this process may use")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert default_threads() == (3, "7 cores this process may use / 2 local ranks")


def test_none_applies_the_default_quietly_when_asked(monkeypatch, capsys):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert apply_threads(None, announce=False) == 2 and torch.get_num_threads() == 2
    assert capsys.readouterr().out == ""
