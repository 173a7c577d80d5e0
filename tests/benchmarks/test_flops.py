"""The FLOP count of benchmarks/mfu.py (benchmarks/_flops.py) against a count by hand."""

import importlib.util
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "_flops.py"
_spec = importlib.util.spec_from_file_location("benchmarks_flops", _PATH)
flops = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = flops  # dataclasses look their module up there
_spec.loader.exec_module(flops)

# vocab 10, hidden 4, intermediate 8, 1 layer, 2 heads of dim 2, 1 KV head
SHAPE = flops.ModelShape(vocab=10, hidden=4, intermediate=8, layers=1, heads=2, kv_heads=1)


def test_layer_weights_by_hand():
    # q 4x4, k 4x2, v 4x2, o 4x4, gate/up/down 3 x 4x8
    assert SHAPE.layer_matmul_params() == 16 + 8 + 8 + 16 + 96 == 144


def test_forward_by_hand():
    # 3 tokens, no cache, logits on 2 positions:
    # weights 2 * 3 * 144 = 864; attention 4 * 1 layer * 2 heads * 2 dims * (1 + 2 + 3) keys = 96;
    # head 2 * 2 * 4 * 10 = 160
    assert flops.forward_flops(SHAPE, 3, 2) == 864 + 96 + 160
    # one token after 5 cached ones: it sees 6 keys
    assert flops.forward_flops(SHAPE, 1, 1, past=5) == 288 + 16 * 6 + 80


def test_rl_step_by_hand():
    # one prompt of 2 tokens, 2 samples, 3 response tokens, reference model, no critic
    prefill = 2 * 288 + 16 * (1 + 2) + 80  # once for both samples
    decode = 2 * ((288 + 16 * 3 + 80) + (288 + 16 * 4 + 80))  # tokens 1, 2 fed at past 2, 3
    score = 2 * (5 * 288 + 16 * (1 + 2 + 3 + 4 + 5) + 3 * 80)  # prompt + response, LM head on 3 positions
    got = flops.rl_step_flops(SHAPE, [2], n=2, response_len=3)
    assert got["rollout_prefill"] == prefill == 704
    assert got["rollout_decode"] == decode == 1696
    assert got["old_logp"] == got["ref_logp"] == score == 3840
    assert got["actor_train"] == 3 * score
    assert got["critic_values"] == got["critic_train"] == 0
    assert got["total"] == prefill + decode + 5 * score == 21600


def test_single_pass_needs_no_old_logp_forward():
    full = flops.rl_step_flops(SHAPE, [2], n=2, response_len=3)
    single = flops.rl_step_flops(SHAPE, [2], n=2, response_len=3, old_pass=False)
    assert single["old_logp"] == 0 and single["ref_logp"] == full["ref_logp"]
    assert single["total"] == full["total"] - full["old_logp"]


def test_critic_epochs_and_no_reference():
    got = flops.rl_step_flops(SHAPE, [2], n=1, response_len=3, reference=False, critic=True, epochs=2)
    value = 5 * 288 + 16 * 15 + 2 * 3 * 4  # no LM head, a scalar head on 3 positions
    assert got["ref_logp"] == 0
    assert got["critic_values"] == value
    assert got["critic_train"] == 3 * 2 * value
    assert got["actor_train"] == 3 * 2 * got["old_logp"]


def test_parameter_counts_of_known_models():
    assert flops.num_params(flops.TINY) == 4_200_704  # ../shared/bench/README.md
    assert flops.num_params(flops.SMOL) == 134_515_008  # SmolLM2-135M


def test_rejects_negative_counts():
    with pytest.raises(ValueError):
        flops.forward_flops(SHAPE, -1, 0)
