#!/usr/bin/env bash
# Issue "fast sequential training", the small-size batching question: RecBole's SASRec against
# SASRecPlus with targets batching (the default) and with windows batching, same network and seed,
# to early stopping, over more seeds (seed 2020 is in fast_training.jsonl / fast_training_targets.jsonl).
# usage: benchmarks/small_size_seeds.sh [DATASET] [SEEDS...]
set -uo pipefail
cd "$(dirname "$0")/.."
DS="${1:-ml-100k}"; shift || true
SEEDS="${*:-2021 2022}"
OUT=benchmarks/results/small_size_seeds.jsonl
SIZE="--hidden_size=32 --inner_size=128 --n_layers=1 --n_heads=2 --MAX_ITEM_LIST_LENGTH=20 --hidden_dropout_prob=0.5 --attn_dropout_prob=0.5 --epochs=300 --stopping_step=10 --show_progress=False"
for seed in $SEEDS; do
  benchmarks/run_cli.sh $OUT --model=SASRec --dataset=$DS $SIZE --seed=$seed
  benchmarks/run_cli.sh $OUT --model=SASRecPlus --dataset=$DS $SIZE --seed=$seed
  benchmarks/run_cli.sh $OUT --model=SASRecPlus --dataset=$DS $SIZE --seed=$seed --full_sequence_batch=windows
done
