"""Tiny random models and tokenizers built in-process, for tests, examples and benchmarks.

Nothing is downloaded: the tokenizer is character-level (the `tokenizers` library) and the model is a
small Llama with random weights. Both save to a directory that `from_pretrained` loads like a hub model.
"""

from __future__ import annotations

import string
from pathlib import Path

SPECIAL_TOKENS = ("<pad>", "<eos>", "<unk>")
CHARS = string.ascii_lowercase + string.digits + " +-=.?!,:"


def tiny_tokenizer(chat_template: str | None = None):
    """Character-level fast tokenizer: <pad>=0, <eos>=1, <unk>=2, then one id per character.

    Pads on the left (generation), adds no BOS/EOS. ``chat_template`` (Jinja) is optional.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for c in CHARS:
        vocab[c] = len(vocab)
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>", padding_side="left"
    )
    if chat_template is not None:
        tok.chat_template = chat_template
    return tok


def tiny_model(vocab_size: int | None = None, *, hidden: int = 64, layers: int = 2, heads: int = 4, seed: int = 0):
    """A random LlamaForCausalLM in float32 (a few hundred thousand parameters at the defaults)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size or len(SPECIAL_TOKENS) + len(CHARS),
        hidden_size=hidden,
        intermediate_size=hidden * 4,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=256,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).float().eval()


# A chat template of the tiny tokenizer's characters: each message as `r:content.` (r: the role's first letter),
# then `a:` when asked for the generation prompt.
TINY_CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'][0] }}:{{ m['content'] }}.{% endfor %}"
                      "{% if add_generation_prompt %}a:{% endif %}")


def save_tiny_checkpoint(path: str | Path, *, seed: int = 0, chat_template: str | None = None, **model_kwargs) -> Path:
    """Write a tiny model and its tokenizer (with ``chat_template``, e.g. :data:`TINY_CHAT_TEMPLATE`, when
    given) to ``path``; returns the path."""
    path = Path(path)
    tok = tiny_tokenizer(chat_template)
    model = tiny_model(len(tok), seed=seed, **model_kwargs)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def random_experience(batch: int, prompt_len: int, response_len: int, vocab_size: int, seed: int = 0):
    """An Experience of random tokens with uneven left-padded prompts and uneven responses (ids >= 3,
    padding 0), random advantages and reference log-probs (0 off the response mask)."""
    import torch

    from reinforcepp.train.experience import Experience

    g = torch.Generator().manual_seed(seed)
    prompt_lens = torch.randint(1, prompt_len + 1, (batch,), generator=g)
    response_lens = torch.randint(1, response_len + 1, (batch,), generator=g)
    prompt_mask = (torch.arange(prompt_len)[None] >= prompt_len - prompt_lens[:, None]).long()
    response_mask = (torch.arange(response_len)[None] < response_lens[:, None]).long()
    exp = Experience(
        prompt_ids=torch.randint(3, vocab_size, (batch, prompt_len), generator=g) * prompt_mask,
        prompt_mask=prompt_mask,
        response_ids=torch.randint(3, vocab_size, (batch, response_len), generator=g) * response_mask,
        response_mask=response_mask,
    )
    exp.advantages = torch.randn(batch, response_len, generator=g) * response_mask
    exp.ref_logp = -torch.rand(batch, response_len, generator=g) * 3 * response_mask
    return exp


if __name__ == "__main__":  # python -m reinforcepp.testing DIR: write a tiny random checkpoint
    import sys

    print(save_tiny_checkpoint(sys.argv[1] if len(sys.argv) > 1 else "runs/tiny-model"))
