"""Per-token estimators of KL(pi || pi_ref) from samples of pi (Schulman, "Approximating KL divergence").

With d = log pi(o_t) - log pi_ref(o_t) for a token o_t sampled from pi:

    k1 = d                      unbiased value, high variance, can be negative
    k2 = d^2 / 2                biased value; as a loss its expected gradient is exactly grad KL(pi||ref)
    k3 = exp(-d) - 1 + d        unbiased value, never negative; as a loss its expected gradient is
                                grad KL(pi_ref||pi), the *forward* KL (tests/algos/test_kl_closed_form.py)

REINFORCE++ puts k1 computed from pi_old into the token reward (paper eq. 8-9); GRPO adds k3 as a loss
term; REINFORCE++-baseline adds k2 as a loss term (paper appendix).
"""

from __future__ import annotations

import torch

from .dtypes import compute_dtype

KL_ESTIMATORS = ("k1", "k2", "k3")


def kl_estimate(
    logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str, *, clamp: float | None = None
) -> torch.Tensor:
    """Elementwise KL estimate k_t of KL(pi || pi_ref) at the sampled tokens.

    d = logp - ref_logp;  "k1": d;  "k2": d^2 / 2;  "k3": exp(-d) - 1 + d.

    Computed in float32 (float64 if an input is). Gradients flow through ``logp`` (and ``ref_logp``) as
    autograd sees them; detach the inputs for the KL-in-reward placement. ``clamp`` bounds the result to
    [-clamp, clamp] (OpenRLHF uses 10) so a single extreme token cannot dominate; None leaves it exact.

    Shapes: logp [B, T], ref_logp [B, T] -> [B, T], float32 or float64.
    """
    dtype = compute_dtype(logp, ref_logp)
    d = logp.to(dtype) - ref_logp.to(dtype)
    if estimator == "k1":
        kl = d
    elif estimator == "k2":
        kl = 0.5 * d.square()
    elif estimator == "k3":
        kl = torch.expm1(-d) + d  # expm1: exact for small d, where exp(-d) - 1 cancels
    else:
        raise ValueError(f"unknown KL estimator {estimator!r}; expected one of {KL_ESTIMATORS}")
    return kl if clamp is None else kl.clamp(-clamp, clamp)
