"""torchrun: 2 CPU ranks (gloo, FSDP2) against 1 process, through the CLI; sharded checkpoints and failures.

World-size invariance tolerance. The two runs sample the same tokens (per-row random streams) and compute
the same float32 step up to summation order (the ranks' gradients are reduced, matmuls see other batch
shapes): gradients agree to ~1e-6 relative (measured: grad norms equal to 7 digits). Adam then maps each
gradient element g to about lr * g / (|g| + eps) per step, so an element whose gradient is float noise could
move by up to lr either way; eps = 1e-6 (above that noise) keeps such elements still, and the weights must
agree to 2% of lr per step, while every run moves them by ~lr per step (checked, so the test can fail).
Measured: max |difference| 2.4e-6 after 2 steps at lr 1e-3 (reinforce_pp).
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from reinforcepp.presets import PRESETS_DIR

CONFIGS = PRESETS_DIR
LR, STEPS = 1e-3, 2

pytestmark = pytest.mark.slow


def _overrides(tiny_dir, prompt_file, reward, out: Path, *extra: str) -> list[str]:
    return [
        f"model.policy={tiny_dir}", f"data.prompts={prompt_file}", f"reward.function={reward}",
        "rollout.batch_size=4", "rollout.max_new_tokens=6", "train.batch_size=4", "train.micro_batch_size=2",
        f"train.num_steps={STEPS}", f"actor.optim.lr={LR}", f"critic.optim.lr={LR}", "actor.optim.eps=1e-6",
        "critic.optim.eps=1e-6", "log.progress=false", "log.tensorboard=false", f"output_dir={out}", *extra,
    ]


def _env(threads: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    return {**env, "OMP_NUM_THREADS": str(threads)}


def run_cli(preset: str, overrides: list[str], ranks: int, timeout: float = 300) -> subprocess.CompletedProcess:
    """``reinforcepp train`` in one process (ranks=0) or under torchrun with ``ranks`` processes."""
    train = ["-m", "reinforcepp", "train", "--config", str(CONFIGS / f"{preset}.yaml"), *overrides]
    if ranks:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}"]
        command = [*launcher, *train]
    else:
        command = [sys.executable, *train]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=_env(1 if ranks else 2))


def _ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "final" / "model.safetensors")


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# GRPO also evaluates (rank 0 alone, on the sampler's replica) and logs each prompt's rewards; GSPO takes 8 optimizer
# steps per RL step (its sequence ratios move off 1) with the rollout correction and the unbiased KL-loss gradient
EXTRA = {
    "grpo": ["train.eval_every=1", "log.prompt_rewards=true"],
    "gspo": ["train.batch_size=2", "algo.loss.tis_cap=2", "train.old_logprobs=recompute", "algo.kl.coef=0.01",
             "algo.kl.unbiased_gradient=true"],
}


@pytest.mark.parametrize("preset", ["reinforce_pp", "grpo", "ppo", "gspo"])
def test_two_ranks_train_the_model_one_process_trains(preset, tiny_dir, prompt_file, varied_reward, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    extra = [f"data.eval_prompts={prompt_file}", *EXTRA["grpo"]] if preset == "grpo" else EXTRA.get(preset, [])
    _ok(run_cli(preset, _overrides(tiny_dir, prompt_file, varied_reward, one, *extra), ranks=0))
    result = _ok(run_cli(preset, _overrides(tiny_dir, prompt_file, varied_reward, two, *extra), ranks=2))
    assert result.stdout.count("final model:") == 1  # rank 0 alone reports

    start, a, b = load_file(Path(tiny_dir) / "model.safetensors"), weights(one), weights(two)
    assert a.keys() == b.keys()
    moved = max((a[k] - start[k]).abs().max().item() for k in a)
    assert moved > 0.5 * LR  # both runs trained
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=0.02 * LR * STEPS, msg=name)
    rows_one, rows_two = metrics(one), metrics(two)
    first = 0 if preset == "grpo" else 1  # step 0: the evaluation before training
    assert [r["step"] for r in rows_two] == list(range(first, STEPS + 1))  # one row per step: rank 0 alone writes
    if preset == "grpo":
        assert rows_one[0]["eval/greedy/reward_mean"] == rows_two[0]["eval/greedy/reward_mean"]
        rows_one, rows_two = rows_one[1:], rows_two[1:]
    for r1, r2 in zip(rows_one, rows_two):
        assert r1["reward/mean"] == r2["reward/mean"]  # the same samples, scored over the global batch
        assert r1["response_length/mean"] == r2["response_length/mean"]
        gspo = ("actor/kl_loss", "actor/clip_frac", "actor/rollout_abs_log_ratio") if preset == "gspo" else ()
        for key in ("advantages/std", "actor/grad_norm", "actor/pg_loss", *gspo):
            assert r2[key] == pytest.approx(r1[key], rel=1e-5, abs=1e-6), key
        if preset == "grpo":
            assert r1["eval/greedy/reward_mean"] == r2["eval/greedy/reward_mean"]  # the same greedy answers
    if preset == "grpo":
        prompt_rewards = [(d / "prompt_rewards.jsonl").read_text() for d in (one, two)]
        assert prompt_rewards[0] == prompt_rewards[1] and prompt_rewards[0]
    if preset == "ppo":
        critic_one, critic_two = (load_file(d / "final_critic" / "model.safetensors") for d in (one, two))
        for name in critic_one:
            torch.testing.assert_close(critic_two[name], critic_one[name], rtol=0, atol=0.02 * LR * STEPS)


def test_cpu_offload_trains_the_same_model(tiny_dir, prompt_file, varied_reward, tmp_path):
    """dist.cpu_offload keeps shards, gradients and optimizer states in CPU memory: on CPU ranks the same
    arithmetic, so the same weights as without it."""
    plain, offload = tmp_path / "plain", tmp_path / "offload"
    _ok(run_cli("reinforce_pp", _overrides(tiny_dir, prompt_file, varied_reward, plain), ranks=2))
    _ok(run_cli("reinforce_pp", _overrides(tiny_dir, prompt_file, varied_reward, offload, "dist.cpu_offload=true"),
                ranks=2))
    a, b = weights(plain), weights(offload)
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=0.02 * LR * STEPS, msg=name)


def test_a_config_that_cannot_be_split_fails_on_every_rank_before_loading(tiny_dir, prompt_file, varied_reward,
                                                                          tmp_path):
    overrides = _overrides(tiny_dir, prompt_file, varied_reward, tmp_path / "r", "rollout.batch_size=3",
                           "train.batch_size=3", "train.micro_batch_size=1")
    result = run_cli("reinforce_pp", overrides, ranks=2)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    # one clear line per problem (rollout.batch_size and train.batch_size) from each rank whose check ran:
    # torchrun stops the other rank as soon as one exits, so a slower rank may be stopped before it prints
    expected = {"error: rollout.batch_size: 3 prompts per step cannot be split over 2 ranks; use a multiple of 2",
                "error: train.batch_size: 3 samples per optimizer step cannot be split over 2 ranks; "
                "use a multiple of 2"}
    assert set(lines) == expected and len(lines) in (2, 4), result.stderr[-2000:]
    assert "exitcode  : 2" in result.stderr  # the rank's code for bad input, reported by torchrun
    assert "reinforcepp/train" not in result.stderr  # no traceback from our code (torchrun prints its own)
    assert not (tmp_path / "r").exists()  # nothing loaded, nothing written


def test_sharded_checkpoints_resume_on_two_ranks_one_process_and_back(tiny_dir, prompt_file, varied_reward, tmp_path):
    """Resume bitwise on the same number of ranks; a 2-rank checkpoint resumes in 1 process and a 1-process
    checkpoint on 2 ranks (equal to the uninterrupted runs to the world-size tolerance)."""
    steps = ("train.num_steps=3", "ckpt.every=1", "ckpt.keep=2")
    full = tmp_path / "full"
    _ok(run_cli("reinforce_pp", _overrides(tiny_dir, prompt_file, varied_reward, full, *steps), ranks=2))
    checkpoints = sorted(p.name for p in (full / "checkpoints").iterdir())
    assert checkpoints == ["step_00000001", "step_00000002"]  # keep=2 (step 3 is the final model)
    assert all((full / "checkpoints" / c / "COMPLETE").is_file() for c in checkpoints)
    reference = weights(full)

    for resume_ranks in (2, 0):
        out = tmp_path / f"resumed_{resume_ranks}"
        (out / "checkpoints").mkdir(parents=True)
        subprocess.run(["cp", "-r", str(full / "checkpoints" / "step_00000001"), str(out / "checkpoints")], check=True)
        _ok(run_cli("reinforce_pp", _overrides(tiny_dir, prompt_file, varied_reward, out, *steps, "ckpt.resume=true"),
                    ranks=resume_ranks))
        resumed = weights(out)
        for name in reference:
            if resume_ranks == 2:
                assert torch.equal(resumed[name], reference[name]), name  # same ranks: bitwise
            else:
                torch.testing.assert_close(resumed[name], reference[name], rtol=0, atol=0.02 * LR * 3)

    # a checkpoint written by one process, resumed on two ranks
    single = tmp_path / "single"
    _ok(run_cli("reinforce_pp", _overrides(tiny_dir, prompt_file, varied_reward, single, *steps), ranks=0))
    out = tmp_path / "single_on_two"
    (out / "checkpoints").mkdir(parents=True)
    subprocess.run(["cp", "-r", str(single / "checkpoints" / "step_00000002"), str(out / "checkpoints")], check=True)
    _ok(run_cli("reinforce_pp", _overrides(tiny_dir, prompt_file, varied_reward, out, *steps, "ckpt.resume=true"),
                ranks=2))
    for name, value in weights(single).items():
        torch.testing.assert_close(weights(out)[name], value, rtol=0, atol=0.02 * LR * 3)


def test_a_killed_rank_ends_the_job_and_it_resumes(tiny_dir, prompt_file, varied_reward, tmp_path):
    """SIGKILL one rank after its first checkpoint: torchrun ends the whole job, non-zero, within seconds
    (the survivor's next collective fails at once); the job then resumes from the last complete checkpoint."""
    out = tmp_path / "run"
    overrides = _overrides(tiny_dir, prompt_file, varied_reward, out, "train.num_steps=40", "ckpt.every=1")
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                "-m", "reinforcepp", "train", "--config", str(CONFIGS / "reinforce_pp.yaml"), *overrides]
    job = subprocess.Popen(launcher, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(1))
    try:
        deadline = time.monotonic() + 180
        while not list((out / "checkpoints").glob("step_*/COMPLETE")):
            assert job.poll() is None and time.monotonic() < deadline, "no checkpoint was written"
            time.sleep(0.2)
        worker = _worker_pid(job.pid, rank=1)
        os.kill(worker, signal.SIGKILL)
        killed_at = time.monotonic()
        _, stderr = job.communicate(timeout=120)
        elapsed = time.monotonic() - killed_at
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode != 0
    assert elapsed < 60, elapsed
    assert "rank     : 1" in stderr or "local_rank: 1" in stderr, stderr[-3000:]  # torchrun names the lost rank
    done = sorted((out / "checkpoints").glob("step_*/COMPLETE"))
    assert done  # the checkpoints written before the kill stay complete
    last = int(done[-1].parent.name.removeprefix("step_"))
    result = _ok(run_cli("reinforce_pp", [*overrides[:-2], f"train.num_steps={last + 1}", "ckpt.resume=true"], ranks=2))
    assert "final model:" in result.stdout and (out / "final" / "model.safetensors").is_file()


def _worker_pid(agent_pid: int, rank: int) -> int:
    """The pid of the torchrun worker with environment RANK=rank (a child of the agent)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for child in Path(f"/proc/{agent_pid}/task/{agent_pid}/children").read_text().split():
            try:
                environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"RANK={rank}".encode() in environ:
                return int(child)
        time.sleep(0.1)
    raise AssertionError(f"no worker with RANK={rank}")


def test_lora_on_two_ranks_trains_as_one_process_and_resumes_bitwise(tiny_dir, prompt_file, varied_reward, tmp_path):
    """model.lora under FSDP2: the adapters are sharded with their layers, the reference is the sharded policy with
    its adapters off, the sampler's replica gathers the frozen base once and then only the adapters, rank 0
    exports the merged model and the adapter; a sharded checkpoint resumes bitwise on 2 ranks.
    alpha = rank: a merged weight moves by B @ A with |A| < 1/rank here, so the adapters' tolerance covers it."""
    lora = ("model.lora.rank=4", "model.lora.alpha=4", "train.num_steps=3", "ckpt.every=1", "ckpt.keep=1")
    one, two = tmp_path / "one", tmp_path / "two"
    _ok(run_cli("reinforce_pp", _overrides(tiny_dir, prompt_file, varied_reward, one, *lora), ranks=0))
    _ok(run_cli("reinforce_pp", _overrides(tiny_dir, prompt_file, varied_reward, two, *lora), ranks=2))
    start = load_file(Path(tiny_dir) / "model.safetensors")
    assert max((weights(two)[k] - start[k]).abs().max().item() for k in start) > 0.1 * LR  # the adapters trained
    for file in ("model.safetensors", "adapter/adapter_model.safetensors"):
        a, b = (load_file(run / "final" / file) for run in (one, two))
        assert a.keys() == b.keys()
        for name in a:
            torch.testing.assert_close(b[name], a[name], rtol=0, atol=0.02 * LR * 3, msg=name)
    assert metrics(two)[0]["kl"] == 0.0  # log pi_old recomputed, the reference is the base: exactly pi at step 1

    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    subprocess.run(["cp", "-r", str(two / "checkpoints" / "step_00000002"), str(resumed / "checkpoints")], check=True)
    _ok(run_cli("reinforce_pp", _overrides(tiny_dir, prompt_file, varied_reward, resumed, *lora, "ckpt.resume=true"),
                ranks=2))
    for file in ("model.safetensors", "adapter/adapter_model.safetensors"):
        a, b = (load_file(run / "final" / file) for run in (two, resumed))
        assert all(torch.equal(a[name], b[name]) for name in a), file


def test_dynamic_sampling_and_adaptive_kl_do_not_depend_on_the_number_of_ranks(tiny_dir, prompt_file, tmp_path):
    # the toy reward is 0 for most samples of a random model: many equal groups, so extra rounds and fills
    reward = "reinforcepp.rewards.toy:target_char_share"
    extra = ["rollout.n_samples_per_prompt=2", "train.batch_size=8", "algo.filter_groups=true",
             "algo.kl.target=1e-6", "algo.kl.horizon=8"]
    one, two = tmp_path / "one", tmp_path / "two"
    _ok(run_cli("grpo", _overrides(tiny_dir, prompt_file, reward, one, *extra), ranks=0))
    _ok(run_cli("grpo", _overrides(tiny_dir, prompt_file, reward, two, *extra), ranks=2))
    rows_one, rows_two = metrics(one), metrics(two)
    assert any(r["filter/rounds"] > 1 for r in rows_one)
    for r1, r2 in zip(rows_one, rows_two, strict=True):
        for key in ("filter/rounds", "filter/dropped_groups", "filter/filled_groups", "reward/mean"):
            assert r1[key] == r2[key], key  # one decision from the gathered rewards: the same groups
        assert r2["kl/coef"] == pytest.approx(r1["kl/coef"], rel=1e-6)


def test_shared_prefix_on_two_ranks_trains_as_one_process_without_it(tiny_dir, prompt_file, varied_reward, tmp_path):
    """train.shared_prefix under FSDP2, micro-batches of 2 of a group's rows shuffled over the ranks: a micro-batch
    that repeats a prompt on one rank while the other rank's does not (both happen in this run) makes every rank
    share (else their layers' all-gathers pair wrongly and the job hangs); the model is one process's without it."""
    shuffled = ("train.batch_size=16", "train.micro_batch_size=2")
    one, two = tmp_path / "one", tmp_path / "two"
    _ok(run_cli("grpo", _overrides(tiny_dir, prompt_file, varied_reward, one, *shuffled, "train.shared_prefix=false"),
                ranks=0))
    _ok(run_cli("grpo", _overrides(tiny_dir, prompt_file, varied_reward, two, *shuffled, "train.shared_prefix=true"),
                ranks=2, timeout=120))
    start, a, b = load_file(Path(tiny_dir) / "model.safetensors"), weights(one), weights(two)
    assert max((a[k] - start[k]).abs().max().item() for k in a) > 0.5 * LR
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=0.02 * LR * STEPS, msg=name)
    for r1, r2 in zip(metrics(one), metrics(two), strict=True):
        assert r1["reward/mean"] == r2["reward/mean"]
        for key in ("advantages/std", "actor/grad_norm", "actor/pg_loss"):
            assert r2[key] == pytest.approx(r1[key], rel=1e-5, abs=1e-6), key


def test_compiled_layers_under_torchrun_train_the_eager_model(tiny_dir, prompt_file, varied_reward, tmp_path):
    """train.compile under FSDP2: the layers are compiled after sharding (FSDP's hooks outside the graphs); with
    train.shared_prefix the cache-carrying calls run eagerly on every rank. Same weights as one eager process, to
    the world-size tolerance above (the compiled kernels also sum in another order, ~1e-7 relative)."""
    one, two = tmp_path / "one", tmp_path / "two"
    extra = ["train.shared_prefix=false", "rollout.n_samples_per_prompt=2"]  # with it, cached calls run eagerly
    _ok(run_cli("reinforce_pp", _overrides(tiny_dir, prompt_file, varied_reward, one, *extra), ranks=0))
    _ok(run_cli("reinforce_pp", _overrides(tiny_dir, prompt_file, varied_reward, two, *extra, "train.compile=true"),
                ranks=2))
    a, b = weights(one), weights(two)
    start = load_file(Path(tiny_dir) / "model.safetensors")
    assert max((a[k] - start[k]).abs().max().item() for k in a) > 0.5 * LR
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=0.02 * LR * STEPS, msg=name)
