"""The objective's options through the training loop: the sampler's log-probs reach the rollout correction."""

import json
import math
from pathlib import Path

import pytest

from reinforcepp.train.loop import train


@pytest.mark.parametrize("batch", ["train.batch_size=4", "train.batch_size=2"])  # pi_old from the update / a pass
def test_tis_sees_the_samplers_logprobs(make_config, batch):
    cfg = make_config(
        None, batch, "algo.loss.tis_cap=2", "train.old_logprobs=recompute", "algo.loss.ratio_level=sequence",
        "algo.kl.placement=loss", "algo.kl.unbiased_gradient=true", "train.num_steps=1",
    )
    train(cfg)
    (row,) = [json.loads(line) for line in (Path(cfg.output_dir) / "metrics.jsonl").read_text().splitlines()]
    # the same float32 weights sample and train on the CPU: the two log-probs agree to rounding, nothing is capped
    assert 0 <= row["actor/rollout_abs_log_ratio"] < 1e-4
    assert row["actor/tis_capped_frac"] == 0
    assert math.isfinite(row["actor/kl_loss"]) and math.isfinite(row["actor/pg_loss"])
