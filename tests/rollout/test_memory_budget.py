"""The rollout memory budget: prompts rolled out in chunks whose KV cache fits max_batch_tokens, joined into
the rollout an unchunked call gives (the same samples with per-row random streams)."""

import pytest
import torch

from reinforcepp.rollout import Rollout, RowStreams, SamplingParams, TorchEngine
from reinforcepp.rollout.budget import prompt_chunks
from reinforcepp.testing import tiny_model, tiny_tokenizer

from test_torch_engine import BACKENDS, TEXTS, _spread

FIELDS = ("prompt_ids", "prompt_mask", "response_ids", "response_mask", "logprobs", "finished")
# EOS ids the tiny model samples often: rows stop at different steps
PARAMS = SamplingParams(max_new_tokens=12, temperature=1.3, top_p=0.95, eos_token_ids=(5, 9))


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    return _spread(tiny_model(len(tok), hidden=64, layers=2, heads=4, seed=1), seed=1)


@pytest.fixture(scope="module")
def prompts(tok):
    return [tok.encode(t) for t in TEXTS]  # lengths 6, 4, 12, 1, 6, 18


def streams(prompts, n, seed=7):
    return RowStreams.for_prompts(seed, 3, torch.arange(len(prompts)), n)


def assert_same_samples(a: Rollout, b: Rollout):
    """Identical tokens, masks and stops. Log-probs to float rounding only: the matmul kernels' summation
    order depends on the batch's shape (a row's log-probs differ by ~1e-6 between batches of 2 and 12 rows
    of the same prompt, chunking or not)."""
    for field in FIELDS:
        if field != "logprobs":
            assert torch.equal(getattr(a, field), getattr(b, field)), field
    torch.testing.assert_close(a.logprobs, b.logprobs, atol=1e-5, rtol=0)


def budget_for(rows, longest_prompt, max_new_tokens=PARAMS.max_new_tokens):
    return rows * (longest_prompt + max_new_tokens)


def test_chunks_are_consecutive_and_fit_the_budget():
    lengths = [3, 5, 2, 8, 1, 1]
    # n = 2, T = 4: prompts 0-1 fit 4 rows x (5 + 4) = 36 slots, adding prompt 2 needs 6 x 9 = 54
    assert prompt_chunks(lengths, 2, 4, 40) == [(0, 2), (2, 3), (3, 4), (4, 6)]
    assert prompt_chunks(lengths, 2, 4, None) == [(0, 6)]
    assert prompt_chunks(lengths, 2, 4, 10**6) == [(0, 6)]
    assert prompt_chunks(lengths, 2, 4, 1) == [(i, i + 1) for i in range(6)]  # one prompt's samples each


@pytest.mark.parametrize("fast", BACKENDS, ids=["fast", "hf"])
def test_a_budgeted_rollout_equals_the_unbudgeted_one_with_row_streams(model, tok, prompts, fast):
    n = 2
    whole = TorchEngine(model, tok, fast_path=fast).generate(prompts, PARAMS, n, streams(prompts, n))
    lengths = whole.response_mask.sum(1)
    assert lengths.unique().numel() > 1 and whole.finished.any()  # rows stopped early, at different steps
    engine = TorchEngine(model, tok, fast_path=fast, max_batch_tokens=budget_for(2 * n, 12))
    chunked = engine.generate(prompts, PARAMS, n, streams(prompts, n))
    assert engine.last_stats["chunks"] == 4  # prompts [0, 2), [2, 4), [4, 5), [5, 6): the last has 18 tokens
    assert_same_samples(chunked, whole)


def test_chunks_with_different_prompt_and_response_lengths_are_padded_to_the_whole_batch(model, tok, prompts):
    """Each chunk's rows are exactly what the chunk alone gives, left padded to the longest prompt of all and
    right padded to the longest response of all (pad id, mask 0, log-prob 0)."""
    n = 2
    budget = budget_for(2 * n, 18)  # two prompts per chunk
    keys = streams(prompts, n, seed=13).keys
    engine = TorchEngine(model, tok, max_batch_tokens=budget)
    r = engine.generate(prompts, PARAMS, n, RowStreams(keys))
    chunks = prompt_chunks([len(p) for p in prompts], n, PARAMS.max_new_tokens, budget)
    assert chunks == [(0, 2), (2, 4), (4, 6)] and engine.last_stats["chunks"] == 3
    alone = TorchEngine(model, tok)
    parts = [alone.generate(prompts[lo:hi], PARAMS, n, RowStreams(keys[lo * n : hi * n])) for lo, hi in chunks]
    assert len({part.prompt_ids.shape[1] for part in parts}) == 3  # chunk prompt lengths 6, 12, 18
    assert len({part.response_ids.shape[1] for part in parts}) == 2  # chunk response lengths 11, 12, 12
    Lp, T = r.prompt_ids.shape[1], r.response_ids.shape[1]
    assert Lp == max(len(p) for p in prompts) and T == max(part.response_ids.shape[1] for part in parts)
    pad = engine.pad_token_id
    for part, (lo, hi) in zip(parts, chunks):
        rows, lp, t = slice(lo * n, hi * n), part.prompt_ids.shape[1], part.response_ids.shape[1]
        assert torch.equal(r.prompt_ids[rows, Lp - lp :], part.prompt_ids)
        assert torch.equal(r.prompt_mask[rows, Lp - lp :], part.prompt_mask)
        assert (r.prompt_ids[rows, : Lp - lp] == pad).all() and not r.prompt_mask[rows, : Lp - lp].any()
        for field in ("response_ids", "response_mask", "logprobs"):
            assert torch.equal(getattr(r, field)[rows, :t], getattr(part, field)), field
        assert torch.equal(r.finished[rows], part.finished)
        assert (r.response_ids[rows, t:] == pad).all() and not r.response_mask[rows, t:].any()
        assert not r.logprobs[rows, t:].any()


def test_a_budget_below_one_prompt_group_runs_one_group_per_chunk(model, tok, prompts):
    n = 3
    whole = TorchEngine(model, tok).generate(prompts, PARAMS, n, streams(prompts, n))
    engine = TorchEngine(model, tok, max_batch_tokens=1)
    assert_same_samples(engine.generate(prompts, PARAMS, n, streams(prompts, n)), whole)
    assert engine.last_stats["chunks"] == len(prompts)


def test_a_generator_is_consumed_chunk_after_chunk(model, tok, prompts):
    """With one torch.Generator the chunked samples are reproducible but differ from the unchunked ones."""
    engine = TorchEngine(model, tok, max_batch_tokens=budget_for(2, 18))  # one prompt per chunk
    a, b = (engine.generate(prompts, PARAMS, 2, torch.Generator().manual_seed(0)) for _ in range(2))
    assert engine.last_stats["chunks"] == 6
    for field in FIELDS:
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    assert a.response_ids.shape[0] == 12 and a.prompt_ids.shape == (12, 18)
    whole = TorchEngine(model, tok).generate(prompts, PARAMS, 2, torch.Generator().manual_seed(0))
    assert not torch.equal(a.response_ids, whole.response_ids)


def test_the_budget_must_be_positive(model, tok):
    for bad in (0, -5):
        with pytest.raises(ValueError, match="max_batch_tokens must be > 0"):
            TorchEngine(model, tok, max_batch_tokens=bad)
