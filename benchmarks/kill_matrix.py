"""The kill -9 matrix: SIGKILL ``python -m reinforcepp train`` at seeded random moments, mid-save included, resume
it, again and again, and check that nothing is lost.

A *chain* is one training run (``--steps`` steps, a checkpoint every step, ``ckpt.keep=2``): launched fresh,
killed, resumed (``--resume DIR`` or ``ckpt.resume=true``, drawn; ``ckpt.resume=true`` while no checkpoint is
complete, since ``--resume DIR`` refuses an empty run today), killed again ... then resumed to the end. Each kill
lands at a moment drawn from the chain's seeded RNG, one of:
    startup  a uniform time in the launch's start-up (imports, model loading): 0 .. the reference's start-up;
    train    a uniform time in its training phase (restore, steps, saves, the final export), from the moment it
             wrote config.yaml: 0 .. the reference's time per step x the steps left;
    save     the moment a checkpoint temp dir of a step >= s holds a given file (drawn from the checkpoint's
             files, or the bare dir), polled every 0.5 ms;
    final    the moment the final export's temp dir holds a given file.
The first kill of chain 0 is a train moment in the first half of step 1, so one kill surely lands before any
checkpoint. After every kill, each complete checkpoint must be byte-equal to the uninterrupted reference run's
checkpoint of the same step (rng.pt apart, see below; and under torchrun DCP's .metadata, equal but for the temp
dir's path and a random save id it records), and no step_* directory may lack its COMPLETE marker. At the end of a
chain, final/ must be byte-equal to the reference's final/, and metrics.jsonl must hold each step once with the
reference's values (timing/ and perf/ apart: wall clock and memory).

Counts are evidence, not intent: a kill is *delivered* when the process died of SIGKILL, *mid-save* when it left a
checkpoint or export temp dir behind (it was inside save_checkpoint / save_hf_model, before the rename).

rng.pt: `train` does not seed the global RNGs (Python, NumPy; torch only before it builds LoRA adapters or a critic
head), and no step draws from them (each step has its own generators, seeded by (seed, step)). So rng.pt differs
between processes (a resumed run restores the checkpoint's): it is checked to load, not to equal the reference's.

Usage:
    .venv/bin/python benchmarks/kill_matrix.py --kills 60 --chains 10 --workers 2
    .venv/bin/python benchmarks/kill_matrix.py --ranks 2 --kills 6 --chains 2    (torchrun, 2 gloo ranks)
tests/reliability/test_kill_matrix.py runs a 20-kill matrix with this code.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from reinforcepp.train.checkpoint import MARKER, TMP_PREFIX, complete_checkpoints  # noqa: E402
from reinforcepp.train.state import CHECKPOINTS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RNG_FILE = "rng.pt"
FINAL = "final"
WALL_CLOCK = ("timing/", "perf/")  # metrics that differ between runs by nature
MODES = {"startup": 0.15, "train": 0.35, "save": 0.4, "final": 0.1}  # mode: probability
POLL_S = 0.0005
LAUNCH_TIMEOUT_S = 600
MAX_MISSED = 3  # launches of a chain that may end before their moment came (each is resumed, a new moment drawn)
VARIED_REWARD = (  # rewards that differ between samples from step 1, so every step moves the weights
    "def reward_func(prompts, completions, **kwargs):\n"
    "    return [float(sum(map(ord, c)) % 7) for c in completions]\n"
)


@dataclass(frozen=True)
class Setup:
    """What every launch trains: a tiny model on a few prompts, one checkpoint per step."""

    model: Path
    prompts: Path
    reward: Path
    work: Path
    preset: str = "reinforce_pp"
    steps: int = 10
    seed: int = 0
    ranks: int = 0  # 0: one process; N: torchrun with N gloo ranks
    keep: int = 2  # ckpt.keep of the killed runs (the reference keeps every checkpoint)


@dataclass(frozen=True)
class Moment:
    mode: str
    delay_s: float = 0.0  # startup / train
    step: int = 0  # save: a checkpoint of this step or a later one
    phase: str = ""  # save / final: the file whose appearance in the temp dir triggers the kill ("": the dir)


@dataclass(frozen=True)
class Reference:
    """The uninterrupted run, and its timing (which scales the random moments)."""

    out: Path
    startup_s: float
    step_s: float
    checkpoint_files: tuple[str, ...]
    final_files: tuple[str, ...]


@dataclass
class Launch:
    chain: int
    index: int
    resume: str | None  # None: a fresh run; "flag": --resume DIR; "config": ckpt.resume=true
    resumed_from: int  # the newest complete checkpoint's step when it started (0: none)
    moment: Moment | None  # None: left to run to its end
    returncode: int = 0
    seconds: float = 0.0
    delivered: bool = False
    mid_save: bool = False
    left_behind: list[str] = field(default_factory=list)  # temp dirs this launch left (evidence of mid-save)
    checkpoints_checked: int = 0
    failure: str = ""  # how it ended on its own, when neither by the kill nor with exit code 0
    problems: list[str] = field(default_factory=list)  # checkpoints it left that are incomplete or differ


@dataclass
class Chain:
    index: int
    launches: list[Launch]
    completed: bool = False
    final_equal: bool = False
    metrics_equal: bool = False
    stale_temp_dirs: list[str] = field(default_factory=list)  # temp dirs still there after the run ended
    problems: list[str] = field(default_factory=list)


# --- launching -------------------------------------------------------------------------------------------


def train_command(setup: Setup, out: Path, *, keep: int, resume: str | None = None) -> list[str]:
    overrides = [
        f"model.policy={setup.model}", f"data.prompts={setup.prompts}", f"reward.function={setup.reward}",
        "rollout.batch_size=4", "rollout.max_new_tokens=6", "train.batch_size=4", "train.micro_batch_size=2",
        f"train.num_steps={setup.steps}", "actor.optim.lr=1e-3", "critic.optim.lr=1e-3", f"seed={setup.seed}",
        "ckpt.every=1", f"ckpt.keep={keep}", "log.progress=false", "log.tensorboard=false", f"output_dir={out}",
    ]
    train = ["-m", "reinforcepp", "train", "--config", setup.preset]
    if resume == "flag":
        train += ["--resume", str(out)]
    elif resume == "config":
        overrides.append("ckpt.resume=true")
    launcher = [sys.executable]
    if setup.ranks:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={setup.ranks}"]
    return [*launcher, *train, *overrides]


def child_env() -> dict[str, str]:
    """One thread per process (the same arithmetic in every launch), this checkout's code, no torchrun leftovers."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                            "MASTER_PORT")}
    path = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}


def start(command: list[str], log: Path) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as sink:  # a file, not a pipe: nobody has to drain it while we poll
        return subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=child_env())


def kill(process: subprocess.Popen) -> None:
    """SIGKILL the launch and every process under it at once, as a lost machine would: torchrun starts its workers
    in sessions of their own, and they outlive a killed agent (a group kill would miss them). SIGSTOP first: the
    launch then starts no process between the walk of its tree and the kills."""
    try:
        os.kill(process.pid, signal.SIGSTOP)
    except ProcessLookupError:
        return
    tree = process_tree(process.pid)
    for pid in tree:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in tree[:-1]) and time.monotonic() < deadline:  # the launch itself: reaped by wait
        time.sleep(0.01)


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (Linux /proc), the descendants first."""
    children = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            pass
    return [p for child in children for p in process_tree(child)] + [pid]


def alive(pid: int) -> bool:
    """Whether the process still runs (a zombie, dead but not yet reaped, has written its last byte: gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def wait_until(process: subprocess.Popen, condition, poll_s: float = POLL_S) -> bool:
    """Poll ``condition`` while the process runs: True once it holds, False when the process ended first."""
    deadline = time.monotonic() + LAUNCH_TIMEOUT_S
    while process.poll() is None:
        if condition():
            return True
        if time.monotonic() > deadline:
            kill(process)
            raise TimeoutError(f"{process.args}: no event within {LAUNCH_TIMEOUT_S} s")
        time.sleep(poll_s)
    return False


def wait_for_training(process: subprocess.Popen, out: Path, since_ns: int) -> bool:
    """Until the launch wrote config.yaml (its start-up is over), polled every 5 ms: a finer poll would only take
    CPU time from the launches during their seconds of start-up."""
    return wait_until(process, lambda: written_since(out / "config.yaml", since_ns), poll_s=0.005)


def sleep_while_running(process: subprocess.Popen, seconds: float) -> bool:
    """True when the process still runs after ``seconds``."""
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        return True
    return False


# --- observing the run directory --------------------------------------------------------------------------


def temp_dirs(out: Path) -> set[str]:
    """Temp dirs of checkpoint and export writes (checkpoints/.tmp-*, .tmp-final-*), as paths under out."""
    found = set()
    for folder in (out, out / CHECKPOINTS):
        try:
            found |= {f"{folder.relative_to(out)}/{p.name}" for p in folder.iterdir() if p.name.startswith(TMP_PREFIX)}
        except FileNotFoundError:
            pass
    return found


def new_temp_dir_holding(out: Path, before: set[str], prefix: str, phase: str, min_step: int = 0) -> bool:
    """A temp dir absent at launch, named ``prefix``... (of a step >= min_step for checkpoints), holds ``phase``."""
    folder = out / CHECKPOINTS if prefix.startswith("step_") else out
    try:
        names = [p.name for p in folder.iterdir()]
    except FileNotFoundError:
        return False
    for name in names:
        rest = name.removeprefix(TMP_PREFIX)
        if name == rest or not rest.startswith(prefix) or f"{folder.relative_to(out)}/{name}" in before:
            continue
        if prefix.startswith("step_") and int(rest[5:13]) < min_step:
            continue
        if (folder / name / phase).exists():
            return True
    return False


def written_since(path: Path, since_ns: int) -> bool:
    try:
        return path.stat().st_mtime_ns >= since_ns
    except FileNotFoundError:
        return False


def newest_step(out: Path) -> int:
    complete = complete_checkpoints(out / CHECKPOINTS)
    return complete[-1][0] if complete else 0


def relative_files(folder: Path) -> tuple[str, ...]:
    return tuple(sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()))


def differences(folder: Path, expected: Path) -> list[str]:
    """Where ``folder`` does not equal ``expected``: the same files, byte-equal but for those in SAME_CONTENT."""
    files, wanted = relative_files(folder), relative_files(expected)
    if files != wanted:
        return [f"{folder}: files {list(files)}, expected {list(wanted)}"]
    problems = []
    for name in files:
        check = SAME_CONTENT.get(Path(name).name, same_bytes)
        if problem := check(folder / name, expected / name):
            problems.append(f"{folder / name}: {problem}")
    return problems


def same_bytes(path: Path, expected: Path) -> str:
    return "" if path.read_bytes() == expected.read_bytes() else f"differs from {expected}"


def rng_state_loads(path: Path, expected: Path) -> str:
    """The global RNG states are unseeded, so they differ between processes (see the module's doc): they must load."""
    import torch

    try:
        torch.load(path, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to load is the finding
        return f"does not load ({exc})"
    return ""


def same_dcp_metadata(path: Path, expected: Path) -> str:
    """A sharded checkpoint's DCP index: equal but for its storage_meta (the temp dir's path, a random save id)."""
    from torch.distributed.checkpoint import FileSystemReader

    try:
        mine, theirs = (FileSystemReader(str(p.parent)).read_metadata() for p in (path, expected))
    except Exception as exc:  # noqa: BLE001 - any failure to load is the finding
        return f"does not load ({exc})"
    parts = ("state_dict_metadata", "planner_data", "storage_data")
    same = all(getattr(mine, part) == getattr(theirs, part) for part in parts)
    return "" if same else f"differs from {expected} in {parts}"


SAME_CONTENT = {RNG_FILE: rng_state_loads, ".metadata": same_dcp_metadata}


def checkpoint_problems(out: Path, reference: Reference) -> tuple[int, list[str]]:
    """(complete checkpoints checked, what is wrong): each must equal the reference's checkpoint of its step."""
    root, checked, problems = out / CHECKPOINTS, 0, []
    for path in sorted(root.glob("step_*")) if root.is_dir() else []:
        if not (path / MARKER).is_file():
            problems.append(f"{path}: a step directory without its {MARKER} marker")
            continue
        checked += 1
        problems += differences(path, reference.out / CHECKPOINTS / path.name)
    return checked, problems


def metrics_rows(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if not k.startswith(WALL_CLOCK)} for row in rows]


def metrics_difference(rows: list[dict], expected: list[dict]) -> str:
    """The first way ``rows`` differ from ``expected`` ("" if they do not): the steps logged, then any value."""
    steps, wanted = [r.get("step") for r in rows], [r["step"] for r in expected]
    if steps != wanted:
        return f"steps {steps}, expected {wanted}"
    for row, reference in zip(rows, expected):
        for key in sorted(row.keys() | reference.keys()):
            if row.get(key) != reference.get(key):
                return f"step {row['step']}: {key} = {row.get(key)}, expected {reference.get(key)}"
    return ""


# --- the reference and the kills -------------------------------------------------------------------------


def reference_run(setup: Setup) -> Reference:
    """The uninterrupted run (every checkpoint kept), timed from outside as the kills will see it."""
    out = setup.work / "reference"
    shutil.rmtree(out, ignore_errors=True)
    launched, since = time.monotonic(), time.time_ns()
    process = start(train_command(setup, out, keep=setup.steps), setup.work / "logs" / "reference.log")
    wait_for_training(process, out, since)
    training = time.monotonic()
    wait_until(process, lambda: (out / FINAL).is_dir())
    finished = time.monotonic()
    if process.wait() != 0:
        raise RuntimeError(f"the reference run failed: see {setup.work / 'logs' / 'reference.log'}")
    first = out / CHECKPOINTS / f"step_{1:08d}"
    return Reference(out=out, startup_s=training - launched, step_s=(finished - training) / setup.steps,
                     checkpoint_files=relative_files(first), final_files=relative_files(out / FINAL))


def choose_moment(rng: random.Random, resumed_from: int, steps: int, reference: Reference) -> Moment:
    mode = rng.choices(list(MODES), weights=list(MODES.values()))[0]
    if mode == "save" and resumed_from >= steps - 1:
        mode = "final"  # this launch writes no checkpoint, only the final export
    if mode == "startup":
        return Moment(mode, delay_s=rng.uniform(0, reference.startup_s))
    if mode == "train":
        return Moment(mode, delay_s=rng.uniform(0, reference.step_s * (steps - resumed_from)))
    if mode == "save":
        return Moment(mode, step=rng.randint(resumed_from + 1, steps - 1),
                      phase=rng.choice(("", *reference.checkpoint_files)))
    return Moment(mode, phase=rng.choice(("", *reference.final_files)))


def reach(process: subprocess.Popen, moment: Moment, out: Path, since_ns: int, before: set[str]) -> bool:
    """Wait for ``moment``; True if the process is still running then (to be killed)."""
    if moment.mode == "startup":
        return sleep_while_running(process, moment.delay_s)
    if not wait_for_training(process, out, since_ns):
        return False
    if moment.mode == "train":
        return sleep_while_running(process, moment.delay_s)
    if moment.mode == "save":  # a later save if this one was missed, the final export if every save was
        return wait_until(process, lambda: new_temp_dir_holding(out, before, "step_", moment.phase, moment.step)
                          or new_temp_dir_holding(out, before, f"{FINAL}-", ""))
    return wait_until(process, lambda: new_temp_dir_holding(out, before, f"{FINAL}-", moment.phase))


def launch_once(setup: Setup, out: Path, launch: Launch, reference: Reference) -> Launch:
    """Start one launch, kill it at its moment (or let it finish), and check what it left."""
    before, since, started = temp_dirs(out), time.time_ns(), time.monotonic()
    log = setup.work / "logs" / f"chain_{launch.chain:02d}_{launch.index:02d}.log"
    process = start(train_command(setup, out, keep=setup.keep, resume=launch.resume), log)
    if launch.moment is not None and reach(process, launch.moment, out, since, before):
        kill(process)
    launch.returncode = process.wait(timeout=LAUNCH_TIMEOUT_S)
    launch.seconds = time.monotonic() - started
    launch.delivered = launch.returncode == -signal.SIGKILL
    launch.left_behind = sorted(temp_dirs(out) - before)
    launch.mid_save = any(not Path(name).name.startswith(f"{TMP_PREFIX}delete-") for name in launch.left_behind)
    if launch.returncode not in (0, -signal.SIGKILL):
        launch.failure = (f"launch {launch.index} of chain {launch.chain} exited {launch.returncode}: "
                          + " | ".join(log.read_text().splitlines()[-3:]))
    launch.checkpoints_checked, launch.problems = checkpoint_problems(out, reference)
    return launch


def run_chain(setup: Setup, reference: Reference, index: int, kills: int) -> Chain:
    """One run killed at ``kills`` drawn moments, resumed after each; the last launch runs to the end. A launch that
    ends before its moment came is resumed as well (a finished run resumes from its last checkpoint) and another
    moment drawn, up to MAX_MISSED times."""
    rng = random.Random(f"{setup.seed}-{index}")
    out = setup.work / f"chain_{index:02d}"
    shutil.rmtree(out, ignore_errors=True)
    chain = Chain(index=index, launches=[])
    delivered = 0
    while True:
        n, resumed_from = len(chain.launches), newest_step(out)
        resume = None if n == 0 else ("config" if resumed_from == 0 else rng.choice(("flag", "config")))
        more = delivered < kills and n - delivered < MAX_MISSED
        moment = choose_moment(rng, resumed_from, setup.steps, reference) if more else None
        if n == 0 and index == 0 and more:  # one kill surely before any checkpoint: in the first half of step 1
            moment = Moment("train", delay_s=rng.uniform(0, reference.step_s / 2))
        launch = launch_once(setup, out, Launch(index, n, resume, resumed_from, moment), reference)
        chain.launches.append(launch)
        delivered += launch.delivered
        if launch.failure or moment is None:
            break
    chain.completed = chain.launches[-1].returncode == 0
    if chain.completed:
        chain.problems += differences(out / FINAL, reference.out / FINAL)
        chain.final_equal = not chain.problems
        if problem := metrics_difference(metrics_rows(out), metrics_rows(reference.out)):
            chain.problems.append(f"{out / 'metrics.jsonl'}: {problem}")
        chain.metrics_equal = not problem
    chain.stale_temp_dirs = sorted(temp_dirs(out))
    return chain


# --- the matrix ----------------------------------------------------------------------------------------------


@dataclass
class Matrix:
    chains: list[Chain]
    seconds: float
    cpu_seconds: float  # of the launches (under torchrun: of the agents; their killed workers are not counted)
    reference: Reference

    @property
    def launches(self) -> list[Launch]:
        return [launch for chain in self.chains for launch in chain.launches]

    def count(self, predicate) -> int:
        return sum(1 for launch in self.launches if predicate(launch))

    def problems(self) -> list[str]:
        launches = [p for launch in self.launches for p in ([launch.failure] if launch.failure else []) + launch.problems]
        return [p for chain in self.chains for p in chain.problems] + launches

    def summary(self) -> dict[str, float]:
        delivered = [launch for launch in self.launches if launch.delivered]
        return {
            "kills delivered": len(delivered),
            "kills mid-save": sum(launch.mid_save for launch in delivered),
            "kills missed (the launch ended first)": self.count(lambda l: l.moment is not None and not l.delivered),
            **{f"kills at {mode}": sum(launch.moment.mode == mode for launch in delivered) for mode in MODES},
            "kills before the first checkpoint": self.count(lambda l: l.delivered and not l.checkpoints_checked),
            "resumes": self.count(lambda l: l.resume is not None),
            "resumes with --resume DIR": self.count(lambda l: l.resume == "flag"),
            "runs to the end": sum(chain.completed for chain in self.chains),
            "final models bitwise equal": sum(chain.final_equal for chain in self.chains),
            "metrics bitwise equal": sum(chain.metrics_equal for chain in self.chains),
            "checkpoints checked": sum(launch.checkpoints_checked for launch in self.launches),
            "corrupt or different checkpoints": sum(len(launch.problems) for launch in self.launches),
            "launches failed on their own": self.count(lambda l: bool(l.failure)),
            "stale temp dirs at the end": sum(len(chain.stale_temp_dirs) for chain in self.chains),
            "seconds": round(self.seconds, 1),
            "CPU seconds of the launches": round(self.cpu_seconds, 1),
        }


def run_matrix(setup: Setup, *, kills: int, chains: int, workers: int = 2) -> Matrix:
    """The reference run, then ``chains`` chains sharing ``kills`` kills, ``workers`` chains at a time."""
    started, cpu = time.monotonic(), children_cpu_seconds()
    reference = reference_run(setup)
    per_chain = [kills // chains + (i < kills % chains) for i in range(chains)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        done = list(pool.map(lambda i: run_chain(setup, reference, i, per_chain[i]), range(chains)))
    return Matrix(chains=done, seconds=time.monotonic() - started, cpu_seconds=children_cpu_seconds() - cpu,
                  reference=reference)


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def write_inputs(work: Path) -> tuple[Path, Path, Path]:
    """A tiny random model, eight prompts and a reward that varies from the first step, under ``work``."""
    from reinforcepp.testing import save_tiny_checkpoint

    work.mkdir(parents=True, exist_ok=True)
    model = save_tiny_checkpoint(work / "model")
    prompts = work / "prompts.jsonl"
    texts = ["ab", "hello", "12+3=", "say a", "x", "what is 7?", "go", "count: 1 2"]
    prompts.write_text("".join(json.dumps({"prompt": p, "label": str(i)}) + "\n" for i, p in enumerate(texts)))
    reward = work / "varied.py"
    reward.write_text(VARIED_REWARD)
    return model, prompts, reward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=60, help="kills in all (default 60)")
    parser.add_argument("--chains", type=int, default=10, help="runs that share them (default 10)")
    parser.add_argument("--workers", type=int, default=2, help="chains at a time (default 2)")
    parser.add_argument("--steps", type=int, default=10, help="RL steps per run (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the moments and the runs (default 0)")
    parser.add_argument("--preset", default="reinforce_pp", help="a preset name (default reinforce_pp)")
    parser.add_argument("--ranks", type=int, default=0, help="torchrun ranks; 0 = one process (default)")
    parser.add_argument("--work", type=Path, help="scratch dir (default: a fresh temp dir, removed after)")
    parser.add_argument("--json", help="also write the counts and every launch here")
    args = parser.parse_args()
    C.print_header("kill -9 matrix", threads=1)
    work = args.work or Path(tempfile.mkdtemp(prefix="kill-matrix-"))
    try:
        model, prompts, reward = write_inputs(work)
        setup = Setup(model=model, prompts=prompts, reward=reward, work=work, preset=args.preset, steps=args.steps,
                      seed=args.seed, ranks=args.ranks)
        matrix = run_matrix(setup, kills=args.kills, chains=args.chains, workers=args.workers)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"preset {args.preset}, {args.steps} steps, ranks {args.ranks or 1}, seed {args.seed}; reference: "
          f"start-up {matrix.reference.startup_s:.1f} s, {matrix.reference.step_s * 1000:.0f} ms per step")
    print(C.md_table(["count", "value"], list(matrix.summary().items())))
    for problem in matrix.problems():
        print(f"PROBLEM: {problem}")
    C.write_json(args.json, {"summary": matrix.summary(), "chains": [asdict(chain) for chain in matrix.chains]})
    sys.exit(1 if matrix.problems() else 0)


if __name__ == "__main__":
    main()
