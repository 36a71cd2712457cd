#!/usr/bin/env bash
# Foundation check (stock RecBole vs plugin) and fast-training comparison, run serially.
set -uo pipefail
cd "$(dirname "$0")/.."
export MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000
[ -n "${SKIP_FAST:-}" ] || benchmarks/fast_training.sh
