"""Resume after what a crash or a damaged disk leaves behind (issue 14, part 2): a damaged newest checkpoint
(fall back to the newest intact one, with a warning), a torn last line in metrics.jsonl, a run killed before
its first checkpoint, temp dirs of killed saves. Each resumed run ends with the same final model, byte for
byte, as the uninterrupted run, and with one metrics line per step."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from reinforcepp.cli import main
from tiny_runs import finished_run, three_steps

ROOT = Path(__file__).resolve().parents[2]
STEP1, STEP2 = "checkpoints/step_00000001", "checkpoints/step_00000002"
FINAL_WEIGHTS = "final/model.safetensors"


@pytest.fixture(scope="module")
def uninterrupted(tiny_dir, prompt_file, tmp_path_factory):
    return finished_run(tmp_path_factory.mktemp("uninterrupted"), tiny_dir, prompt_file)


@pytest.fixture
def resume(tiny_dir, prompt_file):
    """`reinforcepp train --resume RUN` of the same 3-step config; returns the exit code."""

    def run_it(run: Path) -> int:
        return main([*three_steps(tiny_dir, prompt_file, run), "--resume", str(run)])

    return run_it


def copy_of(run: Path, tmp_path: Path) -> Path:
    copy = Path(shutil.copytree(run, tmp_path / "run"))
    shutil.rmtree(copy / "final")
    return copy


def metric_steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def same_final_model(run: Path, reference: Path) -> bool:
    return (run / FINAL_WEIGHTS).read_bytes() == (reference / FINAL_WEIGHTS).read_bytes()


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def damage(file: Path) -> None:
    with file.open("r+b") as f:
        f.seek(file.stat().st_size // 2)
        f.write(b"\xff" * 32)


def test_a_damaged_newest_checkpoint_falls_back_to_the_intact_one(uninterrupted, resume, tmp_path, caplog):
    run = copy_of(uninterrupted, tmp_path)
    damage(run / STEP2 / "policy.safetensors")
    assert resume(run) == 0
    (warning,) = [w for w in warnings_of(caplog) if "ckpt.resume" in w]
    assert str(run / STEP2 / "policy.safetensors") in warning and "checksum mismatch" in warning
    assert f"resuming from the earlier intact checkpoint {run / STEP1}" in warning
    assert metric_steps(run) == [1, 2, 3]
    assert same_final_model(run, uninterrupted)


def test_a_torn_last_metrics_line_is_dropped_with_a_warning(uninterrupted, resume, tmp_path, caplog):
    run = copy_of(uninterrupted, tmp_path)
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 4, "reward/me')  # a kill mid-write (here after the last step: the file's end)
    assert resume(run) == 0
    assert any("metrics.jsonl:4: dropped a partial last line" in w for w in warnings_of(caplog))
    assert metric_steps(run) == [1, 2, 3]
    assert same_final_model(run, uninterrupted)


def test_resume_of_a_run_killed_before_its_first_checkpoint_starts_at_step_0(uninterrupted, resume, tmp_path,
                                                                               caplog):
    run = copy_of(uninterrupted, tmp_path)
    shutil.rmtree(run / "checkpoints")
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text(lines[0] + "\n")  # it had logged step 1
    assert resume(run) == 0
    assert any("holds no complete checkpoint yet" in w and "starting from step 0" in w for w in warnings_of(caplog))
    assert metric_steps(run) == [1, 2, 3]
    assert same_final_model(run, uninterrupted)


def test_temp_dirs_of_killed_saves_are_removed_at_start(uninterrupted, resume, tmp_path, caplog):
    run = copy_of(uninterrupted, tmp_path)
    child = subprocess.Popen(["true"])
    child.wait()  # its pid is the pid of a dead process, as a killed run's is
    stale = [run / f".tmp-final-{child.pid}-0123abcd", run / "checkpoints" / f".tmp-step_00000003-{child.pid}-aa11bb22"]
    for folder in stale:
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"half")
    other = run / "checkpoints" / f".tmp-step_00000009-{os.getppid()}-00000000"  # a live process's: kept
    other.mkdir()
    assert resume(run) == 0
    assert not any(folder.exists() for folder in stale)
    assert other.is_dir()
    for folder in stale:
        assert f"removed {folder}, left by an interrupted save" in warnings_of(caplog)


@pytest.mark.slow
def test_the_fallback_warning_reaches_the_terminal(uninterrupted, tiny_dir, prompt_file, tmp_path):
    """Never silent: the real command prints the fallback on stderr (Python's last-resort log handler)."""
    run = copy_of(uninterrupted, tmp_path)
    damage(run / STEP2 / "actor_optimizer.pt")
    # the thread count the in-process runs trained with: a reduction split otherwise is not bitwise the same
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(torch.get_num_threads())}
    result = subprocess.run([sys.executable, "-m", "reinforcepp", *three_steps(tiny_dir, prompt_file, run),
                             "--resume", str(run)], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"{run / STEP2 / 'actor_optimizer.pt'}: checksum mismatch" in result.stderr
    assert same_final_model(run, uninterrupted)
