"""Does torch.compile pay on this CPU? The update's forward + backward, eager against compiled.

The peer workload's model (../shared/bench/base_model, 4.2M Llama) on one mini-batch of the TRL workload's
shape (128 sequences x 39 tokens), the loss being the mean log-prob of the next token (the update's
forward and backward without the RL terms around them). Eager and compiled alternate in one process, after
the compiled model's first call (whose time, the compilation, is reported apart).

    .venv/bin/python benchmarks/compile_train_step.py
    .venv/bin/python benchmarks/compile_train_step.py --rounds 3 --steps 6 --mode max-autotune-no-cudagraphs
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BASE_MODEL, call_times, median, print_header, write_json  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=BASE_MODEL)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--length", type=int, default=39)
    ap.add_argument("--steps", type=int, default=5, help="timed forward + backward passes per round and side")
    ap.add_argument("--rounds", type=int, default=2, help="eager / compiled alternations")
    ap.add_argument("--mode", default=None, help="torch.compile mode (default: its default)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json-out", type=Path, default=None)
    ap.add_argument("--quick", action="store_true", help="smoke check: batch 8, 1 round of 1 step")
    args = ap.parse_args(argv)
    if args.quick:
        args.batch, args.steps, args.rounds = 8, 1, 1
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(args.threads)
    print_header("torch.compile of the update's forward + backward (fp32 CPU)", args.threads)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).train()
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (args.batch, args.length), generator=g)
    mask = torch.ones_like(ids)

    def step(m):
        logits = m(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        logp = logits.log_softmax(-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        (-logp.mean()).backward()
        model.zero_grad(set_to_none=True)

    step(model)  # eager warm-up
    compiled = torch.compile(model, mode=args.mode)
    t0 = time.perf_counter()
    step(compiled)
    compile_s = time.perf_counter() - t0
    print(f"first compiled call (compilation included): {compile_s:.1f} s")
    eager, comp = [], []
    for r in range(args.rounds):
        eager += call_times(lambda: step(model), args.steps)
        comp += call_times(lambda: step(compiled), args.steps)
        print(f"  round {r + 1}/{args.rounds}: eager {median(eager[-args.steps:]):.3f} s, "
              f"compiled {median(comp[-args.steps:]):.3f} s")
    e, c = median(eager), median(comp)
    print(f"\n| [{args.batch} x {args.length}] forward + backward | eager s | compiled s | compiled / eager | "
          f"compilation s |\n|---|---|---|---|---|\n| median of {len(eager)} | {e:.3f} | {c:.3f} | {c / e:.2f}x | "
          f"{compile_s:.1f} |")
    write_json(args.json_out, {"argv": sys.argv, "eager_s": eager, "compiled_s": comp, "compile_s": compile_s})


if __name__ == "__main__":
    main()
