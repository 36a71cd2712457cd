#!/usr/bin/env bash
# Serial continuation: SASRecPlus on ml-100k with the overlapping windows, then phase C-E,
# then the stock-vs-plugin check.
set -uo pipefail
cd "$(dirname "$0")/.."
while pgrep -f phase_ab.sh > /dev/null; do sleep 5; done
SIZE="--hidden_size=32 --inner_size=128 --n_layers=1 --n_heads=2 --MAX_ITEM_LIST_LENGTH=20 --hidden_dropout_prob=0.5 --attn_dropout_prob=0.5 --epochs=300 --stopping_step=10 --seed=2020"
benchmarks/run_cli.sh benchmarks/results/fast_training.jsonl --model=SASRecPlus --dataset=ml-100k $SIZE
benchmarks/phase_cde.sh
MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 python benchmarks/stock_vs_plugin.py benchmarks/results/stock_vs_plugin.jsonl --dataset=ml-100k --epochs=1 --show_progress=False
# SASRecSAE at the paper's size (RecBole's SASRec defaults: hidden 64, 2 layers, 2 heads, length 50)
# on ml-100k, SAE on block 0 (of 2), then steering sweeps on it with finer strengths
PAPER="--hidden_size=64 --inner_size=256 --n_layers=2 --n_heads=2 --MAX_ITEM_LIST_LENGTH=50 --hidden_dropout_prob=0.5 --attn_dropout_prob=0.5 --seed=2020"
benchmarks/run_cli.sh benchmarks/results/sasrec_sae_paper.jsonl --model=SASRecSAE --dataset=ml-100k $PAPER --epochs=300 --stopping_step=10 --sae_layer=0 --sae_expansion=8 --sae_k=16
sae_paper="$(python -c "import json; print([json.loads(l) for l in open('benchmarks/results/sasrec_sae_paper.jsonl')][-1]['run_dir'])")"
for genre in Western Sci-Fi Horror; do
  benchmarks/run_cli.sh benchmarks/results/steering_paper.jsonl --model=SteerableSASRec --dataset=ml-100k $PAPER --sae_run=$sae_paper "--steer_sweep=class=$genre" --strengths=-2,0,1,2,3,4,6
done
