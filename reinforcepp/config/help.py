"""What `--help` of each subcommand says about config keys: the common ones, each with its default and the
first sentence of its schema description, and where the rest are."""

from __future__ import annotations

import textwrap

from reinforcepp.config.reference import first_sentence, rows

_RL = ("model.policy", "data.prompts", "reward.function", "output_dir", "rollout.batch_size",
       "rollout.n_samples_per_prompt", "rollout.max_new_tokens", "train.batch_size", "train.num_steps",
       "actor.optim.lr", "algo.kl.coef", "data.eval_prompts", "train.eval_every", "device")

COMMON_KEYS: dict[str, tuple[str, ...]] = {
    "config": _RL,
    "train": _RL,
    "compare": ("model.policy", "data.prompts", "data.eval_prompts", "reward.function", "rollout.batch_size",
                "train.batch_size", "train.num_steps", "train.eval_every", "algo.kl.coef", "device"),
    "demo": ("rollout.batch_size", "train.num_steps", "actor.optim.lr", "algo.kl.coef", "sft.max_steps",
             "eval.samples_per_prompt", "device"),
    "eval": ("model.policy", "data.eval_prompts", "reward.function", "eval.greedy", "eval.samples_per_prompt",
             "eval.ks", "eval.temperature", "eval.pass_threshold", "rollout.max_new_tokens", "output_dir",
             "device"),
    "sft": ("model.policy", "sft.data", "sft.response_key", "sft.max_len", "sft.epochs", "sft.batch_size",
            "sft.micro_batch_size", "sft.optim.lr", "output_dir", "device"),
    "rm": ("model.policy", "rm.data", "rm.eval_data", "rm.max_len", "rm.epochs", "rm.batch_size",
           "rm.micro_batch_size", "rm.optim.lr", "output_dir", "device"),
}

POINTER = """\
every key with its resolved value:  reinforcepp config [--config PRESET|FILE] [KEY=VALUE ...]
every key's type, default, units, and the rules between keys:  docs/config.md"""


def keys_epilog(command: str, width: int = 100) -> str:
    """The epilog of ``command``'s --help: its common keys, then where every key is described."""
    described = {row.key: row for row in rows()}
    lines = ["common keys (KEY=VALUE; the schema default in brackets):"]
    for key in COMMON_KEYS[command]:
        row = described[key]
        text = f"{first_sentence(row.description)} [{row.default}]"
        lines.append(textwrap.fill(text, width, initial_indent=f"  {key:<30}", subsequent_indent=" " * 32))
    return "\n".join(lines) + "\n\n" + POINTER
