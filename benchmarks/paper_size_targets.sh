#!/usr/bin/env bash
# SASRecPlus at the full sweep's paper size on amazon-beauty with full_sequence_batch=targets (the
# new default), to compare with RecBole's SASRec of the H100 full sweep (same config and seed 2020,
# dropout 0.2). CPU, one thread.
set -uo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
benchmarks/run_cli.sh benchmarks/results/paper_size_targets.jsonl --model=SASRecPlus --dataset=amazon-beauty \
  --hidden_size=64 --inner_size=256 --n_layers=2 --n_heads=2 --MAX_ITEM_LIST_LENGTH=50 \
  --hidden_dropout_prob=0.2 --attn_dropout_prob=0.2 --train_batch_size=2048 --eval_batch_size=4096 \
  --epochs=200 --stopping_step=10 --seed=2020 --full_sequence_batch=targets
