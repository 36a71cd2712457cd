#!/usr/bin/env bash
# Per-epoch training time, one run after another on an otherwise idle machine (torch's default
# threads): RecBole's SASRec vs SASRecPlus (current defaults: full_sequence, targets per batch) at
# the paper's size on both datasets; stock run_recbole vs run_recbole_sae at hidden 32; SASRecPlus
# batching targets vs windows at hidden 32 on amazon-beauty. Two or three epochs each: times only
# (the converged metrics are in the fast-training and full-sweep sections of BENCHMARKS.md).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=benchmarks/results/epoch_times.jsonl
PAPER="--hidden_size=64 --inner_size=256 --n_layers=2 --n_heads=2 --MAX_ITEM_LIST_LENGTH=50 --hidden_dropout_prob=0.2 --attn_dropout_prob=0.2 --train_batch_size=2048 --eval_batch_size=4096 --seed=2020 --epochs=2"
SMALL="--hidden_size=32 --inner_size=128 --n_layers=1 --n_heads=2 --MAX_ITEM_LIST_LENGTH=20 --hidden_dropout_prob=0.5 --attn_dropout_prob=0.5 --seed=2020"
TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 \
  python benchmarks/stock_vs_plugin.py benchmarks/results/stock_vs_plugin.jsonl --dataset=ml-100k --epochs=2 --show_progress=False $SMALL
for ds in ml-100k amazon-beauty; do
  benchmarks/run_cli.sh $OUT --model=SASRec --dataset=$ds $PAPER
  benchmarks/run_cli.sh $OUT --model=SASRecPlus --dataset=$ds $PAPER
done
for unit in targets windows; do
  benchmarks/run_cli.sh $OUT --model=SASRecPlus --dataset=amazon-beauty $SMALL --epochs=3 --full_sequence_batch=$unit
done
