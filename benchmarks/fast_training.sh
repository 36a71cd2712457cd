#!/usr/bin/env bash
# Issue "fast sequential training": stock RecBole SASRec (prefix rows, RecBole's trainer) vs
# SASRecPlus (full_sequence), same size, dropout and seed, to early stopping on valid NDCG@10.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=benchmarks/results/fast_training.jsonl
SIZE="--hidden_size=32 --inner_size=128 --n_layers=1 --n_heads=2 --MAX_ITEM_LIST_LENGTH=20 --hidden_dropout_prob=0.5 --attn_dropout_prob=0.5 --epochs=300 --stopping_step=10 --seed=2020"
for ds in ml-100k amazon-beauty; do
  benchmarks/run_cli.sh $OUT --model=SASRec --dataset=$ds $SIZE
  benchmarks/run_cli.sh $OUT --model=SASRecPlus --dataset=$ds $SIZE
done
