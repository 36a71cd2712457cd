#!/usr/bin/env bash
# RecBole's SASRec vs SASRecPlus (current defaults: full_sequence, targets per batch) at the full
# sweep's paper size, converged, one after the other on the same machine with torch's default
# threads: per-epoch time, epochs to the best validation NDCG@10, test NDCG@10 / HR@10.
# usage: benchmarks/paper_size_side_by_side.sh [DATASET] [SEED]
set -uo pipefail
cd "$(dirname "$0")/.."
DS="${1:-amazon-beauty}"; SEED="${2:-2020}"
OUT=benchmarks/results/paper_size_side_by_side.jsonl
PAPER="--hidden_size=64 --inner_size=256 --n_layers=2 --n_heads=2 --MAX_ITEM_LIST_LENGTH=50 --hidden_dropout_prob=0.2 --attn_dropout_prob=0.2 --train_batch_size=2048 --eval_batch_size=4096 --epochs=200 --stopping_step=10 --seed=$SEED --show_progress=False"
for model in SASRec SASRecPlus; do
  benchmarks/run_cli.sh $OUT --model=$model --dataset=$DS $PAPER
done
