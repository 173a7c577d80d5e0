"""data.prompts takes what datasets.load_dataset takes (NAME, NAME:SPLIT, NAME/CONFIG:SPLIT), exercised offline on
a local dataset directory: the same load_dataset call a hub id gets, with its configs and splits."""

import json

import pytest

from reinforcepp.data import DataError, read_rows
from reinforcepp.data.prompts import dataset_reference, write_jsonl

README = """---
configs:
- config_name: easy
  data_files:
  - split: train
    path: easy/train.jsonl
  - split: test
    path: easy/test.jsonl
- config_name: hard
  data_files:
  - split: train
    path: hard/train.jsonl
---
"""


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    import datasets
    import huggingface_hub

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")  # not the user's cache


@pytest.fixture
def dataset_dir(tmp_path):
    """A dataset repository as on the hub, but local: two configs (README metadata), data files per split."""
    root = tmp_path / "arith"
    for config, split, prompts in [("easy", "train", ["1+1=", "2+2="]), ("easy", "test", ["3+3="]),
                                   ("hard", "train", ["12+34="])]:
        write_jsonl([{"prompt": p, "answer": str(eval(p[:-1]))} for p in prompts], root / config / f"{split}.jsonl")
    (root / "README.md").write_text(README)
    return root


def prompts(reference):
    return [row["prompt"] for row in read_rows(reference, "prompt")]


def test_name_config_and_split_reach_load_dataset(dataset_dir):
    assert prompts(f"{dataset_dir}/easy:test") == ["3+3="]
    assert prompts(f"{dataset_dir}/easy:train") == ["1+1=", "2+2="]
    assert prompts(f"{dataset_dir}/hard") == ["12+34="]  # its only split
    with pytest.raises(DataError, match=r"failed: Config name is missing"):  # two configs: load_dataset's own error
        read_rows(f"{dataset_dir}:train", "prompt")
    with pytest.raises(DataError, match=r"splits \['train', 'test'\]; pick one as .*arith/easy:SPLIT$"):
        read_rows(f"{dataset_dir}/easy", "prompt")
    with pytest.raises(DataError, match=r"load_dataset\(.*'nope'.*\) failed: .*nope"):
        read_rows(f"{dataset_dir}/nope:train", "prompt")


def test_a_plain_data_directory_is_one_split(tmp_path):
    write_jsonl([{"prompt": "ab"}, {"prompt": [{"role": "user", "content": "cd"}]}], tmp_path / "d" / "x.jsonl")
    assert prompts(tmp_path / "d") == ["ab", [{"role": "user", "content": "cd"}]]


def test_hub_references_parse_as_load_dataset_arguments():
    assert dataset_reference("openai/gsm8k") == ("openai/gsm8k", None, None)
    assert dataset_reference("openai/gsm8k:test") == ("openai/gsm8k", None, "test")
    assert dataset_reference("openai/gsm8k/main:train") == ("openai/gsm8k", "main", "train")
    assert dataset_reference("gsm8k:train") == ("gsm8k", None, "train")


def test_an_unreachable_hub_id_is_one_line_through_the_cli(tmp_path, capsys):
    from reinforcepp.cli import main

    code = main(["train", "model.policy=never-loaded", "data.prompts=no-such-org/no-such-set/main:train",
                 "reward.function=reinforcepp.rewards.toy:target_char_share", f"output_dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("error: no-such-org/no-such-set/main:train: not a prompt file, and "
                          "datasets.load_dataset('no-such-org/no-such-set', 'main', split='train') failed")


def test_a_run_trains_on_a_dataset_config_and_split(tiny_dir, dataset_dir, tmp_path, capsys):
    from reinforcepp.cli import main

    code = main(["train", f"model.policy={tiny_dir}", f"data.prompts={dataset_dir}/easy:train",
                 f"data.eval_prompts={dataset_dir}/easy:test",
                 "reward.function=reinforcepp.rewards.toy:leading_integer",
                 "rollout.batch_size=2", "rollout.max_new_tokens=3", "train.batch_size=2", "train.micro_batch_size=2",
                 "train.num_steps=1", "log.progress=false", "log.tensorboard=false", f"output_dir={tmp_path / 'run'}"])
    assert code == 0
    out = capsys.readouterr().out
    assert "first prompt, as the model is given it" in out
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert metrics and metrics[-1]["step"] == 1


def test_a_dataset_script_goes_to_load_dataset_not_the_jsonl_reader(tmp_path):
    script = tmp_path / "my_set.py"
    script.write_text("import datasets\n")
    try:
        rows = read_rows(f"{script}:train", "prompt")  # datasets < 4 runs scripts
    except DataError as exc:  # datasets >= 4 refuses them, in its own words
        assert f"datasets.load_dataset({str(script)!r}, None, split='train') failed" in str(exc)
    else:
        assert rows
