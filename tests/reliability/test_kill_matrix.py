"""The kill -9 matrix (benchmarks/kill_matrix.py): SIGKILL `python -m reinforcepp train` 22 times at seeded
random moments, mid-save included, resume after each kill, and lose nothing.

Four chains share the kills (a run is killed, resumed, killed again ..., then resumed to the end), two at a time:
after each kill every complete checkpoint must be byte-equal to the uninterrupted run's of its step, and at the
end of each chain the final model and every step's metrics must be bitwise equal to it. The counts are evidence
(a kill is mid-save when the killed process left a checkpoint or export temp dir behind), so the thresholds keep
margin for a moment that a loaded machine makes land elsewhere: of 22 drawn moments, 11 are drawn inside a save.
"""

import importlib.util
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "kill_matrix.py"
_spec = importlib.util.spec_from_file_location("benchmarks_kill_matrix", _PATH)
matrix = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = matrix  # dataclasses look their module up there
_spec.loader.exec_module(matrix)

pytestmark = pytest.mark.slow


def test_kill_9_at_seeded_moments_loses_nothing(tiny_dir, prompt_file, tmp_path):
    reward = tmp_path / "varied.py"
    reward.write_text(matrix.VARIED_REWARD)
    setup = matrix.Setup(model=tiny_dir, prompts=prompt_file, reward=reward, work=tmp_path, steps=10, seed=0)
    result = matrix.run_matrix(setup, kills=22, chains=4, workers=2)
    counts = result.summary()
    print("\n".join(f"{key}: {value}" for key, value in counts.items()))

    reference = result.reference.out / "checkpoints"
    first, last = ((reference / f"step_{s:08d}" / "policy.safetensors").read_bytes() for s in (1, 9))
    assert first != last  # the weights move at every step, so equal checkpoints mean something

    assert result.problems() == []
    assert counts["kills delivered"] >= 20, counts
    assert counts["kills mid-save"] >= 5, counts
    assert counts["resumes"] >= counts["kills delivered"]  # every kill was followed by a resume
    assert counts["resumes with --resume DIR"] >= 1 and counts["resumes"] > counts["resumes with --resume DIR"]
    assert counts["runs to the end"] == counts["final models bitwise equal"] == counts["metrics bitwise equal"] == 4
    assert counts["checkpoints checked"] >= counts["kills delivered"]
    assert counts["corrupt or different checkpoints"] == 0
