"""A tiny local model, prompt files and a fast config for end-to-end tests of the RL engine."""

import json

import pytest

from reinforcepp.config import load_config
from reinforcepp.testing import save_tiny_checkpoint

PROMPTS = ["ab", "hello", "12+3=", "say a", "x", "what is 7?", "go", "count: 1 2"]


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def prompt_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p, "label": str(i)}) + "\n" for i, p in enumerate(PROMPTS)))
    return path


@pytest.fixture
def make_config(tiny_dir, prompt_file, tmp_path):
    """load_config(preset, overrides) with a tiny model, a toy reward and small batches."""

    def make(preset=None, *overrides):
        base = [
            f"model.policy={tiny_dir}",
            f"data.prompts={prompt_file}",
            "reward.function=reinforcepp.rewards.toy:target_char_share",
            "rollout.batch_size=4",
            "rollout.max_new_tokens=6",
            "train.batch_size=4",
            "train.micro_batch_size=2",
            "train.num_steps=2",
            "actor.optim.lr=1e-3",
            "critic.optim.lr=1e-3",
            "log.progress=false",
            "log.tensorboard=false",
            f"output_dir={tmp_path / 'run'}",
        ]
        return load_config(preset, [*base, *overrides])

    return make
