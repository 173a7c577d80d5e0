"""policy_logprobs: the fused LM-head path of Llama-family models gives the log-probs, entropy and gradients
of the model's own forward; other models take their own forward."""

import pytest
import torch

from reinforcepp.algos import entropy_from_logits, token_logprobs
from reinforcepp.testing import random_experience as make_random_experience
from reinforcepp.testing import tiny_model
from reinforcepp.train.forward import plain_lm_head, policy_logprobs

B, LP, T, V = 6, 5, 7, 40
# Llama models here are float64 (the package keeps float64 throughout): the fused and the plain path sum in
# another order, which moves log-probs, entropies and gradients by ~1e-15; float32 would move them by ~1e-6.
FLOAT64_TOL = dict(rtol=0, atol=1e-12)


def random_experience(seed):
    return make_random_experience(B, LP, T, V, seed)


def own_forward(model, exp, temperature):
    """The model's forward with logits for every position, then the package's formulas."""
    logits = model(**exp.model_inputs("cpu"), use_cache=False).logits[:, -T - 1 : -1] / temperature
    return token_logprobs(logits, exp.response_ids), entropy_from_logits(logits)


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_llama_path_equals_the_models_own_forward(temperature, chunked):
    model = tiny_model(V).double().train()
    assert plain_lm_head(model) is model.lm_head
    exp = random_experience(3)
    g = torch.Generator().manual_seed(1)
    g_logp, g_ent = (torch.randn(exp.response_ids.shape, generator=g, dtype=torch.float64) for _ in range(2))

    def grads(logp, ent):
        loss = (logp * g_logp * exp.response_mask).sum() + (ent * g_ent * exp.response_mask).sum()
        return torch.autograd.grad(loss, list(model.parameters()))

    want_logp, want_ent = own_forward(model, exp, temperature)
    want = grads(want_logp, want_ent)
    logp, ent = policy_logprobs(model, exp, temperature, with_entropy=True, chunked=chunked)
    got = grads(logp, ent)
    assert logp.shape == ent.shape == exp.response_ids.shape
    torch.testing.assert_close(logp, want_logp, **FLOAT64_TOL)
    torch.testing.assert_close(ent, want_ent, **FLOAT64_TOL)
    for a, b in zip(got, want):  # the tied embedding / LM head included
        torch.testing.assert_close(a, b, **FLOAT64_TOL)
    assert max(a.abs().max() for a in got) > 0


def test_without_gradient_equals_the_models_own_forward():
    model = tiny_model(V).double()
    exp = random_experience(5)
    with torch.no_grad():
        logp, ent = policy_logprobs(model, exp, 0.8, with_entropy=True)
        want_logp, want_ent = own_forward(model, exp, 0.8)
    torch.testing.assert_close(logp, want_logp, **FLOAT64_TOL)
    torch.testing.assert_close(ent, want_ent, **FLOAT64_TOL)


def test_other_models_take_their_own_forward():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=V, n_embd=32, n_layer=1, n_head=2, n_positions=64)).eval()
    assert plain_lm_head(gpt2) is None
    exp = random_experience(4)
    with torch.no_grad():
        logp, _ = policy_logprobs(gpt2, exp, 1.0)
        want, _ = own_forward(gpt2, exp, 1.0)
    torch.testing.assert_close(logp, want)

    class Wrapper(torch.nn.Module):  # e.g. a DDP wrapper: its own forward must run
        def __init__(self, inner):
            super().__init__()
            self.lm_head = inner.lm_head

    assert plain_lm_head(Wrapper(tiny_model(V))) is None
    hooked = tiny_model(V)
    hooked.lm_head.register_forward_pre_hook(lambda module, args: None)  # e.g. FSDP's all-gather
    assert plain_lm_head(hooked) is None


def test_a_micro_batch_whose_rows_all_left_the_update_keeps_one_response_column():
    """Rows masked out (dynamic sampling, a skipped baseline, algo.mask_truncated) are trimmed like padding, but a
    micro-batch keeps one response column, so its forwards run as every other rank's do under FSDP."""
    exp = random_experience(5)
    exp.keep_rows(torch.tensor([True, False, False, True, False, False]))
    masked = exp.rows(torch.tensor([1, 2, 4]))
    assert masked.response_ids.shape == (3, 1) and masked.response_mask.sum() == 0
    with torch.no_grad():
        logp, _ = policy_logprobs(tiny_model(V).double(), masked, 1.0, shared_prefix=True)
    assert logp.shape == (3, 1) and torch.isfinite(logp).all()
    assert exp.rows(torch.tensor([0, 3])).response_ids.shape[1] >= 1
