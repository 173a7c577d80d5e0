"""Per-row random streams: uniform, reproducible, and independent of how the batch is split."""

import pytest
import torch

from reinforcepp.rollout import RowStreams, SamplingParams, TorchEngine
from reinforcepp.rollout.streams import mix64, uniform_from_keys
from reinforcepp.testing import tiny_model, tiny_tokenizer

from test_torch_engine import BACKENDS, TEXTS, _spread, chi_square, chi_square_bound


def test_mix64_matches_splitmix64_in_python_integers():
    """The int64 tensor arithmetic is SplitMix64's finalizer computed modulo 2**64."""
    def reference(x):
        m = 2**64
        x = (x + 0x9E3779B97F4A7C15) % m
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) % m
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) % m
        return x ^ (x >> 31)

    inputs = [0, 1, 2, 12345, 2**62 + 7, -1, -(2**63)]
    got = mix64(torch.tensor(inputs, dtype=torch.int64)).tolist()
    assert [g % 2**64 for g in got] == [reference(x % 2**64) for x in inputs]


def test_uniforms_are_uniform_and_in_range():
    u = uniform_from_keys(torch.arange(200_000, dtype=torch.int64))
    assert float(u.min()) >= 0.0 and float(u.max()) < 1.0
    counts = torch.bincount((u * 50).long(), minlength=50).double()
    stat, dof = chi_square(counts, torch.full((50,), 1 / 50, dtype=torch.float64))
    assert stat < chi_square_bound(dof), stat


def test_streams_depend_on_seed_step_prompt_and_sample():
    positions = torch.arange(4)
    a = RowStreams.for_prompts(0, 1, positions, n=3).keys
    assert a.shape == (12,) and len(set(a.tolist())) == 12
    assert torch.equal(a, RowStreams.for_prompts(0, 1, positions, n=3).keys)
    for other in (RowStreams.for_prompts(1, 1, positions, 3), RowStreams.for_prompts(0, 2, positions, 3)):
        assert not set(other.keys.tolist()) & set(a.tolist())
    # a slice of the prompts has the slice of the keys: what each data-parallel rank computes
    assert torch.equal(RowStreams.for_prompts(0, 1, positions[2:], n=3).keys, a[6:])


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.mark.parametrize("compact", [0.25, None], ids=["compact", "no-compact"])
@pytest.mark.parametrize("fast", BACKENDS, ids=["fast", "hf"])
def test_a_split_batch_samples_what_the_whole_batch_samples(tok, fast, compact):
    """Rolling out prompts [0, 3) and [3, 6) separately (two ranks) draws the same tokens as [0, 6) at once."""
    model = _spread(tiny_model(len(tok), hidden=64, layers=2, heads=4, seed=1), seed=1)
    engine = TorchEngine(model, tok, fast_path=fast, compact_fraction=compact)
    prompts = [tok.encode(t) for t in TEXTS]
    params = SamplingParams(max_new_tokens=12, temperature=1.3, top_p=0.95, eos_token_ids=(5, 9))
    streams = RowStreams.for_prompts(7, 3, torch.arange(len(prompts)), n=2)
    whole = engine.generate(prompts, params, 2, streams)
    parts = [engine.generate(prompts[lo:hi], params, 2, RowStreams.for_prompts(7, 3, torch.arange(lo, hi), n=2))
             for lo, hi in ((0, 3), (3, 6))]
    for part, rows in zip(parts, (slice(0, 6), slice(6, 12))):
        width = part.response_ids.shape[1]
        assert torch.equal(part.response_ids, whole.response_ids[rows, :width])
        assert torch.equal(part.response_mask, whole.response_mask[rows, :width])
        assert not whole.response_mask[rows, width:].any()
    assert whole.response_mask.sum(1).unique().numel() > 1  # some rows stopped early: compaction mattered
    other = engine.generate(prompts, params, 2, RowStreams.for_prompts(8, 3, torch.arange(len(prompts)), n=2))
    assert not torch.equal(other.response_ids, whole.response_ids)


def test_row_streams_must_match_the_batch(tok):
    engine = TorchEngine(_spread(tiny_model(len(tok), hidden=32, layers=1, heads=2)), tok)
    with pytest.raises(ValueError, match="3 row streams for 2 prompts x 2 samples"):
        engine.generate([[3, 4], [5]], SamplingParams(max_new_tokens=2), 2, RowStreams(torch.arange(3)))
