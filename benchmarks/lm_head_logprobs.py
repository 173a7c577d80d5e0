"""Response log-probs from hidden states: three ways through the LM head, with and without huge pages.

The last step of every forward pass of the RL step (reference, old policy, update) turns hidden states
[B, T, H] into log pi(o_t) and the entropy through the LM head [V, H]. At SmolLM2's 49k vocabulary this is
a third of the model's FLOPs per token and the largest tensors of the step. Three ways, same formulas:

  strided     F.linear on the strided slice [:, -T-1:-1] of [B, L, H], as HF's ``logits_to_keep`` gives it
  contiguous  the slice made contiguous [B*T, H] first (what policy_logprobs does when it takes a gradient)
  chunked     reinforcepp.algos.head_logprobs: rows in chunks, no [B*T, V] logits (no-gradient passes, and the
              update with ``train.chunked_logprobs=true``)

Each (way, THP_MEM_ALLOC_ENABLE) runs in a fresh process: the forward without gradient, the forward and
backward (loss on log pi, entropy computed as the update does), and the peak RSS the forward and backward
added. A first table times a fresh 113 MB tensor (the embedding's gradient at 49152 x 576) against reusing one:
the page faults a fresh large tensor costs, with the default allocator, PyTorch's huge pages and glibc's
heap only (no mmap, freed memory kept).

    .venv/bin/python benchmarks/lm_head_logprobs.py                 # B*T = 512 and 2048 rows, V = 49152, H = 576
    .venv/bin/python benchmarks/lm_head_logprobs.py --rows 512 --repeats 3
    .venv/bin/python benchmarks/lm_head_logprobs.py --fresh-only --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import call_times, median, print_header, rss_mb, write_json  # noqa: E402

WAYS = ("strided", "contiguous", "chunked")


def _child(way: str, rows: int, hidden: int, vocab: int, repeats: int, threads: int) -> dict:
    import resource

    import torch

    from reinforcepp.algos import entropy_from_logits, head_logprobs, token_logprobs

    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    T = 16
    B = rows // T
    states = torch.randn(B, T + 5, hidden, generator=g)  # a prompt of 4 + T + 1 positions, as a forward gives
    weight = (torch.randn(vocab, hidden, generator=g) * 0.02).requires_grad_()
    tokens = torch.randint(0, vocab, (B, T), generator=g)

    def logprobs(h):
        if way == "chunked":
            logp, ent = head_logprobs(h.reshape(B * T, hidden), weight, tokens.reshape(-1), with_entropy=True)
            return logp, ent
        x = h if way == "strided" else h.reshape(B * T, hidden)
        z = torch.nn.functional.linear(x, weight).view(B, T, vocab).float()
        return token_logprobs(z, tokens), entropy_from_logits(z)

    def slice_of_states():
        return states.detach().requires_grad_()[:, -T - 1 : -1]

    def forward_only():
        with torch.no_grad():
            logprobs(slice_of_states())

    def forward_backward():
        logp, ent = logprobs(slice_of_states())
        (logp.sum() + 0.0 * ent.detach().sum()).backward()  # entropy logged, not in the loss (coef 0)
        weight.grad = None

    torch.mm(states[0, :8], weight[:64].detach().t())  # start MKL's threads before the baseline
    base = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, rss_mb())
    forward_backward()  # first, so that the peak it adds is measured from the inputs alone
    peak_added = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    return {"forward_s": min(call_times(forward_only, repeats)),
            "forward_backward_s": min(call_times(forward_backward, repeats)),
            "peak_added_mb": max(peak_added, 0.0)}


def _fresh_tensor_child(threads: int, repeats: int, heap: bool) -> dict:
    if heap:  # glibc: no mmap for large blocks, keep freed memory: a freed 113 MB block is reused, not faulted again
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-4, 0)  # M_MMAP_MAX
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
    import torch

    torch.set_num_threads(threads)
    held = torch.empty(49152, 576)
    fresh, reused = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.zeros(49152, 576)
        fresh.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        held.zero_()
        reused.append(time.perf_counter() - t0)
    return {"fresh_zeros_s": min(fresh), "reused_zero_s": min(reused)}


def _run_child(args_list: list[str], thp: str, threads: int) -> dict:
    env = {**os.environ, "THP_MEM_ALLOC_ENABLE": thp, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    out = subprocess.run([sys.executable, __file__, "--child", *args_list], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"child {args_list} (THP {thp}) failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, *rest = sys.argv[2:]
        if kind == "fresh":
            print(json.dumps(_fresh_tensor_child(int(rest[0]), int(rest[1]), rest[2] == "heap")))
        else:
            rows, hidden, vocab, repeats, threads = map(int, rest)
            print(json.dumps(_child(kind, rows, hidden, vocab, repeats, threads)))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="+", default=[512, 2048], help="B*T response positions (multiples of 16)")
    ap.add_argument("--hidden", type=int, default=576)
    ap.add_argument("--vocab", type=int, default=49152)
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats in each process (best of)")
    ap.add_argument("--rounds", type=int, default=2, help="fresh processes per configuration (median of)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--fresh-only", action="store_true", help="only the fresh-tensor table")
    ap.add_argument("--json-out", type=Path, default=None)
    ap.add_argument("--quick", action="store_true", help="smoke check: 64 rows, vocab 4096, 1 round")
    args = ap.parse_args(argv)
    if args.quick:
        args.rows, args.vocab, args.rounds, args.repeats = [64], 4096, 1, 1
    print_header("LM head -> log-probs: strided / contiguous / chunked, huge pages off / on", args.threads)
    results: dict = {"argv": sys.argv, "fresh": {}, "ways": {}}

    print("\nA fresh 49152 x 576 float32 tensor (torch.zeros) against zeroing one already touched (ms, best of 5)")
    print("| allocator | fresh zeros | reused .zero_() |\n|---|---|---|")
    for name, thp, malloc in (("default", "0", "mmap"), ("THP_MEM_ALLOC_ENABLE=1", "1", "mmap"),
                              ("glibc heap only (mallopt M_MMAP_MAX=0)", "0", "heap")):
        runs = [_run_child(["fresh", str(args.threads), "5", malloc], thp, args.threads) for _ in range(args.rounds)]
        r = {k: median(x[k] for x in runs) for k in runs[0]}
        results["fresh"][name] = r
        print(f"| {name} | {r['fresh_zeros_s'] * 1e3:.1f} | {r['reused_zero_s'] * 1e3:.1f} |")
    if args.fresh_only:
        write_json(args.json_out, results)
        return

    print(f"\nLog-probs + entropy of B*T rows, H = {args.hidden}, V = {args.vocab} (s, best of {args.repeats} per "
          f"process, median of {args.rounds} processes, alternating; peak MiB the forward + backward added)")
    print("| rows | way | THP | forward (no grad) | forward + backward | peak added MiB |\n|---|---|---|---|---|---|")
    for rows in args.rows:
        runs: dict = {}
        for _ in range(args.rounds):
            for way in WAYS:
                for thp in ("0", "1"):
                    spec = [way, str(rows), str(args.hidden), str(args.vocab), str(args.repeats), str(args.threads)]
                    runs.setdefault((way, thp), []).append(_run_child(spec, thp, args.threads))
        for (way, thp), rs in runs.items():
            r = {k: median(x[k] for x in rs) for k in rs[0]}
            results["ways"][f"{rows}/{way}/{thp}"] = r
            print(f"| {rows} | {way} | {thp} | {r['forward_s']:.3f} | {r['forward_backward_s']:.3f} | "
                  f"{r['peak_added_mb']:.0f} |")
    write_json(args.json_out, results)


if __name__ == "__main__":
    main()
