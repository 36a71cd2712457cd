#!/usr/bin/env bash
# RecBole's baselines still owed on the CPU, at the `full_lr1e-3` settings (amazon-beauty, paper size,
# seen items removed, both protocols recorded; BENCHMARKS.md), as two lanes of one-thread runs, one
# lane per core. Idempotent: every command is a sweep that skips the runs its results file already
# holds and resumes a killed run from its last validation (`resume.pth` in runs/), so the same
# command in the next session goes on where this one stopped.
#
# usage:  benchmarks/cpu_baselines.sh            (both lanes at once; returns when both have ended)
#         benchmarks/cpu_baselines.sh lane a|b   (one lane, in the foreground)
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

# each lane stops at its first run that did not finish (a stop or a failure): later runs wait for it
lane_a() {
  one GRU4Rec 0.5 2021 gru_2021 && one FEARec 0.5 2022 fearec_removed_2022 &&
    one BERT4Rec 0.2 2020 bert4rec_removed_2020 && one BERT4Rec 0.2 2021 bert4rec_removed_2021
}
lane_b() {
  one GRU4Rec 0.5 2022 gru_2022 && one SASRecF 0.5 2022 sasrecf_2022 &&
    one BERT4Rec 0.2 2022 bert4rec_removed_2022
}

case "${1:-}" in
"") lane_a & lane_b & wait ;;
lane)
  case "${2:-}" in
  a) lane_a ;;
  b) lane_b ;;
  *) echo "error: usage: benchmarks/cpu_baselines.sh [lane a|b]" >&2; exit 2 ;;
  esac
  ;;
*) echo "error: usage: benchmarks/cpu_baselines.sh [lane a|b]" >&2; exit 2 ;;
esac
