"""The kill -9 matrix (benchmarks/kill_matrix.py): SIGKILL `python -m reinforcepp train` 20 times at seeded
random moments, mid-save included, resume after each kill, and lose nothing.

Three chains share the kills (a run is killed, resumed, killed again ..., then resumed to the end), two at a time:
after each kill every complete checkpoint must be byte-equal to the uninterrupted run's of its step, and at the
end of each chain the final model and every step's metrics must be bitwise equal to it. The counts are evidence
(a kill is mid-save when the killed process left a checkpoint or export temp dir behind), so the thresholds keep
margin for moments that a loaded machine makes land elsewhere: 9 to 12 kills of 20 (or 22) landed mid-save in five
runs here, at least 5 are required. A launch that ends before its moment came is resumed and given another moment
(benchmarks/kill_matrix.py: MAX_MISSED), so all 20 kills are delivered.
"""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "kill_matrix.py"
_spec = importlib.util.spec_from_file_location("benchmarks_kill_matrix", _PATH)
matrix = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = matrix  # dataclasses look their module up there
_spec.loader.exec_module(matrix)


@pytest.mark.slow
def test_kill_9_at_seeded_moments_loses_nothing(tiny_dir, prompt_file, tmp_path):
    reward = tmp_path / "varied.py"
    reward.write_text(matrix.VARIED_REWARD)
    setup = matrix.Setup(model=tiny_dir, prompts=prompt_file, reward=reward, work=tmp_path, steps=10, seed=0)
    result = matrix.run_matrix(setup, kills=20, chains=3, workers=2)
    counts = result.summary()
    print("\n".join(f"{key}: {value}" for key, value in counts.items()))

    reference = result.reference.out / "checkpoints"
    first, last = ((reference / f"step_{s:08d}" / "policy.safetensors").read_bytes() for s in (1, 9))
    assert first != last  # the weights move, so equal checkpoints mean something

    assert result.problems() == []
    assert counts["kills delivered"] == 20, counts
    assert counts["kills mid-save"] >= 5, counts
    assert counts["resumes"] >= counts["kills delivered"]  # every kill was followed by a resume
    assert counts["resumes with --resume DIR"] >= 1 and counts["resumes"] > counts["resumes with --resume DIR"]
    assert counts["runs to the end"] == counts["final models bitwise equal"] == counts["metrics bitwise equal"] == 3
    assert counts["checkpoints checked"] >= counts["kills delivered"]
    assert counts["corrupt or different checkpoints"] == 0


def test_the_checks_see_one_flipped_byte_an_unloadable_rng_state_and_a_changed_metric(tmp_path):
    """The matrix's comparisons must be able to fail: a checkpoint that differs in one byte, an rng.pt that does
    not load, a missing file, a metric that differs (wall-clock metrics apart)."""
    import torch

    expected, copy = tmp_path / "expected", tmp_path / "copy"
    for folder in (expected, copy):
        folder.mkdir()
        (folder / "policy.safetensors").write_bytes(bytes(range(256)))
        torch.save({"torch": torch.get_rng_state()}, folder / matrix.RNG_FILE)
    assert matrix.differences(copy, expected) == []

    (copy / "policy.safetensors").write_bytes(bytes([255, *range(1, 256)]))
    (copy / matrix.RNG_FILE).write_bytes(b"\xff" * 32)
    problems = matrix.differences(copy, expected)
    assert len(problems) == 2 and "policy.safetensors: differs from" in problems[0], problems
    assert "rng.pt: does not load" in problems[1], problems
    (copy / matrix.RNG_FILE).unlink()
    assert "files ['policy.safetensors'], expected" in matrix.differences(copy, expected)[0]

    rows = [{"step": 1, "reward/mean": 0.5}, {"step": 2, "reward/mean": 0.25}]
    (tmp_path / "metrics.jsonl").write_text("".join(
        json.dumps({**row, "timing/step": 0.1 * row["step"], "perf/peak_rss_mb": 300.0}) + "\n" for row in rows))
    logged = matrix.metrics_rows(tmp_path)
    assert matrix.metrics_difference(logged, rows) == ""
    assert matrix.metrics_difference(logged, [rows[0], {"step": 2, "reward/mean": 0.3}]) == (
        "step 2: reward/mean = 0.25, expected 0.3")
    assert matrix.metrics_difference(logged[:1], rows) == "steps [1], expected [1, 2]"


def test_the_moments_are_drawn_from_the_seed():
    reference = matrix.Reference(out=Path("unused"), startup_s=4.0, step_s=0.05, checkpoint_files=("COMPLETE",),
                                 final_files=("model.safetensors",))

    def draws(seed):
        rng = matrix.random.Random(seed)
        return [(start, matrix.choose_moment(rng, start, 10, reference)) for start in (0, 3, 9) * 10]

    assert draws("0-1") == draws("0-1") != draws("0-2")
    moments = draws("0-1")
    assert {m.mode for _, m in moments} == set(matrix.MODES)
    # a save moment names a checkpoint this launch will write: after the one it resumed from, before the last step
    assert all(start < m.step < 10 for start, m in moments if m.mode == "save")
    assert all(m.delay_s <= (4.0 if m.mode == "startup" else 0.05 * (10 - start)) for start, m in moments)


def test_a_kill_takes_the_processes_in_sessions_of_their_own_too(tmp_path):
    """torchrun starts its workers in new sessions: killing the launch's process group would leave them running."""
    child_pid = tmp_path / "child.pid"
    script = ("import subprocess, sys, time\n"
              "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], start_new_session=True)\n"
              f"open({str(child_pid)!r}, 'w').write(str(child.pid))\n"
              "time.sleep(60)\n")
    launch = matrix.start([sys.executable, "-c", script], tmp_path / "log.txt")
    assert matrix.wait_until(launch, lambda: child_pid.exists() and child_pid.read_text() != "", poll_s=0.01)
    child = int(child_pid.read_text())
    assert matrix.alive(child)
    matrix.kill(launch)
    assert launch.wait(timeout=10) == -matrix.signal.SIGKILL
    assert not matrix.alive(child)
