#!/usr/bin/env bash
# Prepare the starting model of examples/experiments/kk_people.yaml: compact Knights-and-Knaves data
# (train 3-7 people, test 2-8), a ~1M-parameter character-level Llama, and an SFT pass on the train split
# that leaves it partly right (well above chance on 3-4 people, far from perfect) so RL has room to act.
# About 4-5 minutes on one CPU thread. Run from the repository root:
#
#   bash examples/experiments/kk_prepare.sh
#   reinforcepp compare examples/experiments/kk_people.yaml
#
# Threads: torch is pinned to one thread through OMP_NUM_THREADS/MKL_NUM_THREADS unless you set them.
set -euo pipefail

PYTHON="${PYTHON:-.venv/bin/python}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}"

# (a) data: runs/kk/data/{train,test}.jsonl (2000 train puzzles per size 3..7, 100 test per size 2..8)
"$PYTHON" -m reinforcepp.tasks.kk_compact runs/kk/data

# (b) a random character-level model: hidden 128, 4 layers, 4 heads (~1.05M parameters, 256 positions)
"$PYTHON" -c "from reinforcepp.testing import save_tiny_checkpoint; save_tiny_checkpoint('runs/kk/base', hidden=128, layers=4, heads=4)"

# (c) SFT on the answers only (the response is the k/n string); the model lands in runs/kk/sft/sft_final
"$PYTHON" -m reinforcepp sft model.policy=runs/kk/base sft.data=runs/kk/data/train.jsonl output_dir=runs/kk/sft \
  data.apply_chat_template=false sft.epochs=3 sft.max_steps=350 sft.batch_size=64 sft.micro_batch_size=64 \
  sft.optim.lr=3e-3 log.tensorboard=false
