"""A tiny local model, prompt files and a fast config for end-to-end tests of the RL engine."""

import pytest

from reinforcepp.config import load_config


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
            "log.report=false",  # a report costs about a second of matplotlib: tests/train/test_observe.py has it
            f"output_dir={tmp_path / 'run'}",
        ]
        return load_config(preset, [*base, *overrides])

    return make


@pytest.fixture
def varied_reward(tmp_path):
    """Rewards that differ between samples from the first step (a toy reward can be all 0 at first)."""
    path = tmp_path / "varied.py"
    path.write_text("def reward_func(prompts, completions, **kwargs):\n"
                    "    return [float(sum(map(ord, c)) % 7) for c in completions]\n")
    return path


@pytest.fixture
def interrupted_and_resumed(make_config, tmp_path):
    """train(preset, overrides) into tmp_path/full uninterrupted, and into tmp_path/cut stopped after step 3
    (KeyboardInterrupt) and resumed; returns the two run directories."""
    from reinforcepp.train.loop import train

    def run(preset, *overrides):
        train(make_config(preset, *overrides, f"output_dir={tmp_path / 'full'}"))

        def crash(step, _):
            if step == 3:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            train(make_config(preset, *overrides, f"output_dir={tmp_path / 'cut'}"), on_step_end=crash)
        train(make_config(preset, *overrides, f"output_dir={tmp_path / 'cut'}", "ckpt.resume=true"))
        return tmp_path / "full", tmp_path / "cut"

    return run
