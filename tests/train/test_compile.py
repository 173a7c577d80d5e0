"""train.compile: decoder layers compiled per block give the log-probs and gradients of the eager model, do not
recompile for new shapes, leave cache-carrying (shared-prefix) calls eager, and train end to end (full model,
PPO's critic, LoRA)."""

import copy
import json
from pathlib import Path

import pytest
import torch

from reinforcepp.presets import PRESETS_DIR
from reinforcepp.testing import tiny_model
from reinforcepp.train.compiled import compile_layers
from reinforcepp.train.forward import policy_logprobs
from reinforcepp.train.loop import train
from reinforcepp.train.sharding import decoder_layers

from test_shared_prefix import V, grouped_experience

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(autouse=True)
def float64_rms_norm(monkeypatch):
    """HF's RMSNorm computes in float32 whatever the input; here in the input's dtype (its formula), so that the
    float64 comparison below carries float64 rounding only (as in test_shared_prefix.py)."""
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))

    monkeypatch.setattr(LlamaRMSNorm, "forward", forward)


def logprobs_and_grads(model, exp, shared=False):
    model.zero_grad(set_to_none=True)
    logp, _ = policy_logprobs(model, exp, 1.0, shared_prefix=shared)
    (logp * exp.response_mask).sum().backward()
    return logp.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_compiled_layers_without_gradient_match_eager_in_float64():
    """The fast check (one graph, no backward): the no-grad passes (log pi_old, the reference)."""
    torch._dynamo.reset()
    eager = tiny_model(V).double().eval()
    compiled = copy.deepcopy(eager)
    compile_layers(compiled)
    with torch.no_grad():
        for seed, lens in ((0, (9, 3, 6)), (1, (4, 9, 4, 2))):
            exp = grouped_experience(prompt_lens=lens, seed=seed)
            torch.testing.assert_close(policy_logprobs(compiled, exp, 1.0)[0], policy_logprobs(eager, exp, 1.0)[0],
                                       rtol=1e-10, atol=1e-10)


@pytest.mark.slow  # ~25 s: compiles a forward and a backward graph
def test_compiled_layers_match_eager_in_float64_and_do_not_recompile_for_new_shapes():
    """float64: inductor fuses the norms, RoPE and SwiGLU and sums in another order, which moves float64 results by
    ~1e-16 relative per operation (a few hundred operations deep here: far below 1e-10); float32 would move
    them by ~1e-7 (checked by hand: 4.8e-7 absolute on log-probs of ~-3.7)."""
    torch._dynamo.reset()
    eager = tiny_model(V).double().eval()
    compiled = copy.deepcopy(eager)
    assert compile_layers(compiled) == len(decoder_layers(eager)) > 0
    counters = torch._dynamo.utils.counters
    counters.clear()
    for seed, lens in ((0, (9, 3, 6)), (1, (4, 9, 4, 2)), (2, (2,))):  # three batch and prompt shapes
        exp = grouped_experience(prompt_lens=lens, seed=seed)
        want_logp, want_grads = logprobs_and_grads(eager, exp)
        logp, grads = logprobs_and_grads(compiled, exp)
        torch.testing.assert_close(logp, want_logp, rtol=1e-10, atol=1e-10)
        assert grads.keys() == want_grads.keys()
        for name, g in grads.items():
            scale = want_grads[name].abs().max().item()
            torch.testing.assert_close(g, want_grads[name], rtol=1e-10, atol=1e-10 * scale, msg=name)
        with torch.no_grad():  # the reference / old-policy passes: one more graph, once
            torch.testing.assert_close(policy_logprobs(compiled, exp, 1.0)[0], policy_logprobs(eager, exp, 1.0)[0],
                                       rtol=1e-10, atol=1e-10)
    assert counters["stats"]["unique_graphs"] == 2  # with and without gradient, whatever the shapes
    # a layer called with a KV cache (shared prefix) runs eagerly: the same numbers, no new graph
    exp = grouped_experience()
    want_logp, want_grads = logprobs_and_grads(eager, exp, shared=True)
    logp, grads = logprobs_and_grads(compiled, exp, shared=True)
    torch.testing.assert_close(logp, want_logp, rtol=0, atol=0)
    assert counters["stats"]["unique_graphs"] == 2


def metrics(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow  # 20-45 s each: compilation
@pytest.mark.parametrize("preset, extra", [
    ("grpo.yaml", ("train.shared_prefix=false",)),  # the compiled layers in every forward
    ("ppo.yaml", ()),  # the critic's layers too
    ("reinforce_pp.yaml", ("model.lora.rank=4", "model.lora.alpha=8")),  # LoRA: reference = adapters off
])
def test_a_short_run_with_compiled_layers_trains(make_config, preset, extra):
    if any(o.startswith("model.lora") for o in extra):
        pytest.importorskip("peft")
    torch._dynamo.reset()
    cfg = make_config(PRESETS_DIR / preset, "train.compile=true", "rollout.n_samples_per_prompt=2", *extra)
    train(cfg)
    rows = [m for m in metrics(cfg.output_dir) if "timing/step" in m]
    assert len(rows) == 2
    assert all(torch.isfinite(torch.tensor(m["actor/grad_norm"])) for m in rows)
