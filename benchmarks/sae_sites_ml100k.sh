#!/usr/bin/env bash
# SASRecSAE on ml-100k at the paper's size: which capture site, dictionary size, sparsity and loss
# give monosemantic genre latents. Stage 1 is loaded from the paper-size SASRecSAE run of the main
# table, so every row explains the same SASRec. One CPU thread per run.
# usage: CKPT=runs/SASRecSAE-ml-100k-.../model.pth [OUT=results.jsonl] [RUNS='one line of flags per run']
#        benchmarks/sae_sites_ml100k.sh        (without RUNS: the capture-site table of BENCHMARKS.md)
set -uo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
CKPT="${CKPT:?set CKPT to the model.pth of the paper-size ml-100k SASRecSAE run}"
SIZE="--hidden_size=64 --inner_size=256 --n_layers=2 --n_heads=2 --MAX_ITEM_LIST_LENGTH=50 --hidden_dropout_prob=0.5 --attn_dropout_prob=0.5 --seed=2020"
OUT="${OUT:-benchmarks/results/sae_sites_ml100k.jsonl}"
while read -r flags; do
  [ -z "$flags" ] && continue
  benchmarks/run_cli.sh "$OUT" --model=SASRecSAE --dataset=ml-100k $SIZE --sasrec_checkpoint=$CKPT $flags
done <<<"${RUNS:-
--sae_layer=embedding --sae_expansion=8 --sae_k=16
--sae_layer=last --sae_expansion=8 --sae_k=16
--sae_layer=0 --sae_expansion=32 --sae_k=16
--sae_layer=0 --sae_expansion=8 --sae_k=4
--sae_layer=embedding --sae_expansion=32 --sae_k=8
--sae_layer=last --sae_expansion=8 --sae_activation=batchtopk --sae_k=16
--sae_layer=last --sae_expansion=8 --sae_activation=relu --sae_l1_coeff=0.001
}"
