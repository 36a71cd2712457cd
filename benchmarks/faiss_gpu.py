"""Exact inner-product search of the intent index on the CPU against the GPU (and all GPUs sharded).

usage: python benchmarks/faiss_gpu.py RESULTS.jsonl [--directions=PATH] [--queries=22363] [--k=5]
       [--scales=1,16] [--reps=3] [--seed=0]

The workload is amazon-beauty's users x intents: 22,363 queries of width 384 (the MiniLM text
embedding size) against ~1,650 intent directions, and the same queries against 16x more intents.
The directions come from a real intent stage when ``--directions`` names one (a vocabulary's
``directions.safetensors`` or a run's ``intents/index.faiss``; the larger scales repeat them with a
little noise), else they are random unit vectors of the same shapes; the queries are random unit
vectors. The output says which. For each scale: CPU ``IndexFlatIP`` against the GPU (one GPU; and
every GPU sharded when faiss sees more than one), ids equal, scores within 1e-5, the best of
``--reps`` timed searches after one warm-up, as a markdown table, with one JSON line per scale
appended to RESULTS.jsonl, labelled with the device name.

Exits with an ``error:`` line and code 2 when this faiss build has no GPU support or sees no GPU.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

N_QUERIES, DIM, N_INTENTS = 22363, 384, 1650
SCORE_TOL = 1e-5


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _options(argv):
    if not argv or argv[0].startswith("--"):
        _fail("give the results file: python benchmarks/faiss_gpu.py RESULTS.jsonl [--directions=PATH] ...")
    opts = {
        "results": argv[0],
        "directions": None,
        "queries": N_QUERIES,
        "k": 5,
        "scales": "1,16",
        "reps": 3,
        "seed": 0,
    }
    for arg in argv[1:]:
        key, _, value = arg.lstrip("-").partition("=")
        if key not in opts or not value:
            _fail(f"unknown or empty option {arg!r}; options: --directions= --queries= --k= --scales= --reps= --seed=")
        opts[key] = value
    try:
        for key in ("queries", "k", "reps", "seed"):
            opts[key] = int(opts[key])
        opts["scales"] = [int(s) for s in str(opts["scales"]).split(",")]
    except ValueError as exc:
        _fail(f"numeric options must be integers ({exc})")
    return opts


def _unit_rows(rows: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rows / np.linalg.norm(rows, axis=1, keepdims=True), dtype=np.float32)


def load_directions(path, seed: int):
    """``(directions [n, d] float32 unit rows, source label)``: a real stage's, else random."""
    if path is None:
        rng = np.random.default_rng(seed)
        return _unit_rows(rng.standard_normal((N_INTENTS, DIM))), f"random unit vectors ({N_INTENTS} x {DIM})"
    path = Path(path)
    if not path.is_file():
        _fail(f"--directions={path} does not exist (a directions.safetensors or an intents/index.faiss)")
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        tensors = load_file(str(path))
        if "directions" not in tensors:
            _fail(f"{path} holds no 'directions' tensor (a vocabulary's directions.safetensors has one)")
        dirs = tensors["directions"]
    else:
        import faiss

        index = faiss.read_index(str(path))
        dirs = index.reconstruct_n(0, index.ntotal)
    return _unit_rows(np.asarray(dirs, dtype=np.float64)), f"intent stage {path} ({dirs.shape[0]} x {dirs.shape[1]})"


def scaled_directions(directions: np.ndarray, scale: int, seed: int) -> np.ndarray:
    """``scale`` copies of the directions, each after the first with a little noise (distinct rows)."""
    if scale == 1:
        return directions
    rng = np.random.default_rng(seed + scale)
    copies = [directions] + [directions + 0.05 * rng.standard_normal(directions.shape) for _ in range(scale - 1)]
    return _unit_rows(np.concatenate(copies))


def compare(cpu, other, queries: np.ndarray, directions: np.ndarray, tol: float = SCORE_TOL) -> dict:
    """Two searches' ``(scores, ids)`` against each other.

    ``ids_equal``: the share of equal ids; ``max_score_diff``: the largest score difference at the same
    rank; ``ties_ok``: every differing id scores (exactly, in float64) what the CPU's intent at that rank
    scores, within ``tol`` (a swap of two tied intents, not a wrong answer); ``ok``: scores within
    ``tol`` and ``ties_ok``.
    """
    (cpu_scores, cpu_ids), (scores, ids) = cpu, other
    differ = cpu_ids != ids
    rows = np.flatnonzero(differ.any(axis=1))  # only rows with a differing id need the exact scores
    exact = np.einsum("md,mkd->mk", queries[rows].astype(np.float64), directions.astype(np.float64)[ids[rows]])
    max_diff = float(np.abs(scores - cpu_scores).max())
    tie_gap = float(np.abs(exact - cpu_scores[rows].astype(np.float64))[differ[rows]].max()) if rows.size else 0.0
    return {
        "ids_equal": float(1.0 - differ.mean()),
        "max_score_diff": max_diff,
        "ties_ok": tie_gap <= tol,
        "ok": max_diff <= tol and tie_gap <= tol,
    }


def best_time(index, queries: np.ndarray, k: int, reps: int):
    """``(best seconds of reps searches after a warm-up, the last result)``."""
    result = index.search(queries, k)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        result = index.search(queries, k)
        times.append(time.perf_counter() - start)
    return min(times), result


def device_name() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except ImportError:
        pass
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        return out.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown GPU"


def _check_gpu(faiss) -> int:
    if not hasattr(faiss, "StandardGpuResources"):
        _fail(
            'this faiss build has no GPU support (faiss-cpu): install the GPU wheel (README "Install", '
            "benchmarks/gpu_wheels.sh) in place of faiss-cpu"
        )
    n_gpus = int(faiss.get_num_gpus())
    if n_gpus < 1:
        _fail("faiss has GPU support but sees no GPU: check the CUDA driver (nvidia-smi) and CUDA_VISIBLE_DEVICES")
    return n_gpus


def _gpu_indexes(faiss, cpu_index, n_gpus: int, keep: list):
    resources = faiss.StandardGpuResources()
    keep.append(resources)
    found = [("1 GPU", faiss.index_cpu_to_gpu(resources, 0, cpu_index))]
    if n_gpus > 1:
        options = faiss.GpuMultipleClonerOptions()
        options.shard = True
        found.append((f"{n_gpus} GPUs sharded", faiss.index_cpu_to_all_gpus(cpu_index, co=options)))
    return found


def run_scale(faiss, queries, directions, opts, n_gpus: int) -> list:
    """Rows of one scale: the CPU, then each GPU placement with its comparison and speed-up."""
    cpu_index = faiss.IndexFlatIP(directions.shape[1])
    cpu_index.add(directions)
    cpu_s, cpu_result = best_time(cpu_index, queries, opts["k"], opts["reps"])
    rows = [{"where": "CPU", "seconds": cpu_s, "speedup": 1.0}]
    keep = []
    for where, index in _gpu_indexes(faiss, cpu_index, n_gpus, keep):
        seconds, result = best_time(index, queries, opts["k"], opts["reps"])
        rows.append(
            {
                "where": where,
                "seconds": seconds,
                "speedup": cpu_s / seconds,
                **compare(cpu_result, result, queries, directions),
            }
        )
    return rows


def _table(rows: list) -> str:
    lines = [
        "| intents | where | best of reps (ms) | speed-up | ids equal | max score diff | ok |",
        "| ---: | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        extra = f"{r['ids_equal']:.6f} | {r['max_score_diff']:.2e} | {r['ok']}" if "ok" in r else "ref | ref | ref"
        lines.append(f"| {r['n_intents']} | {r['where']} | {r['seconds'] * 1000:.2f} | {r['speedup']:.1f}x | {extra} |")
    return "\n".join(lines)


def main(argv) -> int:
    opts = _options(argv)
    import faiss

    n_gpus = _check_gpu(faiss)
    base, source = load_directions(opts["directions"], opts["seed"])
    rng = np.random.default_rng(opts["seed"] + 1)
    queries = _unit_rows(rng.standard_normal((opts["queries"], base.shape[1])))
    label = {
        "device": device_name(),
        "gpus": n_gpus,
        "faiss": faiss.__version__,
        "host": platform.node(),
        "directions": source,
        "queries": f"random unit vectors ({opts['queries']} x {base.shape[1]})",
        "k": opts["k"],
        "reps": opts["reps"],
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    print(json.dumps(label))
    all_rows = []
    with open(opts["results"], "a", encoding="utf-8") as out:
        for scale in opts["scales"]:
            directions = scaled_directions(base, scale, opts["seed"])
            rows = [dict(r, n_intents=len(directions)) for r in run_scale(faiss, queries, directions, opts, n_gpus)]
            out.write(json.dumps({**label, "scale": scale, "n_intents": len(directions), "rows": rows}) + "\n")
            all_rows += rows
    print(_table(all_rows))
    return 0 if all(r.get("ok", True) for r in all_rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
