#!/usr/bin/env bash
# On a fresh GPU machine without internet: install the carried GPU faiss wheels, then run the GPU index
# tests and benchmarks/faiss_gpu.py, writing under $OUT (or ./faiss-gpu-out).
#
# usage: benchmarks/device_faiss_gpu.sh [WHEELS_DIR] [-- benchmark options...]
#   WHEELS_DIR  the folder benchmarks/gpu_wheels.sh filled (default .whl/gpu); carry it to the machine
# Without the nvidia-cublas-cu12 wheel in WHEELS_DIR, a libcublas.so.12 forwarding to the machine's
# cuBLAS 13 is built from benchmarks/cublas12_shim/ (needs a C compiler and libcublas.so.13 there).
set -uo pipefail
wheels=${1:-.whl/gpu}; shift || true
[ "${1:-}" = "--" ] && shift
out=${OUT:-faiss-gpu-out}; mkdir -p "$out"
site=/tmp/faiss-gpu-site; shim=/tmp/faiss-gpu-shim
log() { echo "[device_faiss_gpu] $*"; }
ls "$wheels"/faiss_gpu_cu12-*.whl >/dev/null 2>&1 || { echo "error: no faiss_gpu_cu12 wheel in $wheels: run benchmarks/gpu_wheels.sh and carry it" >&2; exit 2; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$wheels"/*.whl || exit 2
libs="$site/nvidia/cuda_runtime/lib"
if [ -d "$site/nvidia/cublas/lib" ]; then
  libs="$libs:$site/nvidia/cublas/lib"; log "cuBLAS 12 from the carried wheel"
else
  cublas13=$(python3 - <<'P'
import glob, site, sys
roots = site.getsitepackages() + ["/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib", "/usr/lib/x86_64-linux-gnu"]
hits = [h for r in roots for h in glob.glob(f"{r}/**/libcublas.so.13*", recursive=True)]
print(sorted(hits, key=len)[0] if hits else "")
P
)
  [ -n "$cublas13" ] || { echo "error: no libcublas.so.13 on this machine and no nvidia-cublas-cu12 wheel carried" >&2; exit 2; }
  mkdir -p "$shim"; src=benchmarks/cublas12_shim
  cc -shared -fPIC -O2 -o "$shim/libcublas.so.12" -Wl,-soname,libcublas.so.12 -Wl,--version-script=$src/cublas12.map $src/cublas12_shim.c -ldl || exit 2
  cc -shared -fPIC -o "$shim/libcublasLt.so.12" -Wl,-soname,libcublasLt.so.12 -Wl,--version-script=$src/cublasLt12.map $src/cublasLt12_stub.c || exit 2
  export CUBLAS13_LIBRARY="$cublas13" _FAISS_WHEEL_DISABLE_CUDA_PRELOAD=1
  libs="$libs:$shim:$(dirname "$cublas13")"; log "cuBLAS 12 calls forwarded to $cublas13"
fi
export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python3 -c "import faiss; print('faiss', faiss.__version__, faiss.__file__, 'gpus', faiss.get_num_gpus())" 2>&1 | tee "$out/faiss.txt"
python3 -m pytest -q -p no:cacheprovider --noconftest tests/intents/test_index_gpu.py 2>&1 | tee "$out/tests.txt"
tests=${PIPESTATUS[0]}
python3 benchmarks/faiss_gpu.py "$out/faiss_gpu.jsonl" "$@" 2>&1 | tee "$out/faiss_gpu.md"
bench=${PIPESTATUS[0]}
log "tests exit $tests, benchmark exit $bench"
[ "$tests" = 0 ] && [ "$bench" = 0 ]
