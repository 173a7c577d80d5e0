"""The fast path's decode variants (fused QKV / gate-up weights, torch.compile of the decode step) against the
eager, unfused decode: the same tokens and log-probs to 1e-5, with sampling, EOS and batch compaction."""

import pytest
import torch

from reinforcepp.rollout import RowStreams, SamplingParams, TorchEngine
from reinforcepp.testing import tiny_model, tiny_tokenizer

from test_torch_engine import MODELS, TEXTS, _spread

ATOL = 1e-5
# temperature > 1 and two EOS ids the tiny models sample often: rows stop at different steps (compaction)
PARAMS = SamplingParams(max_new_tokens=12, temperature=1.3, top_p=0.95, eos_token_ids=(5, 9))
FUSED = dict(fuse_qkv=True, fuse_gate_up=True)


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def models(tok):
    return {name: make(len(tok)) for name, make in MODELS.items()}


@pytest.fixture(scope="module")
def prompts(tok):
    return [tok(t)["input_ids"] for t in TEXTS]


def _run(model, tok, prompts, n=2, params=PARAMS, **variant):
    engine = TorchEngine(model, tok, fast_path=True, **variant)
    keys = RowStreams.for_prompts(11, 0, torch.arange(len(prompts)), n)
    rollout = engine.generate(prompts, params, n, keys)
    return rollout, engine.last_stats


def _assert_same(a, b):
    assert torch.equal(a.response_ids, b.response_ids)
    assert torch.equal(a.response_mask, b.response_mask)
    assert torch.equal(a.finished, b.finished)
    torch.testing.assert_close(a.logprobs, b.logprobs, atol=ATOL, rtol=0)


@pytest.mark.parametrize("variant", [dict(fuse_qkv=True), dict(fuse_gate_up=True), FUSED], ids=["qkv", "gu", "both"])
@pytest.mark.parametrize("name", list(MODELS))
def test_fused_projections_equal_eager(models, tok, prompts, name, variant):
    eager, stats = _run(models[name], tok, prompts)
    fused, _ = _run(models[name], tok, prompts, **variant)
    assert stats["compactions"] > 0 and 0 < int(eager.finished.sum()) < eager.finished.numel()  # premise
    _assert_same(fused, eager)


def test_fused_weights_follow_the_policys_updates(tok, prompts):
    """The fused copies are rebuilt at each generate: an in-place update of the policy shows at the next call."""
    model = _spread(tiny_model(len(tok), hidden=64, layers=2, heads=4, seed=6), seed=6)
    engine = TorchEngine(model, tok, fast_path=True, **FUSED)
    greedy = SamplingParams(max_new_tokens=8, greedy=True)
    before = engine.generate(prompts, greedy)
    with torch.no_grad():  # the trainer's optimizer step: in place
        model.model.layers[0].self_attn.k_proj.weight.mul_(-2.0)
        model.model.layers[1].mlp.up_proj.weight.mul_(-3.0)
    after = engine.generate(prompts, greedy)
    assert not torch.equal(before.response_ids, after.response_ids)
    _assert_same(after, TorchEngine(model, tok, fast_path=True).generate(prompts, greedy))


def test_fused_projections_with_lora_adapters(tok, prompts):
    """LoRA terms are added to each slice of a fused projection's output, as to the unfused ones."""
    pytest.importorskip("peft")
    from reinforcepp.config.schema import LoRAConfig
    from reinforcepp.models import lora

    model = _spread(tiny_model(len(tok), hidden=64, layers=2, heads=4, seed=3), seed=3)
    wrapped = lora.add_lora(model, LoRAConfig(rank=4, alpha=8))
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for pname, p in wrapped.named_parameters():
            if "lora_B" in pname:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    eager, _ = _run(wrapped, tok, prompts)
    fused, _ = _run(wrapped, tok, prompts, **FUSED)
    _assert_same(fused, eager)


@pytest.mark.slow  # one compilation per model shape: 5-15 s each with a warm inductor cache, ~40 s cold
@pytest.mark.parametrize("fused", [False, True], ids=["unfused", "fused"])
@pytest.mark.parametrize("name", ["llama-gqa", "qwen3"])
def test_compiled_decode_equals_eager(models, tok, prompts, name, fused):
    """One whole graph (fullgraph: a graph break would raise) for every batch size and step: compaction
    shrinks the batch mid-run, and a second call with other prompt lengths reuses the compilation."""
    variant = dict(compile=True, **(FUSED if fused else {}))
    eager, stats = _run(models[name], tok, prompts)
    compiled, _ = _run(models[name], tok, prompts, **variant)
    assert stats["compactions"] > 0
    _assert_same(compiled, eager)
    greedy = SamplingParams(max_new_tokens=6, greedy=True)
    _assert_same(_run(models[name], tok, prompts[:3], n=3, params=greedy, **variant)[0],
                 _run(models[name], tok, prompts[:3], n=3, params=greedy)[0])
