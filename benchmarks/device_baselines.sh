#!/usr/bin/env bash
# RecBole's baselines of the `full` profile (amazon-beauty, paper size, seen items removed, both protocols
# recorded) on a GPU machine that has PyTorch but neither RecBole nor network access, in one device call.
#
# usage, here (before the call):  benchmarks/device_baselines.sh prepare
#   fetches the wheels the GPU image lacks into .whl/base (recbole 1.2.1, colorlog, texttable, thop,
#   faiss-cpu, pandas<3 with pytz and tzdata; ~33 MB) and copies amazon-beauty into .carry/datasets
#   (both ignored by git; they travel with carry: [".whl/base", ".carry"]).
# usage, there:  benchmarks/device_baselines.sh run SECONDS [WORKERS]
#   installs the wheels, checks that the packages import (exit 2 at once if not), runs
#   `properties/sweep/full.yaml --models=$MODELS` (and `--grid_points=$GRID` when GRID is set, e.g.
#   GRID=dropout=0.5) with WORKERS runs at once (default 16; each run gets cpu_count // WORKERS CPU
#   threads) and stops the sweep after SECONDS (SIGTERM: finished runs are recorded, running ones are
#   not, but their run folders under runs/ keep their last saved resume state, so the same
#   call again on the same, still warm, machine goes on from there); then copies the results file, the
#   sweep's log, a report and the runs' logs (runs.tgz: every run.log, the validation curves of
#   unfinished runs too) to $OUT.
# A results file carried back in .carry/full_gpu_removed.jsonl (from an earlier call's $OUT) is the
# starting point: its runs are skipped (same run keys), so a second call goes on where the first ended.
# MODELS defaults to RecBole's baselines without BERT4Rec. The profile runs all 200 epochs (the
# published schedule): on an H200 one SASRec run alone trains an epoch in 0.95 s (~190 s a run), six at
# once in 3.5-3.8 s each (~770 s a run, more than one 600 s call; BENCHMARKS.md, 2026-12-04). A second
# call right after a first one found a fresh machine without the first's runs/, so what a call starts
# must end in it: within a session's 15 device minutes, `MODELS=SASRec GRID=dropout=0.5 ... run 540 3`.
set -uo pipefail
cd "$(dirname "$0")/.."
results=.carry/full_gpu_removed.jsonl
case "${1:-}" in
prepare)
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d .whl/base \
    recbole==1.2.1 colorlog texttable thop faiss-cpu 'pandas<3' pytz tzdata || exit 1
  data="${RECBOLE_SAE_DATA:-../shared/datasets}/amazon-beauty"
  [ -f "$data/amazon-beauty.inter" ] || { echo "error: no $data/amazon-beauty.inter: set RECBOLE_SAE_DATA" >&2; exit 2; }
  mkdir -p .carry/datasets && cp -r "$data" .carry/datasets/
  du -sh .whl/base .carry
  exit 0
  ;;
run) ;;
*) echo "error: usage: benchmarks/device_baselines.sh prepare | run SECONDS [WORKERS]" >&2; exit 2 ;;
esac
seconds=${2:?error: give the seconds the sweep may run}
workers=${3:-16}
out=${OUT:-device-baselines-out}; mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/base/*.whl
export PYTHONPATH=/tmp/site:$PWD RECBOLE_SAE_DATA=$PWD/.carry/datasets PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
python3 -c "import torch, recbole, pandas, numpy, faiss, recbole_sae
print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'recbole', recbole.__version__,
      'pandas', pandas.__version__, 'numpy', numpy.__version__, 'faiss', faiss.__version__)" 2>&1 | tee -a "$out/gpu.txt"
[ "${PIPESTATUS[0]}" = 0 ] || { echo "error: the packages do not import (see above)" >&2; exit 2; }
touch "$results"
timeout --signal=TERM --kill-after=30 "$seconds" python3 run_recbole_sae.py --sweep=properties/sweep/full.yaml \
  --models="${MODELS:-SASRec,GRU4Rec,SASRecF,FEARec}" ${GRID:+"--grid_points=$GRID"} --workers="$workers" \
  --results="$results" > "$out/sweep.log" 2>&1
echo "sweep exit $? after at most $seconds s"
tail -n 30 "$out/sweep.log"
cp "$results" "$out/full_gpu_removed.jsonl"
if [ -s "$results" ]; then
  python3 -m recbole_sae.benchmark report "$results" --name full_gpu_removed --baseline SASRec --out "$out" 2>&1 | tail -n 3
fi
find runs -name run.log -print0 2>/dev/null | tar czf "$out/runs.tgz" --null -T - 2>/dev/null
ls -la "$out"
