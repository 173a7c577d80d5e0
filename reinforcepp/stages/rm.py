"""Bradley-Terry reward modelling (paper eq. 11) on preference pairs.

The reward model is `ValueModel.from_pretrained(model.policy)`: the SFT model's backbone with a fresh
scalar head. A response's reward is the head's value at the last token of prompt + response + EOS.
Each optimizer step takes `rm.batch_size` pairs in micro-batches of `rm.micro_batch_size`; every
micro-batch loss is divided by the step's global pair count, so micro-batching leaves the gradient
unchanged. Pairwise accuracy on `rm.eval_data` is measured before and after training. Finally the
mean/std of the reward over the training responses (chosen and rejected) are stored in the model, so
RL can standardize with `reward.normalize=model`.
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from reinforcepp.algos import bradley_terry_loss
from reinforcepp.config.schema import Config
from reinforcepp.data.conversation import preference_example
from reinforcepp.data.prompts import DataError, read_rows
from reinforcepp.models import ValueModel, load_tokenizer, resolve_device
from reinforcepp.models.inputs import right_pad
from reinforcepp.stages.sft import (
    append_jsonl,
    chunks,
    encode_pair,
    num_steps,
    prepare_output,
    require,
    step_batches,
)
from reinforcepp.train.optim import build_optimizer, clip_and_step
from reinforcepp.threads import apply_threads

log = logging.getLogger(__name__)

METRICS_FILE = "rm_metrics.jsonl"
FINAL_DIR = "rm_final"


@dataclass
class Pair:
    """Token ids of prompt + chosen and prompt + rejected, each ending with EOS."""

    chosen: list[int]
    rejected: list[int]


def build_pairs(rows: list[dict[str, Any]], tokenizer, cfg: Config, source: str = "rm.data") -> tuple[list[Pair], int]:
    """Tokenize preference rows (strings, or TRL's message lists with an explicit or implicit prompt:
    :func:`.preference_example`); returns (pairs, number skipped because a side exceeds rm.max_len)."""
    pairs, skipped = [], 0
    for i, row in enumerate(rows):
        where = f"{source}, row {i}"
        prompt, *responses = preference_example(row, cfg.data.prompt_key, cfg.rm.chosen_key, cfg.rm.rejected_key,
                                                where)
        sides = []
        for response in responses:
            try:
                prompt_ids, response_ids = encode_pair(tokenizer, prompt, response,
                                                       chat_template=cfg.data.apply_chat_template)
            except DataError as exc:
                raise DataError(f"{where}: {exc}") from None
            sides.append(prompt_ids + response_ids)
        if max(len(s) for s in sides) > cfg.rm.max_len:
            skipped += 1
            continue
        pairs.append(Pair(*sides))
    return pairs, skipped


def load_pairs(path: str, tokenizer, cfg: Config) -> tuple[list[Pair], int]:
    rows = read_rows(path, None)  # each row checked by build_pairs
    pairs, skipped = build_pairs(rows, tokenizer, cfg, str(path))
    if skipped:
        log.warning("rm: skipped %d of %d pairs of %s longer than rm.max_len=%d tokens",
                    skipped, len(rows), path, cfg.rm.max_len)
    if not pairs:
        raise DataError(f"{path}: every pair is longer than rm.max_len={cfg.rm.max_len} tokens")
    return pairs, skipped


def score_pairs(model: ValueModel, pairs: Sequence[Pair], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen rewards [P], rejected rewards [P]) in one forward pass over the 2P sequences."""
    ids, attention = right_pad([p.chosen for p in pairs] + [p.rejected for p in pairs], pad_id, device)
    scores = model.score(ids, attention)  # [2P]
    return scores[: len(pairs)], scores[len(pairs):]


@torch.no_grad()
def evaluate(model: ValueModel, pairs: Sequence[Pair], pad_id: int, device, micro_batch_size: int) -> dict[str, float]:
    """Pairwise accuracy and mean Bradley-Terry loss over ``pairs``."""
    was_training = model.training
    model.eval()
    chosen, rejected = [], []
    for micro in chunks(pairs, micro_batch_size):
        c, r = score_pairs(model, micro, pad_id, device)
        chosen.append(c)
        rejected.append(r)
    model.train(was_training)
    loss, acc = bradley_terry_loss(torch.cat(chosen), torch.cat(rejected))
    return {"accuracy": acc.item(), "loss": loss.item(), "pairs": len(pairs)}


@torch.no_grad()
def reward_moments(model: ValueModel, pairs: Sequence[Pair], pad_id: int, device, micro_batch_size: int) -> tuple[float, float]:
    """Mean and (population) std of the reward over every chosen and rejected training response."""
    model.eval()
    scores = []
    for micro in chunks(pairs, micro_batch_size):
        c, r = score_pairs(model, micro, pad_id, device)
        scores += [c, r]
    values = torch.cat(scores).double()
    mean, std = values.mean().item(), values.std(unbiased=False).item()
    return mean, std if math.isfinite(std) and std > 1e-8 else 1.0


def run_rm(cfg: Config) -> Path:
    """Train a Bradley-Terry reward model from `model.policy` on `rm.data`; returns `output_dir/rm_final`."""
    require(cfg, "rm")
    r = cfg.rm
    device = resolve_device(cfg.device)
    apply_threads(cfg.threads)
    final, metrics_path = prepare_output(cfg, FINAL_DIR, METRICS_FILE)

    m = cfg.model
    tokenizer = load_tokenizer(m.policy, gguf_file=m.gguf_file, trust_remote_code=m.trust_remote_code)
    torch.manual_seed(cfg.seed)  # the fresh head's initialization
    dtype = "float32" if m.dtype == "auto" else m.dtype
    model = ValueModel.from_pretrained(m.policy, dtype=dtype, device=device, gguf_file=m.gguf_file,
                                       trust_remote_code=m.trust_remote_code)
    pad_id = tokenizer.pad_token_id

    pairs, skipped = load_pairs(r.data, tokenizer, cfg)
    eval_pairs = load_pairs(r.eval_data, tokenizer, cfg)[0] if r.eval_data else []
    print(f"rm: {len(pairs)} pairs ({skipped} skipped over max_len={r.max_len}), "
          f"{len(eval_pairs)} eval pairs, {r.epochs} epoch(s)")

    def run_eval(phase: str) -> None:
        if not eval_pairs:
            return
        result = evaluate(model, eval_pairs, pad_id, device, r.micro_batch_size)
        append_jsonl(metrics_path, {"phase": phase, **result})
        print(f"rm eval ({phase}): pairwise accuracy {result['accuracy']:.3f}  loss {result['loss']:.4f}  "
              f"on {result['pairs']} pairs")

    run_eval("before")
    model.train()
    total = num_steps(len(pairs), r.batch_size, r.epochs)
    optimizer, scheduler = build_optimizer(model, r.optim, total)
    for step, indices in enumerate(step_batches(len(pairs), r.batch_size, r.epochs, cfg.seed)):
        batch = [pairs[i] for i in indices]
        lr = scheduler.get_last_lr()[0]
        loss_sum, correct = 0.0, 0.0
        for micro in chunks(batch, r.micro_batch_size):
            chosen, rejected = score_pairs(model, micro, pad_id, device)
            loss, acc = bradley_terry_loss(chosen, rejected, num_pairs=len(batch))
            loss.backward()
            loss_sum += loss.item()
            correct += acc.item() * len(micro)
        grad_norm = float(clip_and_step(model, optimizer, scheduler, r.optim.max_grad_norm))
        accuracy = correct / len(batch)
        append_jsonl(metrics_path, {"phase": "train", "step": step + 1, "loss": loss_sum, "accuracy": accuracy,
                                    "lr": lr, "grad_norm": grad_norm, "pairs": len(batch), "skipped_pairs": skipped})
        print(f"rm step {step + 1}/{total}  loss {loss_sum:.4f}  acc {accuracy:.3f}  lr {lr:.3g}  "
              f"grad_norm {grad_norm:.3f}")
    run_eval("after")

    mean, std = reward_moments(model, pairs, pad_id, device, r.micro_batch_size)
    model.set_normalization(mean, std)
    append_jsonl(metrics_path, {"phase": "normalization", "mean": mean, "std": std})
    print(f"rm reward over training responses: mean {mean:.4f}  std {std:.4f} (stored for reward.normalize=model)")

    tmp = final.parent / f".tmp-{final.name}"
    shutil.rmtree(tmp, ignore_errors=True)  # a crashed earlier save
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(final)
    return final
