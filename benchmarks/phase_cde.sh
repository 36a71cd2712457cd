#!/usr/bin/env bash
# After fast_training.sh: SASRecSAE on its SASRecPlus runs (stage 1 loaded from their checkpoints),
# steering sweeps on those SASRecSAE runs, and SAERec at the same size on amazon-beauty.
set -uo pipefail
cd "$(dirname "$0")/.."
SIZE="--hidden_size=32 --inner_size=128 --n_layers=1 --n_heads=2 --MAX_ITEM_LIST_LENGTH=20 --hidden_dropout_prob=0.5 --attn_dropout_prob=0.5 --seed=2020"
run_of() {  # run folder of the last record of model $1 on dataset $2 in file $3
  python -c "import json; r=[json.loads(l) for l in open('$3')]; print([x['run_dir'] for x in r if x['model']=='$1' and x['dataset']=='$2'][-1])"
}
SAE="--sae_expansion=8 --sae_k=8 --sae_epochs=20"
for ds in ml-100k amazon-beauty; do
  ckpt="$(run_of SASRecPlus $ds benchmarks/results/fast_training.jsonl)/model.pth"
  benchmarks/run_cli.sh benchmarks/results/sasrec_sae.jsonl --model=SASRecSAE --dataset=$ds $SIZE $SAE --sasrec_checkpoint=$ckpt
done
STRENGTHS="--strengths=-4,0,1,2,4,8"
sae_ml="$(run_of SASRecSAE ml-100k benchmarks/results/sasrec_sae.jsonl)"
for genre in Western Sci-Fi Horror; do
  benchmarks/run_cli.sh benchmarks/results/steering.jsonl --model=SteerableSASRec --dataset=ml-100k $SIZE --sae_run=$sae_ml "--steer_sweep=class=$genre" $STRENGTHS
done
sae_ab="$(run_of SASRecSAE amazon-beauty benchmarks/results/sasrec_sae.jsonl)"
for cat in "Nail Polish" Fragrance Eyes; do
  benchmarks/run_cli.sh benchmarks/results/steering.jsonl --model=SteerableSASRec --dataset=amazon-beauty $SIZE --sae_run=$sae_ab "--steer_sweep=categories=$cat" $STRENGTHS
done
benchmarks/run_cli.sh benchmarks/results/saerec.jsonl --model=SAERec --dataset=amazon-beauty $SIZE --epochs=300 --stopping_step=10
