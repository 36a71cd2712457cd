#!/usr/bin/env bash
# Download the GPU faiss wheels for a GPU machine without internet, into a folder to carry there.
#
# usage: benchmarks/gpu_wheels.sh [DIR] [PYTHON_VERSION] [--full]
#   DIR             where the wheels go (default .whl/gpu, ignored by git)
#   PYTHON_VERSION  the GPU machine's python (default 3.12: the H200 image's)
#   --full          also the nvidia-cublas-cu12 wheel (~0.4-0.6 GB); without it the GPU machine builds a
#                   small libcublas.so.12 that forwards to its own cuBLAS 13 (benchmarks/cublas12_shim/),
#                   which keeps the carried folder at ~52 MB (under a 64 MiB transfer limit)
# faiss-gpu-cu12 1.14.1.post1: CUDA 12.1+ build (runs on a CUDA 12 or 13 driver), wheels per python
# version (3.10-3.13, manylinux2014); it needs libcudart.so.12 (nvidia-cuda-runtime-cu12, 3.5 MB) and
# libcublas.so.12 (nvidia-cublas-cu12).
set -euo pipefail
dir=.whl/gpu; py=3.12; full=0
for arg in "$@"; do
  case "$arg" in
    --full) full=1 ;;
    3.*) py="$arg" ;;
    *) dir="$arg" ;;
  esac
done
mkdir -p "$dir"
wheels=(faiss-gpu-cu12==1.14.1.post1 "nvidia-cuda-runtime-cu12>=12.1,<13")
[ "$full" = 1 ] && wheels+=("nvidia-cublas-cu12>=12.1,<12.5")
python3 -m pip download --no-deps --only-binary=:all: --python-version "$py" --implementation cp \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  -d "$dir" "${wheels[@]}"
du -ch "$dir"/*.whl | tail -1
