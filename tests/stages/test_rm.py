"""run_rm on a tiny random model: a learnable preference (many 'a' beats none) is learned."""

import json
import random

import pytest
import torch

from reinforcepp.config import load_config
from reinforcepp.models import ValueModel
from reinforcepp.stages import run_rm
from reinforcepp.data.prompts import write_jsonl


def pairs(n, seed):
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        k = rng.randint(3, 6)
        chosen = "".join(rng.choice("aab") for _ in range(k)) + "a"
        rejected = "".join(rng.choice("bcd") for _ in range(k))
        rows.append({"prompt": "pick:", "chosen": chosen, "rejected": rejected})
    return rows


def test_rm_learns_a_preference_and_stores_reward_moments(tiny_dir, tmp_path):
    train = write_jsonl(pairs(64, seed=1), tmp_path / "train.jsonl")
    held_out = write_jsonl(pairs(40, seed=2), tmp_path / "eval.jsonl")
    cfg = load_config(None, [
        f"model.policy={tiny_dir}", f"rm.data={train}", f"rm.eval_data={held_out}", f"output_dir={tmp_path / 'run'}",
        "rm.epochs=3", "rm.batch_size=16", "rm.micro_batch_size=8", "rm.optim.lr=3e-3",
        "rm.optim.warmup_ratio=0", "device=cpu",
    ])
    out = run_rm(cfg)
    assert out == tmp_path / "run" / "rm_final"
    records = [json.loads(line) for line in (tmp_path / "run" / "rm_metrics.jsonl").read_text().splitlines()]
    before = next(r for r in records if r["phase"] == "before")
    after = next(r for r in records if r["phase"] == "after")
    steps = [r for r in records if r["phase"] == "train"]
    assert len(steps) == 3 * 4
    # A random head ranks this data by some arbitrary feature, so "before" can be anywhere in [0, 1].
    assert after["accuracy"] >= 0.8, (before, after)
    assert after["loss"] < before["loss"] - 0.2
    assert sum(r["loss"] for r in steps[-4:]) < sum(r["loss"] for r in steps[:4])

    norm = next(r for r in records if r["phase"] == "normalization")
    rm = ValueModel.from_pretrained(out)
    assert rm.mean.item() == pytest.approx(norm["mean"])
    assert rm.std.item() == pytest.approx(norm["std"])
    assert norm["std"] > 0 and (norm["mean"], norm["std"]) != (0.0, 1.0)
    # The stored moments standardize the training rewards.
    from reinforcepp.models import load_tokenizer
    tok = load_tokenizer(out)
    texts = [r["prompt"] + r[k] for r in pairs(64, seed=1) for k in ("chosen", "rejected")]
    enc = [tok(t)["input_ids"] + [tok.eos_token_id] for t in texts]
    length = max(map(len, enc))
    ids = torch.tensor([[0] * (length - len(e)) + e for e in enc])
    with torch.no_grad():
        z = rm.score(ids, (ids != 0).long(), normalize=True)
    assert abs(z.mean().item()) < 1e-3 and abs(z.std(unbiased=False).item() - 1) < 1e-3
