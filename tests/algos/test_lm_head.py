"""head_logprobs: log-probs and entropy from hidden states and the LM head in row chunks equal the plain path
(logits in full, then log-softmax), values and gradients, at any chunking and temperature."""

import math

import pytest
import torch

from reinforcepp.algos import entropy_from_logits, head_logprobs, token_logprobs

N, H, V = 13, 8, 11
# Inputs are float64 and so is every path (the package computes in float64 for float64 inputs): the chunked
# and the plain path sum in another order, which moves values and gradients of size <= 20 by ~5e-15.
FLOAT64_TOL = dict(rtol=0, atol=1e-12)


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(N, H, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(V, H, generator=g, dtype=torch.float64, requires_grad=True)
    tokens = torch.randint(0, V, (N,), generator=g)
    g_logp, g_ent = torch.randn(N, generator=g, dtype=torch.float64), torch.randn(N, generator=g, dtype=torch.float64)
    return hidden, weight, tokens, g_logp, g_ent


def plain(hidden, weight, tokens, temperature):
    z = hidden @ weight.t() / temperature
    return token_logprobs(z, tokens), entropy_from_logits(z)


@pytest.mark.parametrize("rows", [1, 4, 5, 13, 100])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_values_and_gradients_equal_the_plain_path(rows, temperature):
    hidden, weight, tokens, g_logp, g_ent = inputs()
    logp, ent = plain(hidden, weight, tokens, temperature)
    want = torch.autograd.grad((logp * g_logp).sum() + (ent * g_ent).sum(), [hidden, weight])
    got_logp, got_ent = head_logprobs(hidden, weight, tokens, temperature, with_entropy=True, chunk_rows=rows)
    got = torch.autograd.grad((got_logp * g_logp).sum() + (got_ent * g_ent).sum(), [hidden, weight])
    torch.testing.assert_close(got_logp, logp, **FLOAT64_TOL)
    torch.testing.assert_close(got_ent, ent, **FLOAT64_TOL)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **FLOAT64_TOL)


def test_closed_form_uniform_head():
    """A zero head gives uniform logits: log pi = -log V and H = log V, and d log pi / dW = (onehot - 1/V) h."""
    hidden = torch.randn(3, H, requires_grad=True)
    weight = torch.zeros(V, H, requires_grad=True)
    tokens = torch.tensor([0, 4, 10])
    logp, ent = head_logprobs(hidden, weight, tokens, with_entropy=True, chunk_rows=2)
    torch.testing.assert_close(logp, torch.full((3,), -math.log(V)))
    torch.testing.assert_close(ent, torch.full((3,), math.log(V)))
    logp.sum().backward()
    expected = (torch.nn.functional.one_hot(tokens, V).float() - 1.0 / V).t() @ hidden.detach()
    torch.testing.assert_close(weight.grad, expected)
    torch.testing.assert_close(hidden.grad, torch.zeros(3, H))  # W = 0: the logits do not depend on h


def test_only_the_used_outputs_send_gradient():
    hidden, weight, tokens, g_logp, _ = inputs(1)
    logp, _ = plain(hidden, weight, tokens, 1.0)
    want = torch.autograd.grad((logp * g_logp).sum(), [hidden, weight])
    got_logp, got_ent = head_logprobs(hidden, weight, tokens, with_entropy=True, chunk_rows=3)
    got = torch.autograd.grad((got_logp * g_logp).sum(), [hidden, weight])  # entropy only logged
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **FLOAT64_TOL)
    assert got_ent is not None


def test_without_entropy_and_without_grad():
    hidden, weight, tokens, _, _ = inputs(2)
    with torch.no_grad():
        logp, ent = head_logprobs(hidden, weight, tokens, 1.3)
    assert ent is None and not logp.requires_grad
    torch.testing.assert_close(logp, plain(hidden, weight, tokens, 1.3)[0], **FLOAT64_TOL)


def test_bad_input_names_the_culprit():
    hidden, weight, tokens, _, _ = inputs()
    with pytest.raises(ValueError, match="temperature"):
        head_logprobs(hidden, weight, tokens, 0.0)
    with pytest.raises(ValueError, match="tokens"):
        head_logprobs(hidden, weight, tokens[:-1])
    with pytest.raises(ValueError, match="weight"):
        head_logprobs(hidden, weight[:, :-1], tokens)
