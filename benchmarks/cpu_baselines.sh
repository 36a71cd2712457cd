#!/usr/bin/env bash
# RecBole's baselines still owed on the CPU (amazon-beauty, paper size, seen items removed, both
# protocols recorded; BENCHMARKS.md), as lanes of one-thread runs. Idempotent:
# every command is a sweep that skips the runs its results file already holds and resumes a killed
# run from its last saved state (`resume.pth` in runs/, written at every epoch's start with epochs
# this long: resume_every), so the same command, run again on a machine that kept runs/, goes on
# where the last one stopped.
#
# usage:  benchmarks/cpu_baselines.sh              (two lanes at once, one per core: BERT4Rec with
#                                                   targets 2020 and 2021 (done), then SASRec 2021;
#                                                   BERT4Rec with targets 2022 (done), then SASRec
#                                                   2020 and 2022; returns when both have ended)
#         benchmarks/cpu_baselines.sh lane SEED    (RecBole's SASRec, full profile, in the foreground)
#         benchmarks/cpu_baselines.sh target SEED  (BERT4Rec, the full_lr1e-3 profile's, in the foreground)
# stop:   kill the process group (kill -- -PGID) or SIGTERM each sweep: a running run is not recorded
#         and resumes the next time.
# Logs: runs/sweeps/<results stem>.log; records: runs/sweeps/<results stem>.jsonl.
set -uo pipefail
cd "$(dirname "$0")/.."
export RECBOLE_SAE_DATA="${RECBOLE_SAE_DATA:-$(cd .. && pwd)/shared/datasets}"
export OMP_NUM_THREADS=1 MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
python="${PYTHON:-python}"

# one run: SWEEP MODEL DROPOUT SEED RESULTS_STEM [more --key=value]
one() {
  local log="runs/sweeps/$5.log"
  mkdir -p runs/sweeps
  nice -n 5 "$python" run_recbole_sae.py --sweep="properties/sweep/$1.yaml" --models="$2" \
    --grid_points=dropout="$3" --seeds="$4" --results="runs/sweeps/$5.jsonl" "${@:6}" >>"$log" 2>&1
  local code=$?
  echo "$(date -u +%FT%TZ) $2 seed $4: exit $code (log $log)"
  return $code
}

# The runs (every RecBole baseline of every seed at the `full_lr1e-3` settings is in
# benchmarks/results/full_cpu_baselines.jsonl; still owed: RecBole's SASRec at the `full` profile):
# - RecBole's SASRec at the `full` profile's published schedule (lr 5e-4, all 200 epochs, validation
#   every 5), at dropout 0.5 as SASRecPlus's 0.0582 row, one lane per seed. About 145-190 s an epoch
#   on one core, 8-10 hours a run: each session goes on where the last one stopped, on a machine that
#   kept runs/. A GPU session runs the same runs (same run keys) in minutes: benchmarks/device_baselines.sh.
# - BERT4Rec as the `full_lr1e-3` profile trains it (with each interaction's target,
#   `mask_with_target`; batch 256; up to 60 epochs, ended by the profile's patience of 10
#   validations), seeds 2020-2022: about 315-380 s an epoch beside one other run; they ran 31, 40
#   and 48 epochs (done: benchmarks/results/bert4rec_target_curve.jsonl). Its 12-epoch runs (the
#   profile's budget before seed 2020's curve rose past it) are in
#   benchmarks/results/bert4rec_target.jsonl; the runs to patience go to
#   runs/sweeps/bert4rec_target_curve_SEED.jsonl (`target SEED` skips a seed its results file holds).
lane() { one full SASRec 0.5 "$1" "full_sasrec_$1"; }
target() { one full_lr1e-3 BERT4Rec 0.2 "$1" "bert4rec_target_curve_$1"; }

usage="error: usage: benchmarks/cpu_baselines.sh [lane|target SEED], SEED one of 2020 2021 2022"
case "${1:-} ${2:-}" in
" ") (target 2020; target 2021; lane 2021) & (target 2022; lane 2020; lane 2022) & wait ;;
"lane 2020" | "lane 2021" | "lane 2022") lane "$2" ;;
"target 2020" | "target 2021" | "target 2022") target "$2" ;;
*) echo "$usage" >&2; exit 2 ;;
esac
