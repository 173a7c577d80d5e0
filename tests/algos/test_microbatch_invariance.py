"""With the optimizer step's global normalizer, the gradient does not depend on the micro-batch split.

Summing the losses of micro-batches (gradient accumulation) must give the gradient of the whole batch.
That holds only when each micro-batch divides by the *global* token (or sequence) count; dividing by
its own count is the bug OpenRLHF fixed in PR #1249 and verl in #5625, shown failing below.
"""

import pytest
import torch

from reinforcepp.algos import kl_loss, policy_loss, value_loss

B, T = 8, 10


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([1, 10, 3, 7, 2, 9, 5, 4])  # uneven on purpose
    mask = (torch.arange(T)[None] < lengths[:, None]).float()
    params = torch.randn(B, T, generator=g, dtype=torch.float64)
    return dict(
        params=params,
        old=params + 0.3 * torch.randn(B, T, generator=g, dtype=torch.float64),
        ref=params + 0.3 * torch.randn(B, T, generator=g, dtype=torch.float64),
        adv=torch.randn(B, T, generator=g, dtype=torch.float64),
        mask=mask,
    )


def loss_fn(kind, x, d, rows, **norm):
    m = d["mask"][rows]
    if kind == "policy":
        return policy_loss(x[rows], d["old"][rows], d["adv"][rows], m, **norm)[0]
    if kind == "kl":
        return kl_loss(x[rows], d["ref"][rows], m, "k3", **norm)
    return value_loss(x[rows], d["old"][rows], d["adv"][rows], m, clip=0.2, **norm)[0]


def accumulated_grad(kind, d, splits, agg, global_norm=True):
    x = d["params"].clone().requires_grad_(True)
    num_tokens = d["mask"].sum() if global_norm else None
    num_seqs = torch.tensor(float(B)) if global_norm else None
    for rows in torch.arange(B).split(splits):
        loss_fn(kind, x, d, rows, agg=agg, num_tokens=num_tokens, num_seqs=num_seqs).backward()
    return x.grad


@pytest.mark.parametrize("kind", ["policy", "kl", "value"])
@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_gradient_is_invariant_to_the_micro_batch_split(kind, agg):
    d = batch()
    full = accumulated_grad(kind, d, B, agg)
    for splits in (1, 2, 3, [1, 5, 2]):
        torch.testing.assert_close(accumulated_grad(kind, d, splits, agg), full, rtol=1e-12, atol=1e-14)


def test_per_micro_batch_normalization_changes_the_gradient():
    # The control: averaging per-micro-batch token means (4 micro-batches of 2) is not the batch's
    # token mean when token counts are uneven. Without this the invariance test would prove nothing.
    d = batch()
    full = accumulated_grad("policy", d, B, "token-mean", global_norm=False)
    averaged = accumulated_grad("policy", d, 2, "token-mean", global_norm=False) / 4
    assert (full - averaged).abs().max() > 1e-3
