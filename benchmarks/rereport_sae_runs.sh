#!/usr/bin/env bash
# Recompute the reports of finished SASRecSAE runs with this version of the code (--sae_run: nothing
# is trained; the run's SASRec, SAE, sizes and seed are loaded), e.g. to add the held-out ratio to
# the runs measured before it existed. One RESULT record per run in OUT.
# usage: OUT=benchmarks/results/x.jsonl benchmarks/rereport_sae_runs.sh RUN_DIR...
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/results/sae_rereport.jsonl}"
for run in "$@"; do
  # the data is built before the model: dataset and MAX_ITEM_LIST_LENGTH come from the run's config
  read -r ds len < <(python - "$run" <<'PY'
import sys, torch
cfg = torch.load(sys.argv[1].rstrip("/") + "/model.pth", map_location="cpu", weights_only=False)["config"]
print(cfg["dataset"], cfg["MAX_ITEM_LIST_LENGTH"])
PY
)
  benchmarks/run_cli.sh "$OUT" --model=SASRecSAE --dataset="$ds" --MAX_ITEM_LIST_LENGTH="$len" --sae_run="$run" --show_progress=False
done
