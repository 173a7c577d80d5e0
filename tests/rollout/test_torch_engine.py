"""TorchEngine against HF generate and a full forward pass, on tiny random models (both backends)."""

import pytest
import torch

from reinforcepp.rollout import Rollout, RolloutEngine, SamplingParams, TorchEngine
from reinforcepp.rollout.torch_engine import fast_path_unsupported_reason
from reinforcepp.testing import tiny_model, tiny_tokenizer

TEXTS = ["12+34=", "7+8=", "what is 5+5?", "a", "99-1=9", "hello there, world"]
# The engine (a token at a time, with a KV cache) and a full forward are float32 with other matmul shapes, so
# other summation orders: their log-probs may differ by the float32 rounding of reductions over the hidden
# size 64 on tempered logits of size <= LOGIT_BOUND, eps * 64 * LOGIT_BOUND = 6.1e-5 (seen: <= 4.3e-6 on
# 3 CPU code paths).
LOGIT_BOUND = 8.0
LOGPROB_ATOL = torch.finfo(torch.float32).eps * 64 * LOGIT_BOUND


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def _spread(model, std=0.15, seed=0):
    """Random weights with larger scale than HF's init, so that logits are peaked and outputs varied."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model.eval()


def _llama(vocab, kv_heads=4, seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=kv_heads, max_position_embeddings=256, pad_token_id=0, eos_token_id=1,
        bos_token_id=None, tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    return _spread(LlamaForCausalLM(config).float(), seed=seed)


def _qwen(kind, vocab, seed=0):
    import transformers

    cls = {"qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
           "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM)}[kind]
    config = cls[0](
        vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=256, pad_token_id=0, eos_token_id=1,
        bos_token_id=None, tie_word_embeddings=False, use_sliding_window=False,
    )
    torch.manual_seed(seed)
    model = _spread(cls[1](config).float(), seed=seed)
    with torch.no_grad():  # non-zero biases (qwen2 has q/k/v biases)
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.1)
    return model


MODELS = {
    "llama": lambda v: _spread(tiny_model(v, hidden=64, layers=2, heads=4, seed=1), seed=1),
    "llama-gqa": lambda v: _llama(v, kv_heads=2, seed=2),
    "qwen2": lambda v: _qwen("qwen2", v, seed=3),
    "qwen3": lambda v: _qwen("qwen3", v, seed=4),
}


@pytest.fixture(scope="module")
def models(tok):
    return {name: make(len(tok)) for name, make in MODELS.items()}


@pytest.fixture(scope="module")
def model(models):
    return models["llama"]


@pytest.fixture(scope="module")
def prompts(tok):
    return [tok(t)["input_ids"] for t in TEXTS]


def left_pad(prompts, pad=0):
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask


def recompute_logprobs(model, r: Rollout, temperature: float) -> torch.Tensor:
    """log softmax(logits / T) of each response token, by one forward over prompt + response."""
    ids = torch.cat([r.prompt_ids, r.response_ids], 1)
    mask = torch.cat([r.prompt_mask, r.response_mask], 1)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits.float()
    Lp, T = r.prompt_ids.shape[1], r.response_ids.shape[1]
    logits = logits[:, Lp - 1 : Lp - 1 + T] / temperature
    assert logits.abs().max() <= LOGIT_BOUND  # LOGPROB_ATOL's premise
    return torch.log_softmax(logits, -1).gather(-1, r.response_ids.unsqueeze(-1)).squeeze(-1) * r.response_mask


def chi_square(counts, probs):
    """Pearson statistic over the categories with expected count >= 5 (the rest lumped together)."""
    expected = probs * counts.sum()
    big = expected >= 5
    obs = torch.cat([counts[big], counts[~big].sum().view(1)])
    exp = torch.cat([expected[big], expected[~big].sum().view(1)])
    keep = exp > 0
    return ((obs[keep] - exp[keep]) ** 2 / exp[keep]).sum().item(), int(keep.sum()) - 1


def chi_square_bound(dof):
    """About the 1e-4 upper tail of chi-square(dof) (Wilson-Hilferty)."""
    return dof * (1 - 2 / (9 * dof) + 3.8 * (2 / (9 * dof)) ** 0.5) ** 3


BACKENDS = [None, False]  # auto (fast path for these models), generic HF forward


@pytest.mark.parametrize("fast", BACKENDS, ids=["fast", "hf"])
@pytest.mark.parametrize("name", list(MODELS))
def test_greedy_equals_hf_generate(models, tok, prompts, name, fast):
    model = models[name]
    if fast is None:
        assert fast_path_unsupported_reason(model) is None
    ids, mask = left_pad(prompts)
    T = 12
    with torch.no_grad():
        ref = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=T, pad_token_id=0)
    ref = ref[:, ids.shape[1] :]
    engine = TorchEngine(model, tok, fast_path=fast)
    r = engine.generate(prompts, SamplingParams(max_new_tokens=T, greedy=True))
    assert engine.last_backend == ("fast" if fast is None else "hf")
    assert torch.equal(r.response_ids, ref), (r.response_ids, ref)
    assert len(set(map(tuple, r.response_ids.tolist()))) > 1  # the test model is not degenerate
    # logprobs of greedy decoding are at temperature 1
    torch.testing.assert_close(r.logprobs, recompute_logprobs(model, r, 1.0), atol=LOGPROB_ATOL, rtol=0)


@pytest.mark.parametrize("fast", BACKENDS, ids=["fast", "hf"])
@pytest.mark.parametrize("name", ["llama", "llama-gqa", "qwen3"])
def test_logprobs_equal_full_forward(models, tok, prompts, name, fast):
    model = models[name]
    params = SamplingParams(max_new_tokens=10, temperature=0.7, top_k=6, top_p=0.9)
    r = TorchEngine(model, tok, fast_path=fast).generate(prompts, params, n=3, generator=torch.Generator().manual_seed(0))
    ref = recompute_logprobs(model, r, params.temperature)
    torch.testing.assert_close(r.logprobs, ref, atol=LOGPROB_ATOL, rtol=0)
    assert (r.logprobs[r.response_mask == 0] == 0).all()
    assert (r.logprobs[r.response_mask == 1] < 0).all()


def test_rollout_layout_and_dtypes(model, tok, prompts):
    n, T = 3, 7
    r = TorchEngine(model, tok).generate(prompts, SamplingParams(max_new_tokens=T, eos_token_ids=(999,)), n=n)
    B = len(prompts) * n
    ids, mask = left_pad(prompts)
    assert torch.equal(r.prompt_ids, ids.repeat_interleave(n, 0))
    assert torch.equal(r.prompt_mask, mask.repeat_interleave(n, 0))
    assert r.response_ids.shape == r.response_mask.shape == r.logprobs.shape == (B, T)
    assert r.finished.shape == (B,)
    assert r.prompt_ids.dtype == r.prompt_mask.dtype == r.response_ids.dtype == r.response_mask.dtype == torch.int64
    assert r.logprobs.dtype == torch.float32 and r.finished.dtype == torch.bool
    assert all(t.device.type == "cpu" for t in (r.prompt_ids, r.response_ids, r.logprobs, r.finished))
    assert r.num_sequences == B and r.response_lengths().tolist() == [T] * B
    assert not r.finished.any()  # cut at max_new_tokens
    engine: RolloutEngine = TorchEngine(model, tok)  # satisfies the protocol
    assert callable(engine.generate) and callable(engine.sync_weights)


def test_n_samples_are_contiguous(model, tok, prompts):
    n = 4
    greedy = TorchEngine(model, tok).generate(prompts, SamplingParams(max_new_tokens=6, greedy=True), n=n)
    one = TorchEngine(model, tok).generate(prompts, SamplingParams(max_new_tokens=6, greedy=True))
    assert torch.equal(greedy.response_ids, one.response_ids.repeat_interleave(n, 0))
    sampled = TorchEngine(model, tok).generate(
        prompts, SamplingParams(max_new_tokens=8, temperature=1.5), n=n, generator=torch.Generator().manual_seed(1)
    )
    groups = sampled.response_ids.view(len(prompts), n, -1)
    assert any(len({tuple(x) for x in g.tolist()}) > 1 for g in groups)  # the samples of a prompt differ


@pytest.mark.parametrize("fast", BACKENDS, ids=["fast", "hf"])
def test_seeded_generator_is_reproducible(model, tok, prompts, fast):
    engine = TorchEngine(model, tok, fast_path=fast)
    params = SamplingParams(max_new_tokens=10, temperature=1.2, top_p=0.95)
    a = engine.generate(prompts, params, n=2, generator=torch.Generator().manual_seed(11))
    b = engine.generate(prompts, params, n=2, generator=torch.Generator().manual_seed(11))
    c = engine.generate(prompts, params, n=2, generator=torch.Generator().manual_seed(12))
    assert torch.equal(a.response_ids, b.response_ids) and torch.equal(a.logprobs, b.logprobs)
    assert not torch.equal(a.response_ids, c.response_ids)


def test_top_k_one_equals_greedy(model, tok, prompts):
    engine = TorchEngine(model, tok)
    greedy = engine.generate(prompts, SamplingParams(max_new_tokens=10, greedy=True))
    top1 = engine.generate(
        prompts, SamplingParams(max_new_tokens=10, temperature=0.8, top_k=1), generator=torch.Generator().manual_seed(3)
    )
    assert torch.equal(greedy.response_ids, top1.response_ids)


@pytest.mark.parametrize("compact", [0.25, None], ids=["compact", "no-compact"])
@pytest.mark.parametrize("fast", BACKENDS, ids=["fast", "hf"])
def test_eos_stops_each_sequence(model, tok, prompts, fast, compact):
    engine = TorchEngine(model, tok, fast_path=fast, compact_fraction=compact)
    T = 14
    free = engine.generate(prompts, SamplingParams(max_new_tokens=T, greedy=True, eos_token_ids=(999,)))
    # use tokens that the free run produces at different steps as EOS ids
    firsts = {}
    for row in free.response_ids.tolist():
        for t, token in enumerate(row):
            firsts.setdefault(token, set()).add(t)
    eos = tuple(sorted(firsts, key=lambda k: -len(firsts[k]))[:2])
    r = engine.generate(prompts, SamplingParams(max_new_tokens=T, greedy=True, eos_token_ids=eos))
    stopped = 0
    for i, row in enumerate(free.response_ids.tolist()):
        hit = [t for t, token in enumerate(row) if token in eos]
        length = hit[0] + 1 if hit else T
        stopped += bool(hit)
        assert r.response_mask[i].sum() == length
        assert r.response_ids[i, :length].tolist() == row[:length]
        assert (r.response_ids[i, length:] == 0).all() and (r.response_mask[i, length:] == 0).all()
        assert (r.logprobs[i, length:] == 0).all()
        assert bool(r.finished[i]) == bool(hit)
    assert 0 < stopped < len(prompts)
    assert r.response_ids.shape[1] == int(r.response_lengths().max())
    assert (engine.last_stats["compactions"] > 0) == bool(compact)


@pytest.mark.parametrize("fast", BACKENDS, ids=["fast", "hf"])
def test_min_new_tokens_forbids_eos_until_then(model, tok, prompts, fast):
    engine = TorchEngine(model, tok, fast_path=fast)
    free = engine.generate(prompts, SamplingParams(max_new_tokens=8, greedy=True, eos_token_ids=(999,)))
    eos = free.response_ids[0, 0].item()  # greedy's first token for prompt 0: an EOS it would stop on at once
    stopped = engine.generate(prompts, SamplingParams(max_new_tokens=8, greedy=True, eos_token_ids=(eos,)))
    assert stopped.response_mask[0].sum() == 1
    held = engine.generate(prompts, SamplingParams(max_new_tokens=8, greedy=True, eos_token_ids=(eos,), min_new_tokens=3))
    for i in range(len(prompts)):
        length = int(held.response_mask[i].sum())
        assert length >= 3
        assert eos not in held.response_ids[i, :3].tolist()
        if length < 8:  # stopped: on the EOS, at the first chance it had
            assert held.response_ids[i, length - 1].item() == eos
    # sampling: EOS never drawn in the first 3 tokens, even when it is likely
    sampled = engine.generate(prompts, SamplingParams(max_new_tokens=4, eos_token_ids=(eos,), min_new_tokens=4), n=8,
                              generator=torch.Generator().manual_seed(0))
    assert (sampled.response_mask.sum(1) == 4).all() and eos not in sampled.response_ids.flatten().tolist()
    # the recorded log-probs are the policy's own (EOS unmasked), as the trainer recomputes them
    with torch.no_grad():
        for i, p in enumerate(prompts):
            first = torch.log_softmax(model(torch.tensor([p])).logits[0, -1].float(), dim=-1)
            rows = slice(8 * i, 8 * i + 8)
            torch.testing.assert_close(sampled.logprobs[rows, 0], first[sampled.response_ids[rows, 0]],
                                       rtol=0, atol=LOGPROB_ATOL)


def test_eos_ids_from_model_and_tokenizer(tok, prompts):
    model = _spread(tiny_model(len(tok), hidden=64, layers=2, heads=4, seed=1), seed=1)
    engine = TorchEngine(model, tok)
    free = engine.generate(prompts, SamplingParams(max_new_tokens=10, greedy=True, eos_token_ids=(999,)))
    a, b = free.response_ids[0, 2].item(), free.response_ids[1, 3].item()
    model.generation_config.eos_token_id = [a, b]  # several EOS ids, as chat models have
    r = engine.generate(prompts, SamplingParams(max_new_tokens=10, greedy=True))
    assert r.finished[0] and r.finished[1]
    assert r.response_mask[0].sum() <= 3 and r.response_mask[1].sum() <= 4
    # explicit ids win over the model's
    r = engine.generate(prompts, SamplingParams(max_new_tokens=10, greedy=True, eos_token_ids=(999,)))
    assert not r.finished.any()


@pytest.mark.parametrize("fast", BACKENDS, ids=["fast", "hf"])
def test_stop_strings(model, tok, prompts, fast):
    engine = TorchEngine(model, tok, fast_path=fast)
    T = 16
    free = engine.generate(prompts, SamplingParams(max_new_tokens=T, greedy=True, eos_token_ids=(999,)))
    pieces = [tok.convert_ids_to_tokens(row) for row in free.response_ids.tolist()]
    # two consecutive one-character tokens from the middle of the first response
    t0 = next(t for t in range(4, T - 1) if len(pieces[0][t]) == len(pieces[0][t + 1]) == 1)
    stop = pieces[0][t0] + pieces[0][t0 + 1]
    r = engine.generate(prompts, SamplingParams(max_new_tokens=T, greedy=True, eos_token_ids=(999,), stop_strings=(stop,)))
    for i, toks in enumerate(pieces):
        # the first token after which the decoded response contains the stop string
        length = next((t + 1 for t in range(T) if stop in "".join(toks[: t + 1])), None)
        assert r.response_mask[i].sum() == (length or T), (i, toks, stop)
        assert r.response_ids[i, : length or T].tolist() == free.response_ids[i, : length or T].tolist()
        assert bool(r.finished[i]) == (length is not None)
        if length:
            assert tok.decode(r.response_ids[i, :length]).endswith(stop)
    assert r.finished[0] and r.response_mask[0].sum() <= t0 + 2


def test_stop_string_matcher_tail_window(tok):
    from reinforcepp.rollout.stop import StopStringMatcher

    m = StopStringMatcher(tok, ["abc", "zz"], num_sequences=2, tail_tokens=3)
    streams = {0: "xxabcq", 1: "zqzzqq"}
    running, stopped_at = [0, 1], {}
    for t in range(6):
        hit = m.update(running, [tok.convert_tokens_to_ids(streams[row][t]) for row in running])
        for row in hit:
            stopped_at[row] = t
        running = [row for row in running if row not in hit]
    assert stopped_at == {0: 4, 1: 3}  # at the token that completes the stop string


def test_first_token_frequencies_match_softmax(model, tok, prompts):
    """Many one-token samples of one prompt: frequencies ~ softmax(logits / T)."""
    T, n = 1.7, 40_000
    prompt = prompts[2]
    r = TorchEngine(model, tok).generate(
        [prompt], SamplingParams(max_new_tokens=1, temperature=T), n=n, generator=torch.Generator().manual_seed(5)
    )
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt])).logits[0, -1].double()
    probs = torch.softmax(logits / T, -1)
    counts = torch.bincount(r.response_ids[:, 0], minlength=probs.numel()).double()
    stat, dof = chi_square(counts, probs)
    assert dof > 10
    assert stat < chi_square_bound(dof), (stat, dof)
    # the returned logprobs are those of the tempered distribution
    torch.testing.assert_close(r.logprobs[:, 0].double(), probs.log()[r.response_ids[:, 0]], atol=LOGPROB_ATOL, rtol=0)


def test_engine_uses_current_weights_and_restores_mode(tok, prompts):
    model = _spread(tiny_model(len(tok), hidden=64, layers=2, heads=4, seed=6), seed=6)
    model.train()
    engine = TorchEngine(model, tok)
    params = SamplingParams(max_new_tokens=8, greedy=True)
    before = engine.generate(prompts, params)
    assert model.training
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight.mul_(-3.0)  # the trainer updates the policy in place
    engine.sync_weights(model)  # no-op
    after = engine.generate(prompts, params)
    assert not torch.equal(before.response_ids, after.response_ids)
    ids, mask = left_pad(prompts)
    model.eval()
    with torch.no_grad():
        ref = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=8, pad_token_id=0)
    assert torch.equal(after.response_ids, ref[:, ids.shape[1] :])


def test_edge_cases(model, tok, prompts):
    engine = TorchEngine(model, tok)
    r = engine.generate(prompts, SamplingParams(max_new_tokens=0), n=2)
    assert r.response_ids.shape == (len(prompts) * 2, 0) and r.prompt_ids.shape[0] == len(prompts) * 2
    r = engine.generate([], SamplingParams(max_new_tokens=4))
    assert r.num_sequences == 0
    with pytest.raises(ValueError):
        engine.generate([[]], SamplingParams(max_new_tokens=4))
    with pytest.raises(ValueError):
        engine.generate(prompts, SamplingParams(max_new_tokens=4, temperature=0.0))
    with pytest.raises(ValueError):
        engine.generate(prompts, SamplingParams(max_new_tokens=4), n=0)


def test_unsupported_model_falls_back_to_hf_forward(tok, prompts):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=len(tok), n_positions=128, n_embd=32, n_layer=2, n_head=4, pad_token_id=0,
                        eos_token_id=1, bos_token_id=1)
    torch.manual_seed(0)
    model = _spread(GPT2LMHeadModel(config))
    assert fast_path_unsupported_reason(model) is not None
    engine = TorchEngine(model, tok)
    r = engine.generate(prompts, SamplingParams(max_new_tokens=8, greedy=True))
    assert engine.last_backend == "hf"
    ids, mask = left_pad(prompts)
    with torch.no_grad():
        ref = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=8, pad_token_id=0)
    assert torch.equal(r.response_ids, ref[:, ids.shape[1] :])
    with pytest.raises(ValueError):
        TorchEngine(model, tok, fast_path=True).generate(prompts, SamplingParams(max_new_tokens=2))


def test_chunked_prefill_gives_the_same_result(model, tok, prompts, monkeypatch):
    import reinforcepp.rollout.llama_backend as te

    params = SamplingParams(max_new_tokens=8, greedy=True)
    whole = TorchEngine(model, tok).generate(prompts, params, n=2)
    monkeypatch.setattr(te, "_PREFILL_TOKENS", 20)  # two or three prompts per chunk
    chunked = TorchEngine(model, tok).generate(prompts, params, n=2)
    assert torch.equal(whole.response_ids, chunked.response_ids)
    torch.testing.assert_close(whole.logprobs, chunked.logprobs, atol=LOGPROB_ATOL, rtol=0)


def test_sliding_window_model_uses_hf_forward(tok, prompts):
    from transformers import MistralConfig, MistralForCausalLM

    config = MistralConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, sliding_window=5, max_position_embeddings=256, pad_token_id=0, eos_token_id=1,
        bos_token_id=None,
    )
    torch.manual_seed(0)
    model = _spread(MistralForCausalLM(config).float())
    assert fast_path_unsupported_reason(model, max_length=30) is not None
    assert fast_path_unsupported_reason(model, max_length=5) is None
    engine = TorchEngine(model, tok)
    r = engine.generate(prompts, SamplingParams(max_new_tokens=10, greedy=True), n=2)
    assert engine.last_backend == "hf"
    ids, mask = left_pad(prompts)
    with torch.no_grad():
        ref = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=10, pad_token_id=0)
    assert torch.equal(r.response_ids, ref[:, ids.shape[1] :].repeat_interleave(2, 0))
