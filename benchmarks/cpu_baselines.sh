#!/usr/bin/env bash
# RecBole's baselines still owed on the CPU, at the `full_lr1e-3` settings (amazon-beauty, paper size,
# seen items removed, both protocols recorded; BENCHMARKS.md), as lanes of one-thread runs. Idempotent:
# every command is a sweep that skips the runs its results file already holds and resumes a killed
# run from its last validation (`resume.pth` in runs/), so the same command, run again on a machine
# that kept runs/, goes on where the last one stopped.
#
# usage:  benchmarks/cpu_baselines.sh            (all lanes at once; returns when all have ended)
#         benchmarks/cpu_baselines.sh lane SEED  (one lane, 2020, 2021 or 2022, in the foreground)
# stop:   kill the process group (kill -- -PGID) or SIGTERM each sweep: a running run is not recorded
#         and resumes the next time.
# Logs: runs/sweeps/<results stem>.log; records: runs/sweeps/<results stem>.jsonl.
set -uo pipefail
cd "$(dirname "$0")/.."
export RECBOLE_SAE_DATA="${RECBOLE_SAE_DATA:-$(cd .. && pwd)/shared/datasets}"
export OMP_NUM_THREADS=1 MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
python="${PYTHON:-python}"

# one run: MODEL DROPOUT SEED RESULTS_STEM
one() {
  local log="runs/sweeps/$4.log"
  mkdir -p runs/sweeps
  nice -n 5 "$python" run_recbole_sae.py --sweep=properties/sweep/full_lr1e-3.yaml --models="$1" \
    --grid_points=dropout="$2" --seeds="$3" --results="runs/sweeps/$4.jsonl" >>"$log" 2>&1
  local code=$?
  echo "$(date -u +%FT%TZ) $1 seed $3: exit $code (log $log)"
  return $code
}

# The runs still owed (GRU4Rec, FEARec and SASRecF of every seed are in
# benchmarks/results/full_cpu_baselines.jsonl): BERT4Rec, 12 epochs at batch 256 (the profile's),
# one lane per seed; three one-thread lanes share the two cores (1 h 45 min here).
lane() { one BERT4Rec 0.2 "$1" "bert4rec_removed_$1"; }

usage="error: usage: benchmarks/cpu_baselines.sh [lane 2020|2021|2022]"
case "${1:-} ${2:-}" in
" ") lane 2020 & lane 2021 & lane 2022 & wait ;;
"lane 2020" | "lane 2021" | "lane 2022") lane "$2" ;;
*) echo "$usage" >&2; exit 2 ;;
esac
