"""SFT and RL render a prompt through one function: the same prompt gives the same ids in both."""

import pytest

from reinforcepp.data import tokenize_prompts
from reinforcepp.data.rendering import render_prompt
from reinforcepp.stages.sft import encode_pair
from reinforcepp.testing import tiny_tokenizer

TEMPLATE = ("{% for m in messages %}{{ m['role'][0] }}:{{ m['content'] }}.{% endfor %}"
            "{% if add_generation_prompt %}a:{% endif %}")


@pytest.mark.parametrize("template, chat_template, text", [
    (TEMPLATE, True, "u:what is 2+2?.a:"),  # the user turn and the generation prompt
    (TEMPLATE, False, "what is 2+2?"),  # template off: the prompt as it is
    (None, True, "what is 2+2?"),  # asked for, but the tokenizer has none
])
def test_sft_and_rl_render_the_same_prompt_to_the_same_ids(template, chat_template, text):
    tok = tiny_tokenizer(chat_template=template)
    prompt = "what is 2+2?"
    (rl,), _ = tokenize_prompts([{"prompt": prompt}], tok, prompt_key="prompt", max_len=64,
                                chat_template=chat_template)
    sft_ids, _ = encode_pair(tok, prompt, "4", chat_template=chat_template)
    assert rl.text == text
    assert rl.token_ids == sft_ids == tok(text, add_special_tokens=False)["input_ids"]
    assert render_prompt(tok, prompt, chat_template=chat_template) == (text, sft_ids)
