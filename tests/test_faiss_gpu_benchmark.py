"""benchmarks/faiss_gpu.py: its refusal without a GPU-capable faiss, and its CPU-side comparison."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "faiss_gpu.py"


def _module():
    spec = importlib.util.spec_from_file_location("faiss_gpu_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(hasattr(faiss, "StandardGpuResources"), reason="this faiss has GPU support")
def test_cpu_only_faiss_is_one_error_line_and_exit_code_2(tmp_path):
    results = tmp_path / "faiss_gpu.jsonl"
    done = subprocess.run([sys.executable, str(SCRIPT), str(results)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: this faiss build has no GPU support")
    assert "Traceback" not in done.stderr and not results.exists()


def test_no_results_file_is_a_usage_error():
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stderr.startswith("error: give the results file")


def _search(directions, queries, k):
    index = faiss.IndexFlatIP(directions.shape[1])
    index.add(directions)
    return index.search(queries, k)


def test_compare_accepts_the_same_search_and_rejects_a_wrong_one():
    bench = _module()
    rng = np.random.default_rng(0)
    directions = bench._unit_rows(rng.standard_normal((50, 16)))
    queries = bench._unit_rows(rng.standard_normal((40, 16)))
    cpu = _search(directions, queries, 3)
    same = bench.compare(cpu, (cpu[0].copy(), cpu[1].copy()), queries, directions)
    assert same == {"ids_equal": 1.0, "max_score_diff": 0.0, "ties_ok": True, "ok": True}
    # scores off by 1e-3: not ok
    off = bench.compare(cpu, (cpu[0] + 1e-3, cpu[1].copy()), queries, directions)
    assert not off["ok"] and off["max_score_diff"] == pytest.approx(1e-3, rel=1e-3)
    # a wrong id (the 2nd and 3rd swapped in one row, scores kept): ids differ, and not a tie
    ids = cpu[1].copy()
    ids[0, [1, 2]] = ids[0, [2, 1]]
    wrong = bench.compare(cpu, (cpu[0].copy(), ids), queries, directions)
    assert wrong["ids_equal"] == pytest.approx(1 - 2 / 120) and not wrong["ties_ok"] and not wrong["ok"]


def test_compare_accepts_a_swap_of_two_tied_intents():
    bench = _module()
    rng = np.random.default_rng(1)
    directions = bench._unit_rows(rng.standard_normal((30, 8)))
    directions = np.ascontiguousarray(np.concatenate([directions, directions[:1]]))  # intent 30 == intent 0
    queries = np.ascontiguousarray(directions[:1] + 0.0)  # both score 1 for this query
    cpu = _search(directions, queries, 2)
    assert sorted(cpu[1][0].tolist()) == [0, 30]
    swapped = (cpu[0].copy(), cpu[1][:, ::-1].copy())
    result = bench.compare(cpu, swapped, queries, directions)
    assert result["ids_equal"] == 0.0 and result["ties_ok"] and result["ok"]


def test_directions_scale_and_source_label(tmp_path):
    bench = _module()
    base, source = bench.load_directions(None, seed=0)
    assert base.shape == (1650, 384) and source.startswith("random unit vectors")
    big = bench.scaled_directions(base, 16, seed=0)
    assert big.shape == (16 * 1650, 384) and np.allclose(np.linalg.norm(big, axis=1), 1, atol=1e-5)
    assert np.array_equal(big[:1650], base) and len(np.unique(big.round(4), axis=0)) == len(big)
    from safetensors.numpy import save_file

    save_file({"directions": base[:20] * 3}, str(tmp_path / "directions.safetensors"))
    real, source = bench.load_directions(tmp_path / "directions.safetensors", seed=0)
    assert real.shape == (20, 384) and np.allclose(real, base[:20], atol=1e-6) and source.startswith("intent stage")


class _FakeGpuFaiss:
    """The real faiss, with GPU placements that hand back the CPU index (to run the script's whole
    path here)."""

    def __init__(self, n_gpus):
        self.n_gpus, self.__version__, self.IndexFlatIP = n_gpus, faiss.__version__, faiss.IndexFlatIP

    def get_num_gpus(self):
        return self.n_gpus

    def StandardGpuResources(self):  # noqa: N802 - faiss's name
        return object()

    def GpuMultipleClonerOptions(self):  # noqa: N802 - faiss's name
        return type("Options", (), {"shard": False})()

    def index_cpu_to_gpu(self, resources, device, index):
        return index

    def index_cpu_to_all_gpus(self, index, co=None):
        assert co.shard
        return index


def test_the_whole_run_writes_a_table_and_one_json_line_per_scale(tmp_path, monkeypatch, capsys):
    import json

    bench = _module()
    monkeypatch.setitem(sys.modules, "faiss", _FakeGpuFaiss(2))
    monkeypatch.setattr(bench, "device_name", lambda: "Fake GPU")
    results = tmp_path / "out.jsonl"
    assert bench.main([str(results), "--queries=300", "--scales=1,2", "--reps=1"]) == 0
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert [r["n_intents"] for r in records] == [1650, 3300]
    assert all(r["device"] == "Fake GPU" and r["directions"].startswith("random unit vectors") for r in records)
    assert [row["where"] for row in records[0]["rows"]] == ["CPU", "1 GPU", "2 GPUs sharded"]
    assert all(row["ok"] and row["ids_equal"] == 1.0 for r in records for row in r["rows"][1:])
    table = capsys.readouterr().out
    assert "| 3300 | 2 GPUs sharded |" in table and table.count("\n| ") >= 6
