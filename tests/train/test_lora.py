"""LoRA through peft (model.lora): only the adapters train, the reference is the base with the adapters off,
the export (merged model + adapter), the sampler and the log-prob passes on adapters, resume, config errors."""

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from reinforcepp.config import ConfigError, LoRAConfig, config_to_yaml, load_config
from reinforcepp.models import lora
from reinforcepp.presets import PRESETS_DIR
from reinforcepp.rollout import SamplingParams, TorchEngine
from reinforcepp.rollout.torch_engine import fast_path_unsupported_reason
from reinforcepp.stages.sft import run_sft
from reinforcepp.testing import random_experience, tiny_model, tiny_tokenizer
from reinforcepp.train import forward, loop, sharding
from reinforcepp.train.forward import plain_lm_head, policy_logprobs
from reinforcepp.train.loop import train

peft = pytest.importorskip("peft")

CONFIGS = PRESETS_DIR
PRESET = CONFIGS / "reinforce_pp.yaml"
LORA = ("model.lora.rank=4", "model.lora.alpha=8", "actor.optim.lr=1e-2")


def metrics(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def captured_run(monkeypatch):
    """The Run of the next ``train`` call, taken just before its final export."""
    captured = {}
    original = loop.save_final

    def spy(run):
        captured["run"] = run
        return original(run)

    monkeypatch.setattr(loop, "save_final", spy)
    return captured


def lora_model(seed=0, b_std=0.2, **lora_fields):
    """A tiny Llama with spread-out weights and LoRA adapters whose B is random (not 0), so they matter."""
    model = tiny_model(len(tiny_tokenizer()), seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.15)
    base = copy.deepcopy(model)
    torch.manual_seed(seed)
    wrapped = lora.add_lora(model, LoRAConfig(rank=4, alpha=8, **lora_fields))
    with torch.no_grad():
        for name, p in wrapped.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * b_std)
    return wrapped, base


def base_weights(policy):
    """The policy's frozen base weights under the base model's own names (``q_proj.base_layer.weight`` ->
    ``q_proj.weight``)."""
    return {name.replace(".base_layer", ""): p for name, p in policy.get_base_model().named_parameters()
            if "lora_" not in name}


# --- what trains ---------------------------------------------------------------------------------------


def test_only_the_adapters_train_and_the_base_stays_bitwise(make_config, varied_reward, tiny_dir, captured_run):
    train(make_config(PRESET, *LORA, f"reward.function={varied_reward}"))
    run = captured_run["run"]
    named = dict(run.policy.named_parameters())
    trainable = {name for name, p in named.items() if p.requires_grad}
    assert trainable and all(".lora_A." in name or ".lora_B." in name for name in trainable)
    optimized = [p for group in run.actor.optimizer.param_groups for p in group["params"]]
    assert {id(p) for p in optimized} == {id(named[name]) for name in trainable}
    assert {id(p) for p in run.actor.optimizer.state} <= {id(p) for p in optimized}
    assert all(p.grad is None for name, p in named.items() if name not in trainable)

    start = AutoModelForCausalLM.from_pretrained(tiny_dir).state_dict()
    frozen = base_weights(run.policy)
    assert frozen.keys() == {k for k in start if k != "lm_head.weight"}  # lm_head is tied to embed_tokens
    for name, value in frozen.items():
        assert torch.equal(value, start[name]), name
    assert max(p.abs().max().item() for name, p in named.items() if ".lora_B." in name) > 0  # trained


# --- the reference -------------------------------------------------------------------------------------


def test_the_reference_is_the_base_with_the_adapters_off(make_config, varied_reward, tiny_dir, captured_run):
    # recompute: log pi_old from the update's forward (the sampler's own log-probs agree only to rounding)
    cfg = make_config(PRESET, *LORA, f"reward.function={varied_reward}", "train.old_logprobs=recompute",
                      "train.num_steps=3")
    train(cfg)
    rows = metrics(cfg.output_dir)
    assert rows[0]["kl"] == 0.0 and rows[0]["kl/seq_k1"] == 0.0  # B = 0 before the first update: pi = pi_ref
    assert rows[-1]["kl"] != 0.0 and rows[-1]["kl/seq_k1"] != 0.0

    run = captured_run["run"]
    assert run.reference.model is run.policy and run.reference.adapters_off
    assert run.reference.own_model is None  # no second copy of the weights
    exp = random_experience(4, 6, 8, run.policy.config.vocab_size)
    base = AutoModelForCausalLM.from_pretrained(tiny_dir).eval()
    with torch.no_grad():
        with run.reference.computing():
            reference = policy_logprobs(run.reference.model, exp, 1.0)[0]
        trained = policy_logprobs(run.policy, exp, 1.0)[0]
        start = policy_logprobs(base, exp, 1.0)[0]
    assert torch.equal(reference, start)
    assert not torch.equal(trained, start)
    assert all(p.requires_grad for name, p in run.policy.named_parameters() if "lora_" in name)  # back on


def test_a_reference_model_that_is_set_loads_separately(make_config, tiny_dir):
    run = loop.build_run(make_config(PRESET, *LORA, f"model.reference={tiny_dir}"))
    assert run.reference.own_model is run.reference.model and run.reference.model is not run.policy
    assert not lora.is_lora_model(run.reference.model)
    assert not any(p.requires_grad for p in run.reference.model.parameters())


# --- the export ----------------------------------------------------------------------------------------


def test_the_adapter_on_the_base_equals_the_merged_export(make_config, varied_reward, tiny_dir, captured_run):
    final = train(make_config(PRESET, *LORA, f"reward.function={varied_reward}"))
    saved = load_file(final / "model.safetensors")
    assert not any("lora" in key or "base_layer" in key for key in saved)  # a plain model: loads without peft
    assert json.loads((final / "adapter" / "adapter_config.json").read_text())["r"] == 4

    merged = AutoModelForCausalLM.from_pretrained(final).double().eval()
    adapted = peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_dir), final / "adapter")
    adapted = adapted.double().eval()
    start = AutoModelForCausalLM.from_pretrained(tiny_dir).double().eval()
    ids = torch.randint(3, 48, (3, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got, before = (m(input_ids=ids).logits for m in (adapted, merged, start))
        trained = captured_run["run"].policy(input_ids=ids).logits.double()
    # In float64 the two differ only by the float32 rounding of the merged weights W + (alpha / r) B A (relative
    # 2^-24 ~ 6e-8 per weight), carried through 2 layers to logits of size ~1: measured 1.1e-7.
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    # The trained policy computes in float32 (relative 2^-24 per operation, a few hundred of them): measured 2.3e-7.
    torch.testing.assert_close(trained, want, rtol=0, atol=1e-5)
    assert (want - before).abs().max() > 1e-3  # the adapter changed the model


# --- the sampler and the log-prob passes ----------------------------------------------------------------


def recomputed_logprobs(model, rollout, temperature):
    """log pi of each response token from one forward over prompt + response (the update's numbers)."""
    from reinforcepp.train.experience import Experience

    with torch.no_grad():
        return policy_logprobs(model, Experience.from_rollout(rollout), temperature)[0] * rollout.response_mask


PROMPTS = ["12+34=", "7+8=", "what is 5+5?", "a", "hello there"]


def test_the_sampler_runs_the_adapters_on_its_fast_path_and_on_the_models_forward():
    tok = tiny_tokenizer()
    prompts = [tok(t)["input_ids"] for t in PROMPTS]
    model, base = lora_model()
    assert fast_path_unsupported_reason(model) is None
    greedy = SamplingParams(max_new_tokens=10, greedy=True)
    runs = {}
    for fast in (None, False):
        engine = TorchEngine(model, tok, fast_path=fast)
        runs[fast] = engine.generate(prompts, greedy)
        assert engine.last_backend == ("fast" if fast is None else "hf")
    assert torch.equal(runs[None].response_ids, runs[False].response_ids)
    base_tokens = TorchEngine(base, tok).generate(prompts, greedy).response_ids
    assert not torch.equal(runs[None].response_ids, base_tokens)  # the adapters change what is sampled
    for rollout in runs.values():  # greedy log-probs are at temperature 1
        torch.testing.assert_close(rollout.logprobs, recomputed_logprobs(model, rollout, 1.0), atol=1e-5, rtol=0)

    sampled = SamplingParams(max_new_tokens=10, temperature=0.7, top_k=6)
    rollout = TorchEngine(model, tok).generate(prompts, sampled, n=2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(rollout.logprobs, recomputed_logprobs(model, rollout, 0.7), atol=1e-5, rtol=0)

    with lora.adapters_off(model):  # the fast path then reads the base weights alone: the base model's numbers
        off = TorchEngine(model, tok).generate(prompts, greedy)
    plain = TorchEngine(base, tok).generate(prompts, greedy)
    assert torch.equal(off.response_ids, plain.response_ids) and torch.equal(off.logprobs, plain.logprobs)


def test_a_lora_variant_falls_back_to_the_models_forward():
    tok = tiny_tokenizer()
    prompts = [tok(t)["input_ids"] for t in PROMPTS]
    _, base = lora_model()
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], use_dora=True)
    dora = peft.get_peft_model(base, config).eval()
    assert "variant" in fast_path_unsupported_reason(dora)
    engine = TorchEngine(dora, tok)
    rollout = engine.generate(prompts, SamplingParams(max_new_tokens=8, temperature=0.7), n=2,
                              generator=torch.Generator().manual_seed(0))
    assert engine.last_backend == "hf"
    torch.testing.assert_close(rollout.logprobs, recomputed_logprobs(dora, rollout, 0.7), atol=1e-5, rtol=0)


def test_log_probs_of_a_lora_model_take_the_chunked_head_through_its_inner_model(monkeypatch):
    model, _ = lora_model()
    assert plain_lm_head(model) is None  # the wrapper itself is not a plain Llama ...
    assert plain_lm_head(lora.base_causal_lm(model)) is not None  # ... its inner model is, adapters and all
    calls, original = [], forward.head_logprobs
    monkeypatch.setattr(forward, "head_logprobs", lambda *a, **k: calls.append(1) or original(*a, **k))
    exp = random_experience(3, 5, 7, model.config.vocab_size)
    with torch.no_grad():
        chunked, _ = policy_logprobs(model, exp, 0.8)
    assert calls  # the chunked LM-head path ran
    full, _ = policy_logprobs(model, exp, 0.8)  # with gradients: the PeftModel's own forward
    torch.testing.assert_close(chunked, full.detach(), rtol=0, atol=1e-5)

    with_head, _ = lora_model(target_modules=["q_proj", "lm_head"])
    assert plain_lm_head(lora.base_causal_lm(with_head)) is None  # an adapter on the LM head: the own forward


def test_the_samplers_replica_gathers_the_frozen_base_once():
    """Under torchrun the sampler's replica is refreshed from the sharded policy each step: the frozen base at the
    first refresh only (it may come from a checkpoint), then only the adapters."""
    policy, _ = lora_model()
    replica = copy.deepcopy(policy).requires_grad_(False)

    def change_every_weight_and_sync() -> dict[str, bool]:
        with torch.no_grad():
            for p in policy.parameters():
                p.add_(1.0)
        sharding.sync_replica(replica, policy)
        return {name: torch.equal(a, b) for (name, a), b in zip(replica.named_parameters(), policy.parameters())}

    assert all(change_every_weight_and_sync().values())
    assert all(copied == ("lora_" in name) for name, copied in change_every_weight_and_sync().items())


# --- resume and gradient checkpointing ------------------------------------------------------------------


@pytest.mark.slow
def test_interrupted_and_resumed_lora_run_is_bitwise_equal(interrupted_and_resumed, varied_reward, tmp_path):
    interrupted_and_resumed(PRESET, *LORA, f"reward.function={varied_reward}", "train.num_steps=4", "ckpt.every=2")

    for file in ("model.safetensors", "adapter/adapter_model.safetensors"):
        a, b = (load_file(tmp_path / run / "final" / file) for run in ("full", "cut"))
        assert a.keys() == b.keys()
        for name in a:
            assert torch.equal(a[name], b[name]), (file, name)
    assert [r["reward/mean"] for r in metrics(tmp_path / "cut")] == [r["reward/mean"] for r in metrics(tmp_path / "full")]


def test_gradient_checkpointing_trains_the_adapters_alike(make_config, varied_reward, tmp_path):
    adapters = []
    for checkpointing in ("false", "true"):
        final = train(make_config(PRESET, *LORA, f"reward.function={varied_reward}", "train.num_steps=1",
                                  f"train.gradient_checkpointing={checkpointing}", f"output_dir={tmp_path / checkpointing}"))
        adapters.append(load_file(final / "adapter" / "adapter_model.safetensors"))
    assert max(value.abs().max() for name, value in adapters[0].items() if "lora_B" in name) > 0  # they trained
    for name in adapters[0]:  # the recomputed forward is the same forward: the same gradients (measured: bitwise)
        torch.testing.assert_close(adapters[1][name], adapters[0][name], rtol=1e-12, atol=1e-14)


# --- config --------------------------------------------------------------------------------------------


def test_lora_is_a_section_that_is_off_by_default():
    assert load_config(None).model.lora is None
    cfg = load_config(None, ["model.lora.rank=8"])
    assert cfg.model.lora == LoRAConfig(rank=8, alpha=32.0, dropout=0.0, target_modules="all-linear")
    assert load_config(None, ["model.lora.rank=8", "model.lora=null"]).model.lora is None
    assert load_config(None, ["model.lora={rank: 8}"]) == cfg
    assert load_config(None, ["model.lora={}"]).model.lora == LoRAConfig()  # on, with the defaults


def test_a_saved_config_with_lora_off_can_turn_it_on(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(config_to_yaml(load_config(None)))  # holds `lora: null`
    assert load_config(path, ["model.lora.target_modules=[q_proj, v_proj]"]).model.lora.target_modules == ["q_proj", "v_proj"]


@pytest.mark.parametrize(("override", "field"), [
    ("model.lora.rank=0", "model.lora.rank"),
    ("model.lora.alpha=0", "model.lora.alpha"),
    ("model.lora.dropout=1.0", "model.lora.dropout"),
    ("model.lora.dropout=0.05", "model.lora.dropout"),  # valid for peft, but never applied in RL's eval mode
    ("model.lora.target_modules=[]", "model.lora.target_modules"),
    ("model.lora.target_modules=q_proj", "model.lora.target_modules"),
    ("model.lora.rnk=4", "model.lora.rnk"),
])
def test_bad_lora_fields_are_config_errors(override, field):
    with pytest.raises(ConfigError) as info:
        load_config(None, ["model.lora.rank=4", override])
    (line,) = str(info.value).splitlines()
    assert line.startswith(f"{field}: ")


def test_the_adapters_off_reference_has_the_policys_dtype():
    with pytest.raises(ConfigError, match="model.reference_dtype: 'bfloat16', but with model.lora"):
        load_config(None, ["model.lora.rank=4", "model.reference_dtype=bfloat16"])
    load_config(None, ["model.lora.rank=4", "model.reference_dtype=bfloat16", "model.reference=some/model"])


def test_peft_is_imported_only_when_lora_is_used():
    code = "import sys, reinforcepp.cli, reinforcepp.train.loop, reinforcepp.train.state; print('peft' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_missing_peft_is_one_config_line_before_anything_loads(make_config, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "peft", None)  # `import peft` raises ImportError
    cfg = make_config(PRESET, *LORA)
    with pytest.raises(ConfigError) as info:
        train(cfg)
    (line,) = str(info.value).splitlines()
    assert line.startswith("model.lora: ") and "pip install" in line
    assert not Path(cfg.output_dir).exists()


def test_a_target_module_the_model_lacks_is_a_config_error(make_config):
    with pytest.raises(ConfigError, match=r"model.lora.target_modules: \['nope_proj'\]"):
        loop.build_run(make_config(PRESET, "model.lora.target_modules=[nope_proj]"))


def test_the_sft_stage_refuses_lora(tiny_dir, tmp_path):
    cfg = load_config(None, [f"model.policy={tiny_dir}", f"sft.data={tmp_path / 'x.jsonl'}", "model.lora.rank=4"])
    with pytest.raises(ConfigError, match="model.lora: LoRA applies to RL training"):
        run_sft(cfg)
