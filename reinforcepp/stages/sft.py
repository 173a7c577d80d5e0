"""Supervised fine-tuning: cross-entropy on the response tokens of prompt + response rows.

Each row becomes prompt ids + response ids (+ EOS); the loss counts response tokens only. Rows longer
than `sft.max_len` are skipped and counted, never cut. An optimizer step takes `sft.batch_size` rows,
run as micro-batches of `sft.micro_batch_size`; every micro-batch loss is divided by the step's
*global* response-token count, so the accumulated gradient does not depend on the micro-batch size.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from reinforcepp.algos import sft_loss
from reinforcepp.config.errors import ConfigError
from reinforcepp.config.schema import Config
from reinforcepp.data.conversation import sft_example
from reinforcepp.data.prompts import DataError, epoch_permutation, read_rows
from reinforcepp.data.rendering import render_prompt, render_response
from reinforcepp.models import load_causal_lm, load_tokenizer, resolve_device
from reinforcepp.models.inputs import right_pad
from reinforcepp.train.checkpoint import save_hf_model
from reinforcepp.train.metrics import StepProgress
from reinforcepp.train.optim import build_optimizer, clip_and_step
from reinforcepp.threads import apply_threads

log = logging.getLogger(__name__)

METRICS_FILE = "sft_metrics.jsonl"
FINAL_DIR = "sft_final"


@dataclass
class Example:
    """One tokenized row: ``ids`` = prompt + response (+ EOS); ``loss_mask`` 1 on response tokens."""

    ids: list[int]
    loss_mask: list[int]

    @property
    def num_targets(self) -> int:
        return sum(self.loss_mask)


def require(cfg: Config, stage: str) -> None:
    """The settings a stage cannot start without, all reported at once."""
    problems = []
    if not cfg.model.policy:
        problems.append(f"model.policy: {stage} needs a model to start from (HF hub id or local directory)")
    if not getattr(cfg, stage).data:
        problems.append(f"{stage}.data: {stage} needs a data file")
    if cfg.model.lora is not None:
        problems.append(f"model.lora: LoRA applies to RL training (reinforcepp train); {stage} trains every weight: "
                        "remove model.lora")
    if problems:
        raise ConfigError(*problems)


def encode_pair(tokenizer, prompt: Any, response: Any, *, chat_template: bool) -> tuple[list[int], list[int]]:
    """(prompt ids, response ids) of one row (each a string or TRL's messages); the response ids end with EOS.

    The prompt is rendered as RL renders it (:func:`render_prompt`). With the chat template the response
    is the rest of the rendered conversation with the response as the assistant turn(s) (so the template's
    end-of-turn tokens are learned too: :func:`render_response`). Prompt and response are tokenized
    separately, so the boundary between them is exact.
    """
    prompt_text, prompt_ids = render_prompt(tokenizer, prompt, chat_template=chat_template)
    response_text = render_response(tokenizer, prompt, prompt_text, response, chat_template=chat_template)
    response_ids = tokenizer(response_text, add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    if eos is not None and (not response_ids or response_ids[-1] != eos):
        response_ids = response_ids + [eos]
    return list(prompt_ids), list(response_ids)


def build_examples(
    rows: list[dict[str, Any]], tokenizer, *, prompt_key: str, response_key: str, max_len: int, chat_template: bool,
    source: str = "sft.data",
) -> tuple[list[Example], int]:
    """Tokenize SFT rows (prompt + response, or TRL's ``messages``: :func:`.sft_example`); returns (examples,
    number skipped for exceeding ``max_len`` tokens). A bad row is an error naming ``source`` and the row."""
    examples, skipped = [], 0
    for i, row in enumerate(rows):
        where = f"{source}, row {i}"
        prompt, response = sft_example(row, prompt_key, response_key, where)
        try:
            prompt_ids, response_ids = encode_pair(tokenizer, prompt, response, chat_template=chat_template)
        except DataError as exc:
            raise DataError(f"{where}: {exc}") from None
        if len(prompt_ids) + len(response_ids) > max_len:
            skipped += 1
            continue
        examples.append(Example(prompt_ids + response_ids, [0] * len(prompt_ids) + [1] * len(response_ids)))
    return examples, skipped


def collate(examples: Sequence[Example], pad_id: int, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Model inputs and shifted targets of a micro-batch.

    input_ids, attention_mask: [B, L]; targets, loss_mask: [B, L-1] where position t predicts token t+1
    and loss_mask is 1 exactly where token t+1 is a response token.
    """
    ids, attention = right_pad([e.ids for e in examples], pad_id, device)
    loss_mask, _ = right_pad([e.loss_mask for e in examples], 0, device)
    return {"input_ids": ids, "attention_mask": attention, "targets": ids[:, 1:], "loss_mask": loss_mask[:, 1:]}


def step_batches(n: int, batch_size: int, epochs: int, seed: int) -> Iterator[list[int]]:
    """Index lists, one per optimizer step: a fresh permutation each epoch from (seed, epoch)."""
    for epoch in range(epochs):
        order = epoch_permutation(n, seed, epoch)
        for start in range(0, n, batch_size):
            yield order[start : start + batch_size]


def num_steps(n: int, batch_size: int, epochs: int) -> int:
    return epochs * math.ceil(n / batch_size)


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def prepare_output(cfg: Config, final_name: str, metrics_name: str) -> tuple[Path, Path]:
    out = Path(cfg.output_dir)
    final = out / final_name
    if final.exists():
        raise FileExistsError(f"{final} already exists; remove it or choose another output_dir")
    out.mkdir(parents=True, exist_ok=True)
    metrics = out / metrics_name
    metrics.write_text("")
    return final, metrics


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def run_sft(cfg: Config) -> Path:
    """Fine-tune `model.policy` on `sft.data`; returns the exported model directory `output_dir/sft_final`."""
    require(cfg, "sft")
    s = cfg.sft
    device = resolve_device(cfg.device)
    apply_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    final, metrics_path = prepare_output(cfg, FINAL_DIR, METRICS_FILE)

    m = cfg.model
    tokenizer = load_tokenizer(m.policy, gguf_file=m.gguf_file, trust_remote_code=m.trust_remote_code)
    dtype = "float32" if m.dtype == "auto" else m.dtype
    model = load_causal_lm(m.policy, dtype=dtype, device=device, gguf_file=m.gguf_file,
                           trust_remote_code=m.trust_remote_code)
    model.train()

    rows = read_rows(s.data, None)  # each row checked by build_examples: prompt + response, or messages
    examples, skipped = build_examples(
        rows, tokenizer, prompt_key=cfg.data.prompt_key, response_key=s.response_key,
        max_len=s.max_len, chat_template=cfg.data.apply_chat_template, source=str(s.data),
    )
    if skipped:
        log.warning("sft: skipped %d of %d rows longer than sft.max_len=%d tokens", skipped, len(rows), s.max_len)
    if not examples:
        raise DataError(f"{s.data}: every row is longer than sft.max_len={s.max_len} tokens")
    print(f"sft: {len(examples)} rows ({skipped} skipped over max_len={s.max_len}), {s.epochs} epoch(s)")

    total = num_steps(len(examples), s.batch_size, s.epochs)
    if s.max_steps is not None:
        total = min(total, s.max_steps)  # the LR schedule spans the steps that will run
    optimizer, scheduler = build_optimizer(model, s.optim, total)
    pad_id = tokenizer.pad_token_id
    progress = StepProgress(total, "SFT steps", enabled=cfg.log.progress)
    for step, indices in enumerate(itertools.islice(step_batches(len(examples), s.batch_size, s.epochs, cfg.seed), total)):
        batch = [examples[i] for i in indices]
        num_tokens = sum(e.num_targets for e in batch)  # the step's global normalizer
        lr = scheduler.get_last_lr()[0]
        loss_sum = 0.0
        for micro in chunks(batch, s.micro_batch_size):
            inputs = collate(micro, pad_id, device)
            logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                           use_cache=False).logits[:, :-1]
            loss = sft_loss(logits, inputs["targets"], inputs["loss_mask"], num_tokens=num_tokens)
            loss.backward()
            loss_sum += loss.item()
        grad_norm = float(clip_and_step(model, optimizer, scheduler, s.optim.max_grad_norm))
        record = {"step": step + 1, "loss": loss_sum, "lr": lr, "grad_norm": grad_norm,
                  "tokens": num_tokens, "rows": len(batch), "skipped_rows": skipped}
        append_jsonl(metrics_path, record)
        progress.step(f"sft step {step + 1}/{total} | loss {loss_sum:.4f} | lr {lr:.3g} | grad_norm {grad_norm:.3f}")
    progress.close()

    model.eval()
    return save_hf_model(model, tokenizer, final)

