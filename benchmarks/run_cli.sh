#!/usr/bin/env bash
# Run the CLI once and append its RESULT record (plus the command, machine and load) to a JSONL file.
# usage: benchmarks/run_cli.sh OUT.jsonl --model=... --dataset=... [--key=value ...]
set -euo pipefail
out="$1"; shift
here="$(cd "$(dirname "$0")/.." && pwd)"
export MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export RECBOLE_SAE_DATA="${RECBOLE_SAE_DATA:-$(cd "$here/../shared/datasets" 2>/dev/null && pwd)}"
mkdir -p "$(dirname "$out")" benchmarks/logs
log="benchmarks/logs/$(date +%Y%m%d-%H%M%S)-$(echo "$*" | tr -c 'A-Za-z0-9=_-' '_' | cut -c1-80).log"
load_before=$(cut -d' ' -f1 /proc/loadavg)
python "$here/run_recbole_sae.py" "$@" > "$log" 2>&1 || { echo "FAILED: $* (see $log)"; exit 1; }
load_after=$(cut -d' ' -f1 /proc/loadavg)
line=$(grep '^RESULT ' "$log" | tail -1 | cut -c8-)
python - "$out" "$line" "$load_before" "$load_after" "$*" <<'PY'
import json, os, platform, sys, datetime
out, line, lb, la, cmd = sys.argv[1:]
rec = json.loads(line)
if rec.get("result_file"):  # the RESULT line is a summary; the run's whole record is in its result.json
    with open(rec["result_file"], encoding="utf-8") as f:
        rec = json.load(f)
rec.update({"command": "python run_recbole_sae.py " + cmd, "date": datetime.date.today().isoformat(),
            "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.python_version()}",
            "load_before": float(lb), "load_after": float(la)})
with open(out, "a") as f:
    f.write(json.dumps(rec) + "\n")
print(json.dumps({k: rec[k] for k in ("model", "dataset", "best_epoch", "epochs_run", "seconds_per_epoch", "seconds")}),
      "test ndcg@10", rec["test"]["ndcg@10"], "hit@10", rec["test"]["hit@10"])
PY
