"""Throughput of the offline tasks and rewards: K&K generation, HumanEval in the sandbox, math grading
(numeric shortcut and math-verify workers), sandbox start-up, remote-reward round trips.

Usage: .venv/bin/python benchmarks/reward_throughput.py   (the math part reads ../shared/data/gsm8k_test.jsonl)
"""

import json
import statistics
import time
from pathlib import Path

from reinforcepp.rewards.code import code_reward, load_humaneval
from reinforcepp.rewards.math_answers import math_reward
from reinforcepp.rewards.remote import RemoteRewardFunction, RewardServer
from reinforcepp.rewards.sandbox import run_in_sandbox
from reinforcepp.tasks.knights_knaves import generate_puzzles

GSM8K = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k_test.jsonl"


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def knights_and_knaves() -> None:
    for n in (3, 8):
        puzzles, dt = timed(lambda: generate_puzzles(n, 200, seed=5))
        print(f"kk people={n}: {len(puzzles) / dt:.0f} unique puzzles/s")


def humaneval() -> None:
    rows = load_humaneval()
    scores, dt = timed(lambda: code_reward(
        [r["prompt"] for r in rows], [r["canonical_solution"] for r in rows],
        [r["tests"] for r in rows], [r["entry_point"] for r in rows],
    ))
    print(f"humaneval canonical solutions: {sum(scores):.0f}/{len(rows)} pass in {dt:.1f} s")


def math_grading() -> None:
    refs = [json.loads(line)["answer"] for line in GSM8K.read_text().splitlines()[:200]]
    scores, dt = timed(lambda: math_reward(None, refs, refs))
    print(f"math, numeric path: {sum(scores):.0f}/200 correct, {200 / dt:.0f} items/s")
    finals = [int(float(r.split("####")[-1].strip().replace(",", ""))) for r in refs]
    fractions = [f"so \\boxed{{\\frac{{{2 * f}}}{{2}}}}" for f in finals]  # forces math-verify
    math_reward(None, fractions[:2], refs[:2])  # start the worker
    scores, dt = timed(lambda: math_reward(None, fractions, refs))
    print(f"math, math-verify path: {sum(scores):.0f}/200 correct, {200 / dt:.0f} items/s")


def sandbox() -> None:
    run_in_sandbox("pass", timeout=5)
    times = [timed(lambda: run_in_sandbox("pass", timeout=5))[1] for _ in range(10)]
    print(f"sandbox 'pass': median {statistics.median(times) * 1000:.0f} ms over 10 runs")


def remote() -> None:
    server = RewardServer(lambda prompts, completions, **_: [float(len(c)) for c in completions])
    port = server.start_in_thread()
    fn = RemoteRewardFunction(f"http://127.0.0.1:{port}")
    try:
        for n in (1, 64):
            args = ([""] * n, ["x" * 1000] * n)
            fn(*args)
            times = [timed(lambda: fn(*args))[1] for _ in range(100)]
            print(f"remote reward, batch {n}: median {statistics.median(times) * 1000:.2f} ms over 100 calls")
    finally:
        server.shutdown()


if __name__ == "__main__":
    knights_and_knaves()
    humaneval()
    math_grading()
    sandbox()
    remote()
