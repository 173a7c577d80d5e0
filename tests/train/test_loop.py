"""The RL engine end to end on a tiny random model: every preset, learning, resume, the saved model."""

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from reinforcepp.config import ConfigError
from reinforcepp.presets import PRESETS_DIR
from reinforcepp.train import loop
from reinforcepp.train.loop import train

CONFIGS = PRESETS_DIR
PRESETS = sorted(p.stem for p in CONFIGS.glob("*.yaml"))


def metrics(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_runs_two_steps(preset, make_config):
    cfg = make_config(CONFIGS / f"{preset}.yaml")
    final = train(cfg)
    rows = metrics(cfg.output_dir)
    assert [r["step"] for r in rows] == [1, 2]
    for key in ("reward/mean", "actor/pg_loss", "actor/grad_norm", "response_length/mean", "timing/rollout"):
        assert key in rows[-1], key
    if cfg.critic.enabled:
        assert "critic/value_loss" in rows[-1]
    if cfg.rollout.n_samples_per_prompt > 1:
        assert 0.0 <= rows[-1]["frac_reward_zero_std"] <= 1.0
    assert (final / "model.safetensors").is_file() and (final / "tokenizer.json").is_file()


def test_reinforce_pp_raises_the_reward_on_a_learnable_task(make_config):
    # reward = share of 'a' in the response: a random model starts near 1/48
    cfg = make_config(
        CONFIGS / "reinforce_pp.yaml", "rollout.batch_size=16", "train.batch_size=16", "train.micro_batch_size=16",
        "train.num_steps=30", "actor.optim.lr=3e-3", "actor.optim.warmup_ratio=0",
        "actor.optim.scheduler=constant",
    )
    train(cfg)
    rewards = [r["reward/mean"] for r in metrics(cfg.output_dir)]
    start, end = sum(rewards[:3]) / 3, sum(rewards[-3:]) / 3
    assert end > start + 0.3, rewards


def _final_weights(path):
    return load_file(str(Path(path) / "model.safetensors"))


def test_interrupted_and_resumed_run_is_bitwise_equal(make_config, tmp_path):
    overrides = ("train.num_steps=4", "ckpt.every=2", "rollout.n_samples_per_prompt=2", "train.epochs=2")
    full = make_config(CONFIGS / "reinforce_pp_baseline.yaml", *overrides, f"output_dir={tmp_path / 'full'}")
    train(full)

    interrupted = make_config(CONFIGS / "reinforce_pp_baseline.yaml", *overrides, f"output_dir={tmp_path / 'cut'}")

    def crash(step, _):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(interrupted, on_step_end=crash)
    resumed = make_config(CONFIGS / "reinforce_pp_baseline.yaml", *overrides, f"output_dir={tmp_path / 'cut'}",
                          "ckpt.resume=true")
    train(resumed)

    a, b = _final_weights(tmp_path / "full" / "final"), _final_weights(tmp_path / "cut" / "final")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    full_rows, resumed_rows = metrics(tmp_path / "full"), metrics(tmp_path / "cut")
    assert [r["step"] for r in resumed_rows] == [1, 2, 3, 4]
    assert [r["reward/mean"] for r in resumed_rows] == [r["reward/mean"] for r in full_rows]


def test_the_saved_model_reloads_and_generates_the_same_greedy_tokens(make_config, monkeypatch):
    captured = {}
    prompt = torch.tensor([[5, 6, 7]])
    original = loop.save_final

    def spy(run):
        captured["tokens"] = run.policy.generate(prompt, max_new_tokens=8, do_sample=False)
        return original(run)

    monkeypatch.setattr(loop, "save_final", spy)
    final = train(make_config(CONFIGS / "reinforce_pp.yaml", "actor.optim.lr=1e-2"))
    reloaded = AutoModelForCausalLM.from_pretrained(final).eval()
    assert torch.equal(reloaded.generate(prompt, max_new_tokens=8, do_sample=False), captured["tokens"])


def test_missing_sources_are_named(make_config):
    with pytest.raises(ConfigError, match="model.policy"):
        train(make_config(None, "model.policy="))
    with pytest.raises(ConfigError, match="reward.function / model.reward_model"):
        train(make_config(None, "reward.function=null"))


def test_a_bradley_terry_reward_model_scores_the_responses(make_config, tiny_dir, tmp_path):
    from reinforcepp.models import ValueModel

    rm_dir = tmp_path / "rm"
    rm = ValueModel.from_pretrained(tiny_dir)
    rm.save_pretrained(rm_dir)
    cfg = make_config(CONFIGS / "ppo.yaml", "reward.function=null", f"model.reward_model={rm_dir}")
    train(cfg)
    raw = metrics(cfg.output_dir)
    assert raw[0]["reward/std"] > 0  # real, varying scores from the model
    assert "critic/value_loss" in raw[-1]

    # with its stored mean/std, the scores are standardized: (r - mean) / std
    rm.set_normalization(mean=raw[0]["reward/mean"], std=10 * raw[0]["reward/std"])
    rm.save_pretrained(rm_dir)
    normalized = make_config(CONFIGS / "ppo.yaml", "reward.function=null", f"model.reward_model={rm_dir}",
                             "reward.normalize=model", f"output_dir={tmp_path / 'normalized'}")
    train(normalized)
    first = metrics(tmp_path / "normalized")[0]
    assert first["reward/mean"] == pytest.approx(0.0, abs=1e-5)
    assert first["reward/std"] == pytest.approx(0.1, rel=1e-3)


def test_cli_train_runs_and_reports_bad_input_in_one_line(make_config, tmp_path, capsys):
    from reinforcepp.cli import main

    cfg = make_config(CONFIGS / "reinforce_pp.yaml")
    args = ["train", "--config", str(CONFIGS / "reinforce_pp.yaml"), f"model.policy={cfg.model.policy}",
            f"data.prompts={cfg.data.prompts}", f"reward.function={cfg.reward.function}", "rollout.batch_size=4",
            "train.batch_size=4", "train.micro_batch_size=4", "train.num_steps=1", "log.tensorboard=false",
            "log.progress=false"]
    assert main([*args, f"output_dir={tmp_path / 'ok'}"]) == 0
    assert (tmp_path / "ok" / "final" / "model.safetensors").is_file()
    assert main([*args, f"output_dir={tmp_path / 'bad'}", f"model.policy={tmp_path / 'no-such-model'}"]) == 2
    assert "no-such-model" in capsys.readouterr().err


def test_evaluation_runs_in_the_loop_and_from_the_cli(make_config, prompt_file, tmp_path, capsys):
    from reinforcepp.cli import main

    cfg = make_config(CONFIGS / "reinforce_pp.yaml", f"data.eval_prompts={prompt_file}", "train.eval_every=2",
                      "eval.samples_per_prompt=3", "eval.ks=[1,3]", "eval.pass_threshold=0.1")
    final = train(cfg)
    last = metrics(cfg.output_dir)[-1]
    for key in ("eval/greedy/reward_mean", "eval/greedy/pass@1", "eval/sampled/pass@3", "eval/sampled/score_per_token"):
        assert key in last, key
    assert 0.0 <= last["eval/sampled/pass@1"] <= last["eval/sampled/pass@3"] <= 1.0

    args = ["eval", f"model.policy={final}", f"data.eval_prompts={prompt_file}",
            f"reward.function={cfg.reward.function}", "eval.samples_per_prompt=2", "eval.ks=[1,2]",
            f"output_dir={tmp_path / 'eval'}", "rollout.max_new_tokens=6"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "| greedy |" in out and "pass@2" in out
    record = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert [r["mode"] for r in record["results"]] == ["greedy", "sampled"]


def test_a_reward_function_may_skip_samples_with_none(make_config, tmp_path):
    reward_file = tmp_path / "skipping_reward.py"
    reward_file.write_text(
        "def reward_func(prompts, completions, **kw):\n"
        "    return [None if i % 3 == 0 else c.count('a') / max(len(c), 1) for i, c in enumerate(completions)]\n"
    )
    cfg = make_config(CONFIGS / "grpo.yaml", f"reward.function={reward_file}")
    train(cfg)
    rows = metrics(cfg.output_dir)
    assert rows[0]["reward/skipped"] == 6  # 16 samples, every third skipped
    assert all(math.isfinite(r["actor/pg_loss"]) for r in rows)


def test_a_reward_function_drawing_from_random_gets_the_same_draws_in_a_rerun(make_config, tmp_path):
    # training draws only from its own seeded streams; the global RNGs are seeded from `seed` for user code
    reward_file = tmp_path / "random_reward.py"
    reward_file.write_text(
        "import random\n"
        "AT_IMPORT = random.random()\n"
        "def reward_func(prompts, completions, **kw):\n"
        "    return [AT_IMPORT + random.random() for _ in completions]\n"
    )
    runs = [make_config(CONFIGS / "reinforce_pp.yaml", f"reward.function={reward_file}", "train.num_steps=1",
                        f"output_dir={tmp_path / name}") for name in ("a", "b")]
    for cfg in runs:
        train(cfg)
    first, second = (metrics(cfg.output_dir)[0]["reward/mean"] for cfg in runs)
    assert first == second
    assert 0 < first < 2


def test_the_overlong_penalty_lowers_the_reward_of_long_responses(make_config, tmp_path):
    plain = make_config(CONFIGS / "reinforce_pp.yaml", "train.num_steps=1", f"output_dir={tmp_path / 'plain'}")
    train(plain)
    penalized = make_config(CONFIGS / "reinforce_pp.yaml", "train.num_steps=1", "reward.overlong_buffer=6",
                            "reward.overlong_factor=2.0", f"output_dir={tmp_path / 'penalized'}")
    train(penalized)
    before, after = metrics(tmp_path / "plain")[0], metrics(tmp_path / "penalized")[0]
    # same samples (same seed); with max_new_tokens = buffer = 6 a response of length L loses 2 * L / 6
    assert after["response_length/mean"] == before["response_length/mean"]
    expected = before["reward/mean"] - 2.0 * before["response_length/mean"] / 6
    assert after["reward/mean"] == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("preset, extra", [
    ("reinforce_pp", ("train.batch_size=2",)),  # KL in the reward, two mini-batches: recompute = a forward pass
    ("grpo", ("train.batch_size=16", "train.micro_batch_size=4")),  # one mini-batch: recompute = the update's forward
])
def test_old_logprobs_from_the_sampler_train_the_same_model(preset, extra, make_config, tmp_path):
    # rewards that differ between samples: with all rewards 0 (a toy reward's first steps can be) the
    # z-score would blow the two sources' float noise (~1e-7) up to unit advantages
    reward = tmp_path / "varied.py"
    reward.write_text("def reward_func(prompts, completions, **kwargs):\n"
                      "    return [float(sum(map(ord, c)) % 7) for c in completions]\n")
    finals = {}
    for source in ("recompute", "rollout"):
        # Adam's step lr * g / (|g| + eps) turns float noise in a gradient near 0 into up to lr / eps times that
        # noise: with eps 1e-6 (not 1e-8) the runs' weights differ by ~1e-6, not ~2e-5, well inside 1e-4
        cfg = make_config(CONFIGS / f"{preset}.yaml", *extra, f"reward.function={reward}", f"train.old_logprobs={source}",
                          f"output_dir={tmp_path / source}", "actor.optim.eps=1e-6")
        finals[source] = _final_weights(train(cfg))
    start = _final_weights(Path(cfg.model.policy))
    for name, weight in finals["recompute"].items():
        torch.testing.assert_close(finals["rollout"][name], weight, rtol=1e-3, atol=1e-4)
    assert any(not torch.equal(finals["rollout"][k], start[k]) for k in start)  # the runs trained
    for a, b in zip(metrics(tmp_path / "recompute"), metrics(tmp_path / "rollout")):
        assert a["reward/mean"] == b["reward/mean"]  # the same samples
        for key in ("actor/pg_loss", "kl", "actor/approx_kl"):
            assert a[key] == pytest.approx(b[key], abs=1e-5), key


def test_auto_takes_old_logprobs_from_the_sampler_only_for_a_float32_policy(make_config):
    run = loop.build_run(make_config(CONFIGS / "reinforce_pp.yaml"))
    assert loop.old_logp_source(run, kl_in_reward=True, num_sequences=4) == "rollout"
    run.policy.to(torch.bfloat16)
    assert loop.old_logp_source(run, kl_in_reward=True, num_sequences=4) == "forward"
    assert loop.old_logp_source(run, kl_in_reward=False, num_sequences=4) == "update"  # one mini-batch of 4
    assert loop.old_logp_source(run, kl_in_reward=False, num_sequences=8) == "forward"  # two: the policy moves


def test_the_rollout_budget_reaches_every_engine(make_config, monkeypatch):
    import reinforcepp.eval.command as eval_command

    assert loop.build_run(make_config(CONFIGS / "reinforce_pp.yaml")).engine.max_batch_tokens is None
    cfg = make_config(CONFIGS / "reinforce_pp.yaml", "rollout.max_batch_tokens=64")
    assert loop.build_run(cfg).engine.max_batch_tokens == 64
    engines = []
    monkeypatch.setattr(eval_command, "run_eval_suite", lambda cfg, engine, *args, **kwargs: engines.append(engine) or [])
    eval_command.evaluate_model(cfg)
    assert [e.max_batch_tokens for e in engines] == [64]
