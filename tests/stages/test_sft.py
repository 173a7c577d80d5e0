"""run_sft on a tiny random model: the loss falls, prompts get no loss, the export loads."""

import json

import pytest
import torch

from reinforcepp.config import load_config
from reinforcepp.models import load_causal_lm, load_tokenizer
from reinforcepp.stages import run_sft
from reinforcepp.stages.sft import build_examples, collate, encode_pair
from reinforcepp.data.prompts import write_jsonl
from reinforcepp.testing import tiny_tokenizer


def test_sft_lowers_loss_and_saves_a_loadable_model(tiny_dir, tmp_path):
    rows = [{"prompt": "say a:", "response": "aaaa"}] * 30 + [{"prompt": "say a:" * 20, "response": "a"}] * 2
    data = write_jsonl(rows, tmp_path / "sft.jsonl")
    cfg = load_config(None, [
        f"model.policy={tiny_dir}", f"sft.data={data}", f"output_dir={tmp_path / 'run'}",
        "sft.epochs=4", "sft.batch_size=8", "sft.micro_batch_size=4", "sft.max_len=40",
        "sft.optim.lr=3e-3", "sft.optim.warmup_ratio=0", "device=cpu",
    ])
    out = run_sft(cfg)
    assert out == tmp_path / "run" / "sft_final"
    records = [json.loads(line) for line in (tmp_path / "run" / "sft_metrics.jsonl").read_text().splitlines()]
    assert len(records) == 4 * 4  # 30 kept rows, 8 per step -> 4 steps per epoch
    assert all(r["skipped_rows"] == 2 for r in records)  # the two 121-token rows
    first, last = records[0]["loss"], records[-1]["loss"]
    assert last < 0.5 * first, (first, last)

    model = load_causal_lm(out)
    tok = load_tokenizer(out)
    ids = torch.tensor([tok("say a:")["input_ids"]])
    with torch.no_grad():
        next_id = model(input_ids=ids).logits[0, -1].argmax().item()
    assert tok.convert_ids_to_tokens(next_id) == "a"


def test_prompt_tokens_get_no_loss():
    tok = tiny_tokenizer()
    rows = [{"prompt": "hi:", "response": "ab"}, {"prompt": "q", "response": "xyz"}]
    examples, skipped = build_examples(rows, tok, prompt_key="prompt", response_key="response", max_len=100,
                                       chat_template=True)
    assert skipped == 0
    eos = tok.eos_token_id
    assert examples[0].ids == tok("hi:")["input_ids"] + tok("ab")["input_ids"] + [eos]
    assert examples[0].loss_mask == [0, 0, 0, 1, 1, 1]
    batch = collate(examples, tok.pad_token_id)
    # Position t predicts token t+1: targets are the response tokens (and EOS) only; padding is masked.
    assert batch["loss_mask"].tolist() == [[0, 0, 1, 1, 1], [1, 1, 1, 1, 0]]
    picked = batch["targets"][batch["loss_mask"].bool()].tolist()
    assert picked == tok("ab")["input_ids"] + [eos] + tok("xyz")["input_ids"] + [eos]


def test_chat_template_puts_the_response_in_the_assistant_turn():
    template = (
        "{% for m in messages %}{{ m['role'][0] }}:{{ m['content'] }}.{% endfor %}"
        "{% if add_generation_prompt %}a:{% endif %}"
    )
    tok = tiny_tokenizer(chat_template=template)
    prompt_ids, response_ids = encode_pair(tok, "hi", "yo", chat_template=True)
    assert tok.decode(prompt_ids) == "u:hi.a:"
    assert tok.decode(response_ids, skip_special_tokens=True) == "yo."
    assert response_ids[-1] == tok.eos_token_id


def test_the_cli_runs_sft_and_rm_and_refuses_to_overwrite(tiny_dir, tmp_path, capsys):
    from reinforcepp.cli import main

    sft_data = write_jsonl([{"prompt": "say a:", "response": "aa"}] * 4, tmp_path / "sft.jsonl")
    pairs = write_jsonl([{"prompt": "x:", "chosen": "aa", "rejected": "bb"}] * 4, tmp_path / "pairs.jsonl")
    common = [f"model.policy={tiny_dir}", f"output_dir={tmp_path / 'run'}", "device=cpu"]
    assert main(["sft", *common, f"sft.data={sft_data}", "sft.batch_size=4", "sft.micro_batch_size=4"]) == 0
    assert "sft_final" in capsys.readouterr().out
    assert main(["rm", *common, f"rm.data={pairs}", f"rm.eval_data={pairs}", "rm.batch_size=4",
                 "rm.micro_batch_size=4"]) == 0
    assert "rm_final" in capsys.readouterr().out
    assert main(["sft", *common, f"sft.data={sft_data}", "sft.batch_size=4", "sft.micro_batch_size=4"]) == 2
    assert "sft_final" in capsys.readouterr().err


def test_max_steps_stops_early_and_the_schedule_spans_the_steps_that_run(tiny_dir, tmp_path):
    data = write_jsonl([{"prompt": "say a:", "response": "aaaa"}] * 40, tmp_path / "sft.jsonl")
    cfg = load_config(None, [
        f"model.policy={tiny_dir}", f"sft.data={data}", f"output_dir={tmp_path / 'run'}", "sft.epochs=3",
        "sft.batch_size=8", "sft.micro_batch_size=8", "sft.max_steps=4", "sft.optim.lr=1e-3",
        "sft.optim.warmup_ratio=0", "sft.optim.scheduler=linear", "sft.optim.min_lr_ratio=0", "device=cpu",
        "log.progress=false",
    ])
    run_sft(cfg)
    records = [json.loads(line) for line in (tmp_path / "run" / "sft_metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]  # not the 15 steps of 3 epochs
    assert [r["lr"] for r in records] == pytest.approx([1e-3, 7.5e-4, 5e-4, 2.5e-4])
