"""A tiny model, prompt files and a shared config for end-to-end tests of `reinforcepp compare`."""

import pytest
import yaml


@pytest.fixture(scope="session")
def make_shared_config(tiny_dir, prompt_file):
    """make(batch_size, max_new_tokens): the shared config data of a fast comparison (tiny model, toy reward,
    2 steps, eval at steps 0 and 2); a fresh dict each call."""

    def make(batch_size: int = 4, max_new_tokens: int = 4) -> dict:
        return {
            "model": {"policy": str(tiny_dir)},
            "data": {"prompts": str(prompt_file), "eval_prompts": str(prompt_file)},
            "reward": {"function": "reinforcepp.rewards.toy:target_char_share"},
            "rollout": {"batch_size": batch_size, "max_new_tokens": max_new_tokens},
            "train": {"batch_size": batch_size, "micro_batch_size": batch_size, "num_steps": 2, "eval_every": 2},
            "eval": {"train_prompts": 2},
            "actor": {"optim": {"lr": 1e-3}},
            "log": {"progress": False, "tensorboard": False},
        }

    return make


@pytest.fixture
def shared_config(make_shared_config):
    return make_shared_config()


@pytest.fixture
def write_experiment(tmp_path, shared_config):
    """Write an experiment file (shared config in shared.yaml beside it) and return its path."""

    def write(runs=None, name="exp.yaml", **fields):
        (tmp_path / "shared.yaml").write_text(yaml.safe_dump(shared_config))
        spec = {"config": "shared.yaml", "runs": runs or {"REINFORCE++": {"preset": "reinforce_pp"},
                                                          "GRPO": {"preset": "grpo"}}, **fields}
        path = tmp_path / name
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        return path

    return write
