"""train.compile's per-layer graphs against eager, in one process: policy_logprobs forward + backward (the update)
and without gradient (the experience), alternating per call, on the tiny TRL workload's batch (32 prompts of 5-7
tokens x 4 samples, 32 response tokens, the 4.2M base model), unshared prefix (compiled layers run eagerly under
shared prefix). The first call of each (compilation) is reported apart.

    PYTHONPATH=. .venv/bin/python benchmarks/compile_layers_ab.py --rounds 12
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BASE_MODEL, median, print_header  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    import torch
    from transformers import AutoModelForCausalLM

    from reinforcepp.train.compiled import compile_layers
    from reinforcepp.train.experience import Experience
    from reinforcepp.train.forward import policy_logprobs

    torch.set_num_threads(args.threads)
    print_header("compiled decoder layers vs eager, policy_logprobs (fp32 CPU)", args.threads)
    eager = AutoModelForCausalLM.from_pretrained(BASE_MODEL, dtype=torch.float32).eval()
    compiled = copy.deepcopy(eager)
    compile_layers(compiled)
    g = torch.Generator().manual_seed(0)
    P, n, LP, T = 32, 4, 7, 32
    lens = torch.randint(5, LP + 1, (P,), generator=g)
    pm = (torch.arange(LP)[None] >= LP - lens[:, None]).long()
    pi = torch.randint(3, 16, (P, LP), generator=g) * pm
    exp = Experience(pi.repeat_interleave(n, 0), pm.repeat_interleave(n, 0),
                     torch.randint(3, 16, (P * n, T), generator=g), torch.ones(P * n, T, dtype=torch.long))

    def update(model):
        logp, _ = policy_logprobs(model, exp, 1.0)
        logp.mean().backward()
        model.zero_grad(set_to_none=True)

    def experience(model):
        with torch.no_grad():
            policy_logprobs(model, exp, 1.0)

    def timed(fn):
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    for name, model in (("eager", eager), ("compiled", compiled)):
        print(f"first calls ({name}): update {timed(lambda: update(model)):.1f} s, "
              f"experience {timed(lambda: experience(model)):.1f} s", flush=True)
    times = {k: [] for k in ("eu", "cu", "ee", "ce")}
    for _ in range(args.rounds):
        times["eu"].append(timed(lambda: update(eager)))
        times["cu"].append(timed(lambda: update(compiled)))
        times["ee"].append(timed(lambda: experience(eager)))
        times["ce"].append(timed(lambda: experience(compiled)))
    m = {k: median(v) for k, v in times.items()}
    print(f"\n| medians of {args.rounds} | eager s | compiled s | compiled / eager |\n|---|---|---|---|\n"
          f"| update (forward + backward) | {m['eu']:.3f} | {m['cu']:.3f} | {m['cu'] / m['eu']:.2f}x |\n"
          f"| experience (no grad) | {m['ee']:.3f} | {m['ce']:.3f} | {m['ce'] / m['ee']:.2f}x |")


if __name__ == "__main__":
    main()
