"""With the optimizer step's global normalizer, the gradient does not depend on the micro-batch split.

Summing the losses of micro-batches (gradient accumulation) must give the gradient of the whole batch.
That holds only when each micro-batch divides by the *global* token (or sequence) count; dividing by
its own count is the bug OpenRLHF fixed in PR #1249 and verl in #5625, shown failing below.
"""

import pytest
import torch

from reinforcepp.algos import ObjectiveSettings, actor_objective, kl_loss, policy_loss, value_loss

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


def objective_grads(d, entropy, splits, agg, **options):
    """Gradients (d loss / d logp, d loss / d entropy) of actor_objective with every term on, accumulated over
    micro-batches with the batch's global normalizers."""
    x = d["params"].clone().requires_grad_(True)
    h = entropy.clone().requires_grad_(True)
    settings = ObjectiveSettings(clip_low=0.2, clip_high=0.28, kl_coef=0.1, kl_estimator="k3", entropy_coef=0.01,
                                 agg=agg, token_norm=T, **options)
    for rows in torch.arange(B).split(splits):
        loss, _, _ = actor_objective(x[rows], d["old"][rows], d["adv"][rows], d["mask"][rows], settings,
                                     entropy=h[rows], ref_logp=d["ref"][rows], rollout_logp=d["roll"][rows],
                                     num_tokens=d["mask"].sum(), num_seqs=B)
        loss.backward()
    return x.grad, h.grad


def per_token_weight(mask, agg):
    """d agg(l) / d l_t: 1/N_tok (token-mean), 1/(|y_b| N_seq) (seq-mean-token-mean), 1/(N_seq C) (sum-norm)."""
    if agg == "token-mean":
        return mask / mask.sum()
    if agg == "seq-mean-token-mean":
        return mask / (mask.sum(dim=1, keepdim=True) * B)
    return mask / (B * T)


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
@pytest.mark.parametrize("tis_cap", [None, 1.5])
def test_objective_gradient_is_invariant_and_is_the_formula(agg, tis_cap):
    """The objective (surrogate + 0.1 k3 + entropy bonus, TIS weight) accumulated over any split gives the
    gradient of the formula, written out here: dL/dlogp_t = W_t (-w_t A_t r_t [unclipped branch] + 0.1 (1 - e^-d_t)),
    dL/dH_t = -0.01 W_t, W_t = d agg / d l_t. A flipped entropy sign or a dropped KL term fails it."""
    d = batch()
    g = torch.Generator().manual_seed(1)
    d["roll"] = d["old"] + 0.5 * torch.randn(B, T, generator=g, dtype=torch.float64)
    entropy = torch.rand(B, T, generator=g, dtype=torch.float64)
    x, A, m = d["params"], d["adv"], d["mask"]
    r = torch.exp(x - d["old"])
    unclipped = r * A <= r.clamp(0.8, 1.28) * A
    w = torch.ones_like(r) if tis_cap is None else torch.exp(d["old"] - d["roll"]).clamp(max=tis_cap)
    W = per_token_weight(m.double(), agg)
    expected_x = W * (-w * A * r * unclipped + 0.1 * (1 - torch.exp(-(x - d["ref"]))))
    expected_h = -0.01 * W
    full = objective_grads(d, entropy, B, agg, tis_cap=tis_cap)
    torch.testing.assert_close(full[0], expected_x, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(full[1], expected_h, rtol=1e-12, atol=1e-15)
    assert 0 < unclipped[m.bool()].float().mean() < 1  # both branches occur
    for splits in (1, 3, [1, 5, 2]):
        for got, want in zip(objective_grads(d, entropy, splits, agg, tis_cap=tis_cap), full):
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
