"""TRL's conversational format: prompts, SFT `messages` rows and preference pairs as lists of messages, rendered
with the tokenizer's chat template, and completions handed to reward functions as TRL hands them."""

import json
import re

import pytest

from reinforcepp.config import load_config
from reinforcepp.data import DataError, read_rows, tokenize_prompts
from reinforcepp.data.conversation import preference_example, sft_example
from reinforcepp.data.prompts import write_jsonl
from reinforcepp.stages.sft import encode_pair
from reinforcepp.testing import TINY_CHAT_TEMPLATE, save_tiny_checkpoint, tiny_tokenizer

SYSTEM = {"role": "system", "content": "be brief"}
HISTORY = [SYSTEM, {"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
           {"role": "user", "content": "say a"}]


def tokenize(prompt, tok, chat_template=True):
    (rendered,), _ = tokenize_prompts([{"prompt": prompt}], tok, prompt_key="prompt", max_len=256,
                                      chat_template=chat_template, source="p.jsonl")
    return rendered


def test_system_turns_and_history_are_kept_then_the_generation_prompt():
    tok = tiny_tokenizer(TINY_CHAT_TEMPLATE)
    rendered = tokenize(HISTORY, tok)
    assert rendered.text == "s:be brief.u:hi.a:yo.u:say a.a:"
    assert rendered.token_ids == tok(rendered.text, add_special_tokens=False)["input_ids"]
    assert tokenize("say a", tok).text == "u:say a.a:"  # a plain prompt: one user turn, as before


def test_a_prompt_ending_in_an_assistant_turn_is_continued_as_trl_does():
    rendered = tokenize([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "the answer is"}],
                        tiny_tokenizer(TINY_CHAT_TEMPLATE))
    assert rendered.text == "u:hi.a:the answer is"  # continue_final_message: no end of turn, no new turn


@pytest.mark.parametrize("template, chat_template, needle", [
    (None, True, "the tokenizer has none"),
    (TINY_CHAT_TEMPLATE, False, "data.apply_chat_template is false"),
])
def test_a_conversation_without_a_template_is_one_clear_line(template, chat_template, needle):
    with pytest.raises(DataError) as caught:
        tokenize(HISTORY, tiny_tokenizer(template), chat_template)
    message = str(caught.value)
    assert message.startswith("p.jsonl, row 0: 'prompt': a conversational prompt") and needle in message
    assert "\n" not in message


@pytest.mark.parametrize("prompt, needle", [
    ([{"role": "robot", "content": "x"}], "message 0 has role 'robot'; expected one of system, user, assistant"),
    ([{"role": "user", "content": 3}], "message 0 is not a {role, content} mapping"),
    ([], "expected a non-empty list"),
    ([SYSTEM], "the last message is a system turn"),
    ({"role": "user"}, "expected a string or a list of {role, content} messages"),
])
def test_a_malformed_conversation_names_the_line(tmp_path, prompt, needle):
    path = write_jsonl([{"prompt": "ok"}, {"prompt": prompt}], tmp_path / "p.jsonl")
    with pytest.raises(DataError, match=re.escape(f"{path}:2: 'prompt': {needle}")):
        read_rows(path, "prompt")


def test_sft_messages_rows_split_before_the_final_assistant_turn():
    prompt, response = sft_example({"messages": HISTORY + [{"role": "assistant", "content": "a"}]},
                                   "prompt", "response", "s.jsonl, row 0")
    assert prompt == HISTORY and response == [{"role": "assistant", "content": "a"}]
    tok = tiny_tokenizer(TINY_CHAT_TEMPLATE)
    prompt_ids, response_ids = encode_pair(tok, prompt, response, chat_template=True)
    assert tok.decode(prompt_ids) == "s:be brief.u:hi.a:yo.u:say a.a:"
    assert tok.decode(response_ids, skip_special_tokens=True) == "a." and response_ids[-1] == tok.eos_token_id
    with pytest.raises(DataError, match=r"^s.jsonl, row 0: 'messages': expected a conversation ending in assistant"):
        sft_example({"messages": HISTORY}, "prompt", "response", "s.jsonl, row 0")


def test_preference_pairs_with_an_implicit_or_explicit_prompt():
    question = [{"role": "user", "content": "sky?"}]
    blue, green = [{"role": "assistant", "content": "blue"}], [{"role": "assistant", "content": "green"}]
    implicit = {"chosen": question + blue, "rejected": question + green}
    # the prompt is their common first turns, as trl.extract_prompt
    assert preference_example(implicit, "prompt", "chosen", "rejected", "r") == (question, blue, green)
    explicit = {"prompt": question, "chosen": blue, "rejected": green}
    assert preference_example(explicit, "prompt", "chosen", "rejected", "r") == (question, blue, green)
    with pytest.raises(DataError, match="^r: no 'prompt'; give one"):
        preference_example({"chosen": "a", "rejected": "b"}, "prompt", "chosen", "rejected", "r")


# --- end to end: RL through the Python API, SFT and RM through the CLI --------------------------------


@pytest.fixture(scope="module")
def chat_dir(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("chat") / "model", chat_template=TINY_CHAT_TEMPLATE)


def test_conversational_prompts_train_and_reach_the_reward_as_trl_passes_them(chat_dir, tmp_path, capsys):
    from reinforcepp.train import train

    rows = [{"prompt": [SYSTEM, {"role": "user", "content": f"say {c}"}], "answer": c} for c in "abcd"]
    path = write_jsonl(rows, tmp_path / "chat.jsonl")
    calls = []

    def reward(prompts, completions, answer, **kwargs):
        calls.append((prompts, completions, answer))
        return [float(answer[i] in completions[i][0]["content"]) for i in range(len(completions))]

    cfg = load_config(None, [f"model.policy={chat_dir}", f"data.prompts={path}", "rollout.batch_size=4",
                             "rollout.n_samples_per_prompt=2", "rollout.max_new_tokens=4", "train.batch_size=8",
                             "train.micro_batch_size=8", "train.num_steps=1", "log.progress=false",
                             "log.tensorboard=false", f"output_dir={tmp_path / 'run'}"])
    cfg.reward.function = reward
    train(cfg)
    (prompts, completions, answer), = calls
    by_answer = {row["answer"]: row["prompt"] for row in rows}
    assert [by_answer[a] for a in answer] == prompts  # the message lists themselves
    assert all(len(c) == 1 and c[0]["role"] == "assistant" and isinstance(c[0]["content"], str) for c in completions)
    out = capsys.readouterr().out
    assert out.count("first prompt, as the model is given it") == 1
    first = json.loads(path.read_text().splitlines()[0])  # the first prompt in file order (data.shuffle serves later)
    assert f"s:be brief.u:say {first['answer']}.a:" in out


def test_sft_messages_and_rm_message_pairs_run_through_the_cli(chat_dir, tmp_path, capsys):
    from reinforcepp.cli import main

    question = [{"role": "user", "content": "say a"}]
    sft_data = write_jsonl([{"messages": [SYSTEM, *question, {"role": "assistant", "content": "aa"}]}] * 4,
                           tmp_path / "sft.jsonl")
    pairs = write_jsonl([{"chosen": question + [{"role": "assistant", "content": "aa"}],
                          "rejected": question + [{"role": "assistant", "content": "bb"}]}] * 4,
                        tmp_path / "pairs.jsonl")
    common = [f"model.policy={chat_dir}", f"output_dir={tmp_path / 'run'}", "device=cpu", "log.progress=false"]
    assert main(["sft", *common, f"sft.data={sft_data}", "sft.batch_size=4", "sft.micro_batch_size=4"]) == 0
    assert main(["rm", *common, f"rm.data={pairs}", "rm.batch_size=4", "rm.micro_batch_size=4"]) == 0
    out = capsys.readouterr().out
    assert "sft: 4 rows" in out and "rm: 4 pairs" in out
    # the same conversation with a tokenizer without a template: one line naming the file and row
    assert main(["sft", f"model.policy={tmp_path / 'run' / 'sft_final'}", f"output_dir={tmp_path / 'x'}",
                 f"sft.data={sft_data}", "data.apply_chat_template=false"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {sft_data}, row 0: a conversational prompt") and err.count("\n") == 1
