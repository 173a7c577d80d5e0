"""SFT and reward-model training on a tiny random model: SFT loss and held-out pairwise accuracy before/after.
Usage: .venv/bin/python benchmarks/stages_tiny.py"""
import json, random, tempfile
from pathlib import Path
from reinforcepp.config import load_config
from reinforcepp.data.prompts import write_jsonl
from reinforcepp.stages import run_rm, run_sft
from reinforcepp.testing import save_tiny_checkpoint
d = Path(tempfile.mkdtemp()); tiny = save_tiny_checkpoint(d / "m")
rows = [{"prompt": "say a:", "response": "aaaa"}] * 30
data = write_jsonl(rows, d / "sft.jsonl")
cfg = load_config(None, [f"model.policy={tiny}", f"sft.data={data}", f"output_dir={d/'sft'}", "sft.epochs=4", "sft.batch_size=8",
                         "sft.micro_batch_size=4", "sft.max_len=40", "sft.optim.lr=3e-3", "sft.optim.warmup_ratio=0", "device=cpu"])
run_sft(cfg)
rec = [json.loads(l) for l in (d/"sft"/"sft_metrics.jsonl").read_text().splitlines()]
print("SFT loss first/last:", round(rec[0]["loss"], 3), round(rec[-1]["loss"], 3))
def pairs(n, seed):
    rng = random.Random(seed); out = []
    for _ in range(n):
        k = rng.randint(3, 6)
        out.append({"prompt": "pick:", "chosen": "".join(rng.choice("aab") for _ in range(k)) + "a", "rejected": "".join(rng.choice("bcd") for _ in range(k))})
    return out
tr = write_jsonl(pairs(64, 1), d/"tr.jsonl"); ev = write_jsonl(pairs(40, 2), d/"ev.jsonl")
cfg = load_config(None, [f"model.policy={tiny}", f"rm.data={tr}", f"rm.eval_data={ev}", f"output_dir={d/'rm'}", "rm.epochs=3", "rm.batch_size=8",
                         "rm.micro_batch_size=4", "rm.optim.lr=3e-3", "rm.optim.warmup_ratio=0", "device=cpu"])
run_rm(cfg)
for line in (d / "rm" / "rm_metrics.jsonl").read_text().splitlines():
    record = json.loads(line)
    if record["phase"] in ("before", "after"):
        print(f"RM held-out pairs, {record['phase']}: accuracy {record['accuracy']:.3f}, loss {record['loss']:.3f}")
