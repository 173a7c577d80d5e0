"""What the checkpoint checksums cost: SHA-256 throughput on a file the size of SmolLM2-135M's float32
weights, the time to checksum and verify a 135M-parameter checkpoint (weights + AdamW's two moments), and
a tiny model's save with and without the checksums.

Usage: .venv/bin/python benchmarks/checkpoint_checksums.py   (about 1 GiB of scratch space in $TMPDIR; ~30 s)
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch

from _common import call_times, md_table, median, print_header
from reinforcepp.testing import tiny_model
from reinforcepp.train import checkpoint
from reinforcepp.train.checkpoint import CheckpointState, checkpoint_problem, save_checkpoint, sha256_of

PARAMS_135M = 134_515_008  # SmolLM2-135M
MIB = 1 << 20


def random_file(path: Path, size: int) -> Path:
    with path.open("wb") as f:
        for start in range(0, size, 64 * MIB):
            f.write(os.urandom(min(64 * MIB, size - start)))
    return path


def hash_rows(scratch: Path) -> list[list[str]]:
    weights = random_file(scratch / "policy.bin", PARAMS_135M * 4)
    sha256_of(weights)  # warm the page cache, as it is right after a save
    seconds = median(call_times(lambda: sha256_of(weights), 3))
    gib_s = weights.stat().st_size / seconds / (1 << 30)
    checkpoint_bytes = PARAMS_135M * 4 * 3  # float32 weights + AdamW exp_avg + exp_avg_sq
    return [
        ["sha256 of 135M float32 weights (538 MB, page cache)", f"{seconds:.2f} s", f"{gib_s:.2f} GiB/s"],
        ["135M checkpoint with AdamW (1.6 GB): checksums at save, again at resume",
         f"{checkpoint_bytes / (1 << 30) / gib_s:.1f} s each", "(at the rate above)"],
    ]


def tiny_rows(scratch: Path) -> list[list[str]]:
    model = tiny_model()
    optimizer = torch.optim.AdamW(model.parameters())
    model(input_ids=torch.ones(1, 4, dtype=torch.long)).logits.sum().backward()
    optimizer.step()
    state = CheckpointState(modules={"policy": model}, objects={"actor_optimizer": optimizer})
    steps = iter(range(1_000))

    def save() -> Path:
        return save_checkpoint(scratch / "tiny", next(steps), state, keep=1)

    with_sums = median(call_times(save, 7))
    real = checkpoint.file_checksums
    checkpoint.file_checksums = lambda directory: {}  # the save as it was before checksums
    try:
        without = median(call_times(save, 7))
    finally:
        checkpoint.file_checksums = real
    path = save()
    size = sum(p.stat().st_size for p in path.iterdir()) / 1e6
    verify = median(call_times(lambda: checkpoint_problem(path), 7))
    return [
        [f"tiny model checkpoint ({size:.2f} MB) save, without checksums", f"{without * 1e3:.0f} ms", "median of 7"],
        ["the same save with checksums", f"{with_sums * 1e3:.0f} ms", f"+{(with_sums - without) * 1e3:.0f} ms"],
        ["verifying it at resume", f"{verify * 1e3:.0f} ms", "median of 7"],
    ]


def main() -> None:
    print_header("Checkpoint checksums: cost")
    scratch = Path(tempfile.mkdtemp(prefix="ckpt-checksums-"))
    try:
        rows = [*hash_rows(scratch), *tiny_rows(scratch)]
    finally:
        shutil.rmtree(scratch)
    print(md_table(["what", "time", "note"], rows))


if __name__ == "__main__":
    main()
