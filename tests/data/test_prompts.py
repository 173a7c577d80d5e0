"""Prompt files, tokenization with skipping, and the resumable order."""

import json

import pytest

from reinforcepp.data import DataError, PromptSampler, read_jsonl, read_rows, tokenize_prompts
from reinforcepp.testing import tiny_tokenizer


def write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_rows_are_read_and_bad_lines_name_file_and_line(tmp_path):
    good = write(tmp_path / "p.jsonl", [json.dumps({"prompt": "ab", "label": "1"}), "", json.dumps({"prompt": "c"})])
    assert [r["prompt"] for r in read_jsonl(good, "prompt")] == ["ab", "c"]
    bad = write(tmp_path / "bad.jsonl", [json.dumps({"prompt": "ab"}), "{not json"])
    with pytest.raises(DataError, match=r"bad.jsonl:2: not valid JSON"):
        read_jsonl(bad, "prompt")
    missing_key = write(tmp_path / "k.jsonl", [json.dumps({"question": "ab"})])
    with pytest.raises(DataError, match=r"k.jsonl:1: expected an object with a string 'prompt'"):
        read_jsonl(missing_key, "prompt")
    with pytest.raises(DataError, match="prompt file not found"):
        read_jsonl(tmp_path / "nope.jsonl", "prompt")


def test_long_prompts_are_skipped_and_counted_never_cut():
    rows = [{"prompt": "abc"}, {"prompt": "abcdefgh"}, {"prompt": "a"}]
    prompts, skipped = tokenize_prompts(rows, tiny_tokenizer(), prompt_key="prompt", max_len=4, chat_template=True)
    assert skipped == 1
    assert [p.text for p in prompts] == ["abc", "a"]
    assert [len(p.token_ids) for p in prompts] == [3, 1]
    with pytest.raises(DataError, match="every prompt is longer"):
        tokenize_prompts(rows[1:2], tiny_tokenizer(), prompt_key="prompt", max_len=4, chat_template=True)


def test_chat_template_is_applied_when_asked():
    tok = tiny_tokenizer(chat_template="{% for m in messages %}q: {{ m['content'] }} a:{% endfor %}")
    rows = [{"prompt": "hi"}]
    with_template, _ = tokenize_prompts(rows, tok, prompt_key="prompt", max_len=64, chat_template=True)
    without, _ = tokenize_prompts(rows, tok, prompt_key="prompt", max_len=64, chat_template=False)
    assert with_template[0].text == "q: hi a:" and without[0].text == "hi"


def test_sampler_covers_each_epoch_once_and_resumes_exactly():
    sampler = PromptSampler(num_prompts=10, seed=3)
    first = sampler.next_indices(4) + sampler.next_indices(4) + sampler.next_indices(4)
    assert sorted(first[:10]) == list(range(10))  # one full epoch, then the next begins
    assert sampler.epoch == 1 and sampler.position == 2

    replay = PromptSampler(num_prompts=10, seed=3)
    replay.next_indices(4)
    state = replay.state_dict()
    resumed = PromptSampler(num_prompts=10, seed=3)
    resumed.load_state_dict(state)
    assert resumed.next_indices(8) == first[4:]
    assert PromptSampler(num_prompts=10, seed=4).next_indices(10) != first[:10]


def test_parquet_and_saved_datasets_are_read(tmp_path):
    import datasets

    rows = [{"prompt": "ab", "label": "1"}, {"prompt": "cd", "label": "2"}]
    ds = datasets.Dataset.from_list(rows)
    ds.to_parquet(str(tmp_path / "p.parquet"))
    assert read_rows(tmp_path / "p.parquet", "prompt") == rows
    ds.save_to_disk(str(tmp_path / "saved"))
    assert read_rows(tmp_path / "saved", "prompt") == rows
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "one"))
    assert read_rows(tmp_path / "one", "prompt") == rows  # the only split
    datasets.DatasetDict({"train": ds, "test": ds.select([1])}).save_to_disk(str(tmp_path / "dict"))
    assert read_rows(f"{tmp_path / 'dict'}:test", "prompt") == rows[1:]
    with pytest.raises(DataError, match=r"splits \['train', 'test'\]; pick one as .*dict:SPLIT"):
        read_rows(tmp_path / "dict", "prompt")
    with pytest.raises(DataError, match=r"row 0: expected an object with a string 'question'"):
        read_rows(tmp_path / "p.parquet", "question")


def test_sampler_without_shuffle_serves_file_order_every_epoch():
    sampler = PromptSampler(num_prompts=5, seed=3, shuffle=False)
    assert sampler.next_indices(4) + sampler.next_indices(4) == [0, 1, 2, 3, 4, 0, 1, 2]
