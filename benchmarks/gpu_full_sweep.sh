#!/usr/bin/env bash
# The `full` sweep profile (paper size) on a GPU machine that has PyTorch but neither RecBole nor
# network access: the packages travel as wheels in .whl/ (recbole, colorlog, texttable, thop,
# faiss-cpu, pandas<3 with pytz and tzdata), amazon-beauty and its item text embeddings (written here
# with `python -m recbole_sae.intents.embedding_file`) in .carry/.
#   benchmarks/gpu_full_sweep.sh wheels  # here, before the device call: fetch the wheels into .whl/
#   benchmarks/gpu_full_sweep.sh start   # there: install, check, start the sweep in the background
#   benchmarks/gpu_full_sweep.sh poll S  # there: wait S seconds, print progress, copy results to $OUT
# A fresh results file starts with the finished runs of benchmarks/results/full_h100_targets.jsonl
# (same run keys: they are skipped). Runs go in the order of MODELS; a run is recorded when it
# finishes, so a device session that ends early keeps what finished. `start` exits non-zero when
# the packages do not import: chain the rest of the device command with && so that a missing wheel
# costs seconds, not the whole call.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = wheels ]; then
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d .whl \
    recbole==1.2.1 colorlog texttable thop faiss-cpu 'pandas<3' pytz tzdata || exit 1
  ls .whl
  exit 0
fi
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl >/dev/null 2>&1 || true
export PYTHONPATH=/tmp/site:$PWD RECBOLE_SAE_DATA=$PWD/.carry/datasets PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
RESULTS=runs/sweeps/full.jsonl
case "${1:-}" in
start)
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, recbole, pandas, numpy, faiss, recbole_sae; print('torch', torch.__version__, torch.cuda.is_available(), 'recbole', recbole.__version__, 'pandas', pandas.__version__, 'numpy', numpy.__version__, 'faiss', faiss.__version__)" || exit 1
  mkdir -p runs/sweeps
  [ -f $RESULTS ] || python3 -c "import json, sys
for line in open('benchmarks/results/full_h100_targets.jsonl'):
    if json.loads(line).get('status') == 'ok':
        sys.stdout.write(line)" > $RESULTS
  setsid nohup python3 run_recbole_sae.py --sweep=properties/sweep/full.yaml --workers="${WORKERS:-6}" \
    --models="${MODELS:-BERT4Rec,SASRec,GRU4Rec,SASRecSAE,SAERec,SASRecPlus}" \
    --text_embeddings=$PWD/.carry/amazon-beauty-minilm.safetensors --results=$RESULTS \
    > runs/sweeps/full.log 2>&1 < /dev/null &
  sleep "${2:-60}"
  ;;
poll)
  sleep "${2:-60}"
  ;;
esac
tail -n 40 runs/sweeps/full.log
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv
if [ -n "${OUT:-}" ]; then
  cp runs/sweeps/full.log "$OUT/" 2>/dev/null
  cp $RESULTS "$OUT/" 2>/dev/null
  [ -d runs/sweeps/full-logs ] && tar czf "$OUT/full-logs.tgz" runs/sweeps/full-logs 2>/dev/null
  ls runs/sweeps/full.md >/dev/null 2>&1 && cp runs/sweeps/full.md runs/sweeps/full-ndcg10.png "$OUT/" 2>/dev/null
fi
true
