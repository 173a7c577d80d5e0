"""The bad-input matrix: every bad input a careful tester tried (issue 14, parts 2 and 5) ends with exit code 2
and one stderr line that starts with "error:" and names the culprit (file, field, line, function), never a
traceback. Most cases stop before any model loads; those that need a training start use the tiny model and
one step. They run in-process (`reinforcepp.cli.main`, stderr from capsys); `test_subprocess_matches` runs a
few as `python -m reinforcepp` to show the real command prints the same.

Warnings: a case may print warning lines besides its error (Python's last-resort log handler prints them
bare); such cases list what their warning says in `warns`, every other case must print exactly one line.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from reinforcepp.cli import main
from tiny_runs import finished_run, tiny_run

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Ctx:
    """What a case builds its input from: the session's tiny model and prompts, a fresh folder."""

    model: Path
    prompts: Path
    tmp: Path
    trained: Path  # a finished 3-step run with checkpoints at steps 1 and 2 (copy before damaging it)

    def file(self, name: str, text: str | bytes) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
        return path

    def train(self, *overrides: str) -> list[str]:
        """`reinforcepp train` of one tiny step, the overrides last (they win)."""
        return ["train", *tiny_run(self.model, self.prompts, self.tmp / "run"), *overrides]

    def model_copy(self, name: str) -> Path:
        return Path(shutil.copytree(self.model, self.tmp / name))

    def run_copy(self) -> Path:
        return Path(shutil.copytree(self.trained, self.tmp / "copied-run"))


@dataclass
class Case:
    build: Callable[[Ctx], list[str]]  # the argv
    culprit: Callable[[Ctx], list[str]]  # what the error line must name
    warns: tuple[str, ...] = ()  # what an allowed warning line says


CASES: dict[str, Case] = {}


def case(name: str, culprit: Callable[[Ctx], list[str]] | list[str], warns: tuple[str, ...] = ()):
    def register(build: Callable[[Ctx], list[str]]) -> Callable[[Ctx], list[str]]:
        CASES[name] = Case(build, culprit if callable(culprit) else (lambda c, names=culprit: names), warns)
        return build

    return register


def reward_file(c: Ctx, body: str, name: str = "reward.py") -> str:
    return f"reward.function={c.file(name, body)}"


def prompts_file(c: Ctx, text: str | bytes, name: str = "prompts.jsonl") -> str:
    return f"data.prompts={c.file(name, text)}"


def damage(path: Path, how: str) -> None:
    """truncate: keep the first 100 bytes; empty: 0 bytes; ff: overwrite 32 bytes in the middle with 0xff."""
    if how == "truncate":
        os.truncate(path, 100)
    elif how == "empty":
        os.truncate(path, 0)
    else:
        with path.open("r+b") as f:
            f.seek(path.stat().st_size // 2)
            f.write(b"\xff" * 32)


STEP1, STEP2 = "checkpoints/step_00000001", "checkpoints/step_00000002"

# --- config: keys, types, values, overrides, files ----------------------------------------------------

case("typo in a section name", ["trian"])(lambda c: c.train("trian.num_steps=1"))
case("typo in a key", ["train.num_step", "did you mean"])(lambda c: c.train("train.num_step=1"))
case("string for an int", ["train.num_steps", "abc"])(lambda c: c.train("train.num_steps=abc"))
case("float for an int", ["rollout.batch_size"])(lambda c: c.train("rollout.batch_size=2.5"))
case("negative steps", ["train.num_steps"])(lambda c: c.train("train.num_steps=-1"))
case("zero batch size", ["rollout.batch_size"])(lambda c: c.train("rollout.batch_size=0"))
case("zero micro-batch", ["train.micro_batch_size"])(lambda c: c.train("train.micro_batch_size=0"))
case("negative learning rate", ["actor.optim.lr"])(lambda c: c.train("actor.optim.lr=-1"))
case("zero max_new_tokens", ["rollout.max_new_tokens"])(lambda c: c.train("rollout.max_new_tokens=0"))
case("top_p above 1", ["rollout.top_p"])(lambda c: c.train("rollout.top_p=2"))
case("zero checkpoints kept", ["ckpt.keep"])(lambda c: c.train("ckpt.keep=0"))
case("unknown estimator", ["algo.advantage.estimator"])(lambda c: c.train("algo.advantage.estimator=bogus"))
case("unknown dtype", ["model.dtype"])(lambda c: c.train("model.dtype=float13"))
case("override without =", ["train.num_steps", "dotted.key=value"])(lambda c: c.train("train.num_steps"))
case("override with an empty key part", ["train..num_steps"])(lambda c: c.train("train..num_steps=1"))
case("override value not YAML", ["train.num_steps=[1", "YAML"])(lambda c: c.train("train.num_steps=[1"))
case("a setting used as a section", ["seed.x=1", "seed is a setting"])(lambda c: c.train("seed.x=1"))
case("a section given a number", ["train"])(lambda c: c.train("train=3"))
case("config file missing", lambda c: [str(c.tmp / "nope.yaml")])(
    lambda c: ["train", "--config", str(c.tmp / "nope.yaml")])
case("unknown preset name", ["grpoo"])(lambda c: ["config", "--config", "grpoo"])
case("bad YAML config", lambda c: [str(c.tmp / "bad.yaml"), "line 3, column 5"])(
    lambda c: ["config", "--config", str(c.file("bad.yaml", "train:\n  num_steps: [1\nseed: 3\n"))])
case("YAML config that is a list", lambda c: [str(c.tmp / "list.yaml"), "mapping"])(
    lambda c: ["config", "--config", str(c.file("list.yaml", "- train\n- seed\n"))])
case("config key typo in a file", ["rollout.n_sample_per_prompt"])(
    lambda c: ["train", "--config", str(c.file("typo.yaml", "rollout:\n  n_sample_per_prompt: 4\n"))])
case("no policy model", ["model.policy"])(lambda c: c.train("model.policy=null"))
case("no prompts", ["data.prompts"])(lambda c: c.train("data.prompts=null"))
case("no reward source", ["reward.function"])(lambda c: c.train("reward.function=null"))
case("compare seeds not integers", ["--seeds", "abc"])(
    lambda c: ["compare", "--config", str(c.file("c.yaml", "seed: 1\n")), "--presets", "grpo", "--seeds", "abc"])
case("compare unknown preset", ["nosuchpreset"])(
    lambda c: ["compare", "--config", str(c.file("c.yaml", "seed: 1\n")), "--presets", "nosuchpreset"])
case("report of a folder that is no run", lambda c: [str(c.tmp)])(lambda c: ["report", str(c.tmp)])

# --- prompt data ---------------------------------------------------------------------------------------

case("prompt file missing", lambda c: [str(c.tmp / "missing.jsonl")])(
    lambda c: c.train(f"data.prompts={c.tmp / 'missing.jsonl'}"))
case("empty-string prompt", lambda c: [f"{c.tmp / 'prompts.jsonl'}:2", "empty prompt"])(
    lambda c: c.train(prompts_file(c, '{"prompt": "ab"}\n{"prompt": ""}\n')))
case("whitespace-only prompt", lambda c: [f"{c.tmp / 'prompts.jsonl'}:1", "empty prompt"])(
    lambda c: c.train(prompts_file(c, '{"prompt": "   "}\n{"prompt": "ab"}\n')))
case("all prompts empty", lambda c: [f"{c.tmp / 'prompts.jsonl'}:1", "empty prompt"])(
    lambda c: c.train(prompts_file(c, '{"prompt": ""}\n{"prompt": ""}\n')))
case("prompt file empty", lambda c: [str(c.tmp / "prompts.jsonl"), "no prompts"])(
    lambda c: c.train(prompts_file(c, "")))
case("prompt file of blank lines", lambda c: [str(c.tmp / "prompts.jsonl"), "no prompts"])(
    lambda c: c.train(prompts_file(c, "\n\n  \n")))
case("JSONL row not JSON", lambda c: [f"{c.tmp / 'prompts.jsonl'}:2", "not valid JSON"])(
    lambda c: c.train(prompts_file(c, '{"prompt": "ab"}\n{"prompt": "x"\n')))
case("JSONL row a list", lambda c: [f"{c.tmp / 'prompts.jsonl'}:1"])(
    lambda c: c.train(prompts_file(c, '["ab"]\n')))
case("JSONL row without prompt key", lambda c: [f"{c.tmp / 'prompts.jsonl'}:1", "'prompt'"])(
    lambda c: c.train(prompts_file(c, '{"question": "ab"}\n')))
case("prompt a number", lambda c: [f"{c.tmp / 'prompts.jsonl'}:1", "'prompt'"])(
    lambda c: c.train(prompts_file(c, '{"prompt": 7}\n')))
case("prompt_key not in the file", lambda c: [f"{c.prompts}:1", "'question'"])(
    lambda c: c.train("data.prompt_key=question"))
case("prompt file not UTF-8", lambda c: [f"{c.tmp / 'prompts.jsonl'}:2", "UTF-8"])(
    lambda c: c.train(prompts_file(c, b'{"prompt": "ab"}\n{"prompt": "caf\xe9"}\n')))
case("parquet file missing", lambda c: [str(c.tmp / "p.parquet")])(
    lambda c: c.train(f"data.prompts={c.tmp / 'p.parquet'}"))
case("every prompt too long", ["data.max_prompt_len=2"], warns=("skipped",))(
    lambda c: c.train(prompts_file(c, '{"prompt": "abc"}\n{"prompt": "hello"}\n'), "data.max_prompt_len=2"))
case("eval prompt file missing", lambda c: [str(c.tmp / "eval.jsonl")])(
    lambda c: c.train(f"data.eval_prompts={c.tmp / 'eval.jsonl'}"))
case("eval prompt file with an empty prompt", lambda c: [f"{c.tmp / 'eval.jsonl'}:1", "empty prompt"])(
    lambda c: c.train(f"data.eval_prompts={c.file('eval.jsonl', json.dumps({'prompt': ''}) + chr(10))}"))
case("eval command without eval prompts", ["data.eval_prompts"])(
    lambda c: ["eval", *tiny_run(c.model, c.prompts, c.tmp / "run"), "data.prompts=null"])
case("eval command, eval file bad JSON", lambda c: [f"{c.tmp / 'eval.jsonl'}:1"])(
    lambda c: ["eval", *tiny_run(c.model, c.prompts, c.tmp / "run"), f"data.eval_prompts={c.file('eval.jsonl', '{')}"])
case("sft data file missing", lambda c: [str(c.tmp / "sft.jsonl")])(
    lambda c: ["sft", f"model.policy={c.model}", f"sft.data={c.tmp / 'sft.jsonl'}", f"output_dir={c.tmp / 'sft'}"])

# --- the reward function -------------------------------------------------------------------------------

case("reward file missing", lambda c: [str(c.tmp / "nope.py")])(
    lambda c: c.train(f"reward.function={c.tmp / 'nope.py'}"))
case("reward file syntax error", lambda c: [f"{c.tmp / 'reward.py'}:2", "syntax error"])(
    lambda c: c.train(reward_file(c, "def reward_func(completions, **kw):\n    return [1.0 for c in completions\n")))
case("reward file raises on import", lambda c: [f"{c.tmp / 'reward.py'}:2", "KeyError", "HOME_DIR"])(
    lambda c: c.train(reward_file(c, "import os\nROOT = os.environ['HOME_DIR']\ndef reward_func(**kw):\n    pass\n")))
case("reward file imports a missing module", lambda c: [f"{c.tmp / 'reward.py'}:1", "nosuchmodule"])(
    lambda c: c.train(reward_file(c, "import nosuchmodule\n")))
case("reward file without the function", lambda c: [str(c.tmp / "reward.py"), "'reward_func'"])(
    lambda c: c.train(reward_file(c, "def score(completions, **kw):\n    return [0.0] * len(completions)\n")))
case("reward name not callable", lambda c: [str(c.tmp / "reward.py"), "'reward_func'"])(
    lambda c: c.train(reward_file(c, "reward_func = 3\n")))
case("reward module not importable", ["nosuchpkg.rewards"])(lambda c: c.train("reward.function=nosuchpkg.rewards:f"))
case("reward file fails in a helper at import", lambda c: [f"{c.tmp / 'reward.py'}:2", "ZeroDivisionError"])(
    lambda c: c.train(reward_file(c, "def scale():\n    return 1 / 0\nSCALE = scale()\n")))
case("reward function needs a missing column", ["reward_func", "'answer'"])(
    lambda c: c.train(reward_file(c, "def reward_func(completions, answer):\n    return [0.0] * len(completions)\n")))
case("reward function positional-only", ["reward_func", "positional-only"])(
    lambda c: c.train(reward_file(c, "def reward_func(completions, /):\n    return [0.0] * len(completions)\n")))
case("reward function returns None", ["reward_func", "returned None"])(
    lambda c: c.train(reward_file(c, "def reward_func(completions, **kw):\n    return None\n")))
case("reward function returns a number", ["reward_func", "returned 1.0"])(
    lambda c: c.train(reward_file(c, "def reward_func(completions, **kw):\n    return 1.0\n")))
case("reward function returns a string", ["reward_func", "returned 'good'"])(
    lambda c: c.train(reward_file(c, "def reward_func(completions, **kw):\n    return 'good'\n")))
case("reward function returns too few", ["reward_func", "returned 1 scores for 2"])(
    lambda c: c.train(reward_file(c, "def reward_func(completions, **kw):\n    return [1.0]\n")))
case("reward function returns strings", ["reward_func", "returned 'x'", "sample 0"])(
    lambda c: c.train(reward_file(c, "def reward_func(completions, **kw):\n    return ['x'] * len(completions)\n")))
case("reward function returns NaN", ["reward_func", "nan", "sample 0"])(
    lambda c: c.train(reward_file(c, "def reward_func(completions, **kw):\n    return [float('nan')] * 2\n")))
case("reward function raises", ["sample 0", "ValueError", "no answer"])(
    lambda c: c.train(reward_file(c, "def reward_func(completions, **kw):\n    raise ValueError('no answer')\n")))

# --- models --------------------------------------------------------------------------------------------

case("policy path missing", lambda c: [str(c.tmp / "no-model")])(
    lambda c: c.train(f"model.policy={c.tmp / 'no-model'}"))
case("policy path a file", lambda c: [str(c.prompts), "is a file"])(lambda c: c.train(f"model.policy={c.prompts}"))
case("model dir without config.json", lambda c: [str(c.tmp / "m"), "config.json"])(
    lambda c: c.train(f"model.policy={(c.model_copy('m') / 'config.json').unlink() or c.tmp / 'm'}"))
case("model config.json not JSON", lambda c: [str(c.tmp / "m")])(
    lambda c: c.train(f"model.policy={(c.model_copy('m') / 'config.json').write_text('{') and c.tmp / 'm'}"))
case("truncated model.safetensors", lambda c: [str(c.tmp / "m" / "model.safetensors"), "truncated"])(
    lambda c: c.train(f"model.policy={damage(c.model_copy('m') / 'model.safetensors', 'truncate') or c.tmp / 'm'}"))
case("zero-size model.safetensors", lambda c: [str(c.tmp / "m" / "model.safetensors"), "empty"])(
    lambda c: c.train(f"model.policy={damage(c.model_copy('m') / 'model.safetensors', 'empty') or c.tmp / 'm'}"))
case("tokenizer missing", lambda c: [str(c.tmp / "m"), "tokenizer"])(
    lambda c: c.train(f"model.policy={remove_tokenizer(c.model_copy('m'))}"))
case("reference model missing", lambda c: [str(c.tmp / "no-ref")])(
    lambda c: c.train(f"model.reference={c.tmp / 'no-ref'}", "algo.kl.coef=0.1"))
case("gguf file not in the model dir", ["missing.gguf"])(lambda c: c.train("model.gguf_file=missing.gguf"))


def remove_tokenizer(directory: Path) -> Path:
    for file in directory.iterdir():
        if "token" in file.name or file.suffix == ".jinja":
            file.unlink()
    return directory


# --- output_dir and checkpoints ------------------------------------------------------------------------

case("output_dir under a regular file", lambda c: [str(c.prompts), "is a file"])(
    lambda c: c.train(f"output_dir={c.prompts / 'run'}"))
case("output_dir is a regular file", lambda c: [str(c.prompts), "is a file"])(
    lambda c: c.train(f"output_dir={c.prompts}"))
case("fresh run into a run with checkpoints", lambda c: [str(c.tmp / "copied-run"), "ckpt.resume"])(
    lambda c: c.train(f"output_dir={c.run_copy()}"))
case("resume from a missing folder", lambda c: [str(c.tmp / "gone")])(
    lambda c: [*c.train(), "--resume", str(c.tmp / "gone")])
case("resume: policy.safetensors truncated",
     lambda c: [str(c.tmp / "copied-run" / STEP2 / "policy.safetensors"), "truncated",
                str(c.tmp / "copied-run" / STEP1)])(
    lambda c: resume_damaged(c, STEP2, "policy.safetensors", "truncate"))
case("resume: policy.safetensors empty",
     lambda c: [str(c.tmp / "copied-run" / STEP2 / "policy.safetensors"), "empty file"])(
    lambda c: resume_damaged(c, STEP2, "policy.safetensors", "empty"))
case("resume: 32 bytes of policy.safetensors set to 0xff",
     lambda c: [str(c.tmp / "copied-run" / STEP2 / "policy.safetensors"), "checksum"])(
    lambda c: resume_damaged(c, STEP2, "policy.safetensors", "ff"))
case("resume: optimizer state damaged", lambda c: [str(c.tmp / "copied-run" / STEP2 / "actor_optimizer.pt")])(
    lambda c: resume_damaged(c, STEP2, "actor_optimizer.pt", "ff"))
case("resume: meta.json damaged", lambda c: [str(c.tmp / "copied-run" / STEP2 / "meta.json")])(
    lambda c: resume_damaged(c, STEP2, "meta.json", "truncate"))
case("resume: every checkpoint of the run damaged",
     lambda c: [str(c.tmp / "copied-run" / STEP2 / "policy.safetensors"), "no earlier intact checkpoint"])(
    lambda c: resume_all_damaged(c))
case("resume: NaN weights with matching checksums", lambda c: [str(c.tmp / "copied-run" / STEP2), "non-finite"])(
    lambda c: resume_nan_weights(c))
case("resume: metrics.jsonl damaged mid-file", lambda c: [f"{c.tmp / 'copied-run' / 'metrics.jsonl'}:1"])(
    lambda c: resume_metrics_damaged(c))


def resume_damaged(c: Ctx, step: str, name: str, how: str) -> list[str]:
    run = c.run_copy()
    damage(run / step / name, how)
    return [*c.train(f"output_dir={run}", "train.num_steps=3"), "--resume", str(run / step)]


def resume_all_damaged(c: Ctx) -> list[str]:
    run = c.run_copy()
    for step in (STEP1, STEP2):
        damage(run / step / "policy.safetensors", "ff")
    return [*c.train(f"output_dir={run}", "train.num_steps=3"), "--resume", str(run)]


def resume_nan_weights(c: Ctx) -> list[str]:
    """A checkpoint whose weights are NaN but whose checksums match (as if NaN had been saved)."""
    from safetensors.torch import load_file, save_file

    from reinforcepp.train.checkpoint import sha256_of

    run = c.run_copy()
    file = run / STEP2 / "policy.safetensors"
    weights = load_file(file)
    first = sorted(weights)[0]
    weights[first] = weights[first] * float("nan")
    save_file(weights, file)
    meta = json.loads((run / STEP2 / "meta.json").read_text())
    meta["sha256"]["policy.safetensors"] = sha256_of(file)
    (run / STEP2 / "meta.json").write_text(json.dumps(meta))
    return [*c.train(f"output_dir={run}", "train.num_steps=3"), "--resume", str(run / STEP2)]


def resume_metrics_damaged(c: Ctx) -> list[str]:
    run = c.run_copy()
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join(["{garbage", *lines[1:]]) + "\n")
    return [*c.train(f"output_dir={run}", "train.num_steps=3"), "--resume", str(run)]


# --- the runner ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tiny_dir, prompt_file, tmp_path_factory):
    return finished_run(tmp_path_factory.mktemp("trained"), tiny_dir, prompt_file)


@pytest.fixture
def ctx(tiny_dir, prompt_file, tmp_path, trained) -> Ctx:
    return Ctx(model=tiny_dir, prompts=prompt_file, tmp=tmp_path, trained=trained)


def check_one_line(rc: int, err: str, culprits: list[str], warns: tuple[str, ...] = ()) -> str:
    """The matrix's contract; returns the error line."""
    assert rc == 2, err
    assert "Traceback" not in err, err
    lines = err.splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, err
    others = [line for line in lines if line not in errors]
    assert all(any(w in line for w in warns) for line in others), err
    for culprit in culprits:
        assert culprit in errors[0], f"{culprit!r} not named in {errors[0]!r}"
    return errors[0]


@pytest.mark.parametrize("name", CASES)
def test_bad_input_is_one_line(name, ctx, capsys):
    argv = CASES[name].build(ctx)
    capsys.readouterr()  # what building the case printed
    rc = main(argv)
    check_one_line(rc, capsys.readouterr().err, CASES[name].culprit(ctx), CASES[name].warns)


def test_the_matrix_is_large_enough():
    assert len(CASES) >= 60


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder on a read-only bind mount (root ignores permission bits, not a read-only mount)."""
    target = tmp_path / "ro"
    target.mkdir()
    mounted = subprocess.run(["mount", "--bind", "-o", "ro", str(target), str(target)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot make a read-only bind mount here: {mounted.stderr.decode().strip()}")
    yield target
    subprocess.run(["umount", str(target)], check=True)


def test_output_dir_on_a_read_only_file_system(ctx, read_only_dir, capsys):
    rc = main(ctx.train(f"output_dir={read_only_dir / 'run'}"))
    line = check_one_line(rc, capsys.readouterr().err, [str(read_only_dir / "run"), "output_dir"])
    assert "Read-only file system" in line


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MiB tmpfs: room for the run and one checkpoint once a filler file takes the rest."""
    target = tmp_path / "disk"
    target.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(target)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield target
    subprocess.run(["umount", str(target)], check=True)


FILL_DISK_ON_SECOND_CALL = """
import os, shutil
calls = []
def reward_func(completions, **kw):
    calls.append(1)
    if len(calls) == 2:  # step 2: leave room for a metrics line, not for a checkpoint
        disk = {disk!r}
        free = shutil.disk_usage(disk).free
        with open(os.path.join(disk, "filler"), "wb") as f:
            f.write(bytes(free - 64 * 1024))
    return [float(c.count("a")) for c in completions]
"""


def test_full_disk_at_checkpoint_time(ctx, small_disk, capsys):
    """The step-2 checkpoint finds the disk full: one line naming it, the step-1 checkpoint and
    metrics.jsonl intact, no temp dir left."""
    from reinforcepp.train.checkpoint import checkpoint_problem

    run = small_disk / "run"
    fill = reward_file(ctx, FILL_DISK_ON_SECOND_CALL.format(disk=str(small_disk)))
    rc = main(ctx.train(f"output_dir={run}", "train.num_steps=3", "ckpt.every=1", fill))
    line = check_one_line(rc, capsys.readouterr().err, ["disk full", str(run / STEP2)])
    assert "intact" in line
    assert checkpoint_problem(run / STEP1) is None
    assert [json.loads(row)["step"] for row in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".tmp-")]


SUBPROCESS_CASES = ["bad YAML config", "empty-string prompt", "reward file syntax error", "truncated model.safetensors",
                    "resume: 32 bytes of policy.safetensors set to 0xff"]


@pytest.mark.slow
@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_subprocess_matches(name, ctx, capsys):
    """`python -m reinforcepp` prints what the in-process call printed."""
    argv = CASES[name].build(ctx)
    rc = main(argv)
    in_process = check_one_line(rc, capsys.readouterr().err, CASES[name].culprit(ctx))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "reinforcepp", *argv], capture_output=True, text=True, env=env,
                            cwd=ctx.tmp, timeout=300)
    assert check_one_line(result.returncode, result.stderr, CASES[name].culprit(ctx)) == in_process
