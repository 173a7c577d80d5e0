"""The vectorized estimators against a naive per-token Python loop written from the definitions.

The reference below uses plain floats and lists, one sequence and one token at a time, exactly as the
equations in reinforcepp/algos/advantages.py read; it shares no code with the implementation.
"""

import math
import random

import pytest
import torch

from reinforcepp.algos import ESTIMATORS, compute_advantages


def reference(estimator, rewards, lengths, kl, beta, gamma, lam, values, greedy, G):
    B = len(rewards)
    # 1. group shaping, one sample at a time
    shaped = []
    for i in range(B):
        group = rewards[(i // G) * G : (i // G + 1) * G]
        mean = sum(group) / G
        if estimator in ("reinforce_pp", "gae"):
            shaped.append(rewards[i])
        elif estimator in ("reinforce_pp_baseline", "dr_grpo"):
            shaped.append(rewards[i] - mean)
        elif estimator == "grpo":
            std = math.sqrt(sum((x - mean) ** 2 for x in group) / (G - 1))
            shaped.append(0.0 if max(group) == min(group) else (rewards[i] - mean) / (std + 1e-6))
        elif estimator == "rloo":
            shaped.append(rewards[i] - (sum(group) - rewards[i]) / (G - 1))
        elif estimator == "remax":
            shaped.append(rewards[i] - greedy[i])
    # 2-3. token rewards, then returns as explicit sums (or GAE as a sum of discounted deltas)
    adv, ret = [], []
    for i in range(B):
        n = lengths[i]
        r = [-beta * kl[i][t] + (shaped[i] if t == n - 1 else 0.0) for t in range(n)]
        if estimator == "gae":
            v = values[i][:n] + [0.0]
            delta = [r[t] + gamma * v[t + 1] - v[t] for t in range(n)]
            a = [sum((gamma * lam) ** (j - t) * delta[j] for j in range(t, n)) for t in range(n)]
            adv.append(a)
            ret.append([a[t] + v[t] for t in range(n)])
        else:
            g = [sum(gamma ** (j - t) * r[j] for j in range(t, n)) for t in range(n)]
            adv.append(list(g))
            ret.append(g)
    # 4. global whitening over every valid token of the batch, population variance
    if estimator in ("reinforce_pp", "reinforce_pp_baseline", "gae"):
        flat = [x for row in adv for x in row]
        mu = sum(flat) / len(flat)
        var = sum((x - mu) ** 2 for x in flat) / len(flat)
        adv = [[(x - mu) / math.sqrt(max(var, 1e-8)) for x in row] for row in adv]
    return adv, ret


def padded(rows, T):
    return torch.tensor([row + [0.0] * (T - len(row)) for row in rows], dtype=torch.float64)


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("seed", range(4))
def test_vectorized_matches_naive_loop(estimator, seed):
    rng = random.Random(seed)
    G = rng.choice([2, 3, 4])
    P = rng.choice([1, 2, 3])
    B, T = P * G, rng.choice([1, 5, 9])
    gamma = rng.choice([1.0, 0.9])
    lam = rng.choice([1.0, 0.95]) if estimator == "gae" else 1.0
    beta = rng.choice([0.0, 0.05])
    lengths = [rng.randint(1, T) for _ in range(B)]
    # binary rewards make constant groups common; some continuous ones too
    rewards = [float(rng.random() < 0.5) if rng.random() < 0.7 else rng.gauss(0, 1) for _ in range(B)]
    kl = [[rng.gauss(0, 0.3) for _ in range(T)] for _ in range(B)]
    values = [[rng.gauss(0, 1) for _ in range(T)] for _ in range(B)]
    greedy = [r for r in [rng.random() for _ in range(P)] for _ in range(G)]

    mask = torch.tensor([[1] * n + [0] * (T - n) for n in lengths])
    adv, ret = compute_advantages(
        estimator,
        rewards=torch.tensor(rewards, dtype=torch.float64),
        mask=mask,
        group_size=G,
        kl=torch.tensor(kl, dtype=torch.float64),
        kl_coef=beta,
        gamma=gamma,
        lam=lam,
        values=torch.tensor(values, dtype=torch.float64),
        greedy_rewards=torch.tensor(greedy, dtype=torch.float64),
    )
    ref_adv, ref_ret = reference(estimator, rewards, lengths, kl, beta, gamma, lam, values, greedy, G)
    torch.testing.assert_close(adv, padded(ref_adv, T), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(ret, padded(ref_ret, T), rtol=1e-9, atol=1e-9)
