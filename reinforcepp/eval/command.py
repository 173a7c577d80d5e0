"""`reinforcepp eval`: evaluate a model on held-out prompts, print a table, write eval.json and every
completion (text, reward, passed) to eval_samples.jsonl beside it."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import transformers

from reinforcepp.config import Config, ConfigError
from reinforcepp.models import load_causal_lm, load_tokenizer, resolve_device
from reinforcepp.rollout import TorchEngine
from reinforcepp.threads import apply_threads
from reinforcepp.train.run import build_scorer, check_sources, checked_reward_function, read_prompt_rows, tokenize_rows
from reinforcepp.train.samples import completion_texts

from .evaluate import EvalResult, format_table
from .suite import run_eval_suite

EVAL_SAMPLES = "eval_samples.jsonl"


def evaluate_model(cfg: Config) -> list[EvalResult]:
    """Evaluate ``model.policy`` on ``data.eval_prompts`` (else ``data.prompts``) as ``cfg.eval`` asks;
    writes ``output_dir/eval.json`` and returns the results."""
    check_sources(cfg, need_prompts=False)
    path = cfg.data.eval_prompts or cfg.data.prompts
    if path is None:
        raise ConfigError("data.eval_prompts: set the held-out prompts to evaluate on")
    rows = read_prompt_rows(path, cfg)
    function = checked_reward_function(cfg, {path: rows})
    transformers.utils.logging.disable_progress_bar()
    device = resolve_device(cfg.device)
    apply_threads(cfg.threads)
    m = cfg.model
    tokenizer = load_tokenizer(m.policy, gguf_file=m.gguf_file, trust_remote_code=m.trust_remote_code)
    model = load_causal_lm(m.policy, dtype=m.dtype, device=device, gguf_file=m.gguf_file,
                           trust_remote_code=m.trust_remote_code)
    prompts, _ = tokenize_rows(rows, cfg, tokenizer, path)
    scorer = build_scorer(cfg, tokenizer, device, function)
    engine = TorchEngine(model, tokenizer, max_batch_tokens=cfg.rollout.max_batch_tokens,
                         compile=cfg.rollout.compile, fuse_qkv=cfg.rollout.compile, fuse_gate_up=cfg.rollout.compile)
    results = run_eval_suite(cfg, engine, scorer, prompts, decode=lambda rollout: completion_texts(tokenizer, rollout))
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    scores = [{k: v for k, v in asdict(r).items() if k != "completions"} for r in results]
    record = {"model": m.policy, "prompts": str(path), "results": scores}
    (out / "eval.json").write_text(json.dumps(record, indent=2) + "\n")
    with (out / EVAL_SAMPLES).open("w", encoding="utf-8") as f:
        for result in results:
            f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in result.completions)
    return results


def print_results(results: list[EvalResult]) -> None:
    print(format_table(results))
