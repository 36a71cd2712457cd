"""Benchmark sweeps that run: resume, parallel runs, GPU out-of-memory requeues, interrupts, run keys."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections import Counter
from pathlib import Path

import pytest
from conftest import SMALL

from recbole_sae.benchmark import commands, process, runner
from recbole_sae.benchmark import results as results_file
from recbole_sae.benchmark import spec as sweep_spec
from recbole_sae.benchmark import stats as report_stats


def test_resume_skips_finished_runs_and_an_unknown_model_fails_alone(sweep_file, in_tmp, monkeypatch):
    keys = {"models": ["NoSuchModel", "SASRec"], "seeds": [1, 2]}
    results = in_tmp / "out" / "results.jsonl"
    messages = []
    summary = runner.run_sweep(sweep_spec.load_sweep(sweep_file(**keys)), results, log=messages.append)
    assert (summary["runs"], summary["executed"], summary["skipped"], summary["errors"]) == (4, 4, 0, 2)
    assert any(m.startswith("run 4/4 SASRec tiny seed=2 started | elapsed") and "left ~0:0" in m for m in messages)
    assert any(m.startswith("run 4/4 SASRec tiny seed=2 finished, ok in ") for m in messages)
    assert "1 worker, 1 threads per run" in messages[0]

    records = results_file.read_results(results)
    assert [(r["model"], r["seed"], r["status"]) for r in records] == [
        ("NoSuchModel", 1, "error"),
        ("NoSuchModel", 2, "error"),
        ("SASRec", 1, "ok"),
        ("SASRec", 2, "ok"),
    ]
    assert "unknown model 'NoSuchModel'" in records[0]["error"]
    first = records[2]
    assert first["key"] == sweep_spec.run_key("SASRec", "tiny", 1, first["overrides"], first["config_files"])
    assert first["overrides"]["seed"] == 1 and first["overrides"]["hidden_size"] == 16
    # the resolved config of the run folder, embedded
    assert first["config"]["seed"] == 1 and first["config"]["hidden_size"] == 16
    assert first["config"]["model"] == "SASRec" and first["config"]["valid_metric"] == "NDCG@10"
    assert set(first["test"]) >= {"ndcg@10", "ndcg@20", "hit@10", "hit@20", "mrr@10"}
    assert 0.0 <= first["best_valid"]["ndcg@10"] <= 1.0
    assert first["best_epoch"] == 0 and first["epochs_run"] == 1 and first["seconds_per_epoch"] > 0
    # the learning curve is a field of the record, not of the model's extras
    assert first["curve"]["valid_epoch"] == [0] and first["curve"]["metric"] == "ndcg@10"
    assert "curve" not in first["extra"]
    assert first["seconds"] >= first["run_seconds"] > 0
    assert 50 < first["peak_memory_mb"] < 8000 and first["device"] == "cpu"
    assert first["environment"]["recbole"] == "1.2.1" and first["environment"]["torch_threads"] == 1
    assert first["git_commit"] is None or len(first["git_commit"]) == 40
    assert first["workers"] == 1 and first["attempts"] == 1
    assert os.path.isfile(os.path.join(first["run_dir"], "model.pth"))
    report = Path(summary["markdown"]).read_text()
    assert "| SASRec |" in report and "## Failed runs" in report and "unknown model 'NoSuchModel'" in report
    assert Path(summary["plot"]).is_file()

    # rerun: the finished runs do not run again and the results file stays byte for byte the same
    before = results.read_bytes()

    def must_not_run(*args, **kwargs):
        raise AssertionError("a finished run was run again")

    monkeypatch.setattr(runner, "execute_run", must_not_run)
    again = runner.run_sweep(
        sweep_spec.load_sweep(sweep_file(**{**keys, "models": ["SASRec"]})), results, log=[].append
    )
    assert (again["executed"], again["skipped"]) == (0, 2)
    assert results.read_bytes() == before

    # the failed runs are retried
    retried = []

    def fake(spec, *args, **kwargs):
        retried.append((spec.model, spec.seed))
        return {"status": "error", "error": "again", "seconds": 0.0}

    monkeypatch.setattr(runner, "execute_run", fake)
    again = runner.run_sweep(sweep_spec.load_sweep(sweep_file(**keys)), results, log=[].append)
    assert retried == [("NoSuchModel", 1), ("NoSuchModel", 2)]
    assert (again["executed"], again["skipped"]) == (2, 2)
    assert results.read_bytes().startswith(before) and len(results_file.read_results(results)) == 6


def test_a_failing_run_process_is_recorded(sweep_file, in_tmp):
    results = in_tmp / "results.jsonl"
    sweep = sweep_spec.load_sweep(sweep_file(models=["GRU4Rec"], datasets=["no-such-data"]))
    summary = runner.run_sweep(sweep, results, log=[].append)
    assert (summary["executed"], summary["errors"]) == (1, 1)
    (record,) = results_file.read_results(results)
    assert record["status"] == "error" and "no-such-data" in record["error"]
    assert "DatasetNotFoundError" not in record["error"]  # the project's own message, as the CLI prints it
    assert "Traceback" in record["traceback"] and Path(record["log"]).is_file()
    assert record["peak_memory_mb"] > 0 and record["environment"]["recbole"] == "1.2.1"
    assert "no-such-data" in Path(summary["markdown"]).read_text()
    assert summary["plot"] is None


def test_plugin_model_missing_from_the_installation(monkeypatch):
    from recbole_sae import registry

    monkeypatch.setattr(registry, "plugin_model_names", lambda: [])
    assert "is not in this installation" in process.model_problem("SASRecPlus")
    assert process.model_problem("SASRec") is None and process.model_problem("GRU4Rec") is None


def test_cli_runs_the_ci_sweep(in_tmp, capsys):
    from recbole_sae.cli import main

    results = in_tmp / "ci.jsonl"
    # --models replaces the sweep's list (one run keeps the test short); --eval_batch_size is an override
    assert main(["--sweep=sweep/ci.yaml", f"--results={results}", "--models=SASRec", "--eval_batch_size=128"]) == 0
    out = capsys.readouterr().out
    assert (
        "sweep ci: 1 planned runs, 0 done before" in out and "run 1/1 SASRec ml-100k seed=2020 started | elapsed" in out
    )
    (record,) = results_file.read_results(results)
    assert (record["model"], record["status"], record["sweep"]) == ("SASRec", "ok", "ci")
    assert record["overrides"]["eval_batch_size"] == 128 and record["config"]["eval_batch_size"] == 128
    assert record["config"]["user_inter_num_interval"] == [20, 30] and record["config"]["MAX_ITEM_LIST_LENGTH"] == 10
    report = (in_tmp / "ci.md").read_text()
    assert "## ml-100k" in report and "| SASRec |" in report
    assert (in_tmp / "ci-ndcg10.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the report command on the same file
    assert commands.cli(["report", str(results), "--out", str(in_tmp / "again")]) == 0
    again = (in_tmp / "again" / "ci.md").read_text()
    # one row per protocol, each in its own table named by the protocol, then how the run trained
    assert again.count("| SASRec |") == 3 and "| SASRec | 2020 | 1 / 1 | epoch limit" in again
    assert (
        again.index("## ml-100k: seen items removed")
        < again.index("## ml-100k: seen items kept rankable")
        < again.index("## ml-100k: training")
    )
    assert (in_tmp / "again" / "ci-curves.png").read_bytes()[:4] == b"\x89PNG"
    assert record["protocol"] == "seen_removed" and set(record["extra"]["seen_kept"]) == {"best_valid", "test"}


def _planted_fields(seconds: float = 0.05) -> dict:
    """What execute_run returns for a finished run, with planted metrics."""
    metrics = {key: 0.1 for key, _ in report_stats.REPORT_METRICS}
    return {
        "status": "ok",
        "error": None,
        "seconds": seconds,
        "best_valid": dict(metrics),
        "test": dict(metrics),
        "seconds_per_epoch": seconds,
        "peak_memory_mb": 1.0,
    }


def test_parallel_runs_are_recorded_once_and_resume(sweep_file, in_tmp, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    path = sweep_file(models=["SASRec", "GRU4Rec"], seeds=[1, 2, 3], workers=2, torch_threads=None)
    sweep = sweep_spec.load_sweep(path)
    plan = sweep_spec.plan_runs(sweep)
    results = in_tmp / "results.jsonl"
    lock = threading.Lock()
    both = threading.Barrier(2, timeout=30)  # the first two runs pass it only when they run at the same time
    state = {"calls": 0, "active": 0, "most": 0}
    threads_given = []

    def fake(spec, logs_dir, timeout, threads, stop=None):
        with lock:
            state["calls"] += 1
            call = state["calls"]
            state["active"] += 1
            state["most"] = max(state["most"], state["active"])
            threads_given.append(threads)
        try:
            if call <= 2:
                both.wait()
            else:
                time.sleep(0.02)
            if (spec.model, spec.seed) == ("GRU4Rec", 2):
                raise RuntimeError("planted failure")  # recorded; the other runs go on
            return _planted_fields()
        finally:
            with lock:
                state["active"] -= 1

    monkeypatch.setattr(runner, "execute_run", fake)
    messages = []
    summary = runner.run_sweep(sweep, results, log=messages.append)
    assert (summary["runs"], summary["executed"], summary["skipped"], summary["errors"]) == (6, 6, 0, 1)
    assert state == {"calls": 6, "active": 0, "most": 2}
    assert threads_given == [4] * 6  # torch_threads unset: 8 cores // 2 workers

    with warnings.catch_warnings():
        warnings.simplefilter("error", results_file.ResultsFileWarning)  # every line whole: appends did not interleave
        records = results_file.read_results(results)
    assert Counter(r["key"] for r in records) == Counter(spec.key for spec in plan)  # each run exactly once
    assert [r["workers"] for r in records] == [2] * 6 and [r["attempts"] for r in records] == [1] * 6
    failed = [r for r in records if r["status"] == "error"]
    assert [(r["model"], r["seed"], r["error"]) for r in failed] == [("GRU4Rec", 2, "RuntimeError: planted failure")]
    assert "planted failure" in failed[0]["traceback"]

    assert "2 workers, 4 threads per run" in messages[0]
    started = [m for m in messages if " started | elapsed " in m]
    finished = [m for m in messages if " finished, " in m]
    assert sorted(m.split()[1] for m in started) == [f"{i}/6" for i in range(1, 7)]
    assert len(finished) == 6 and all("| elapsed " in m and "| left ~" in m for m in finished)
    assert sum("finished, error in " in m and "planted failure" in m for m in finished) == 1

    # resume with two workers: only the failed run runs again, appended after the rest
    before = results.read_bytes()
    retried = []

    def again(spec, *args, **kwargs):
        retried.append((spec.model, spec.seed))
        return _planted_fields()

    monkeypatch.setattr(runner, "execute_run", again)
    summary = runner.run_sweep(sweep, results, log=[].append)
    assert retried == [("GRU4Rec", 2)] and (summary["executed"], summary["skipped"], summary["errors"]) == (1, 5, 0)
    assert results.read_bytes().startswith(before) and len(results_file.read_results(results)) == 7

    def must_not_run(*args, **kwargs):
        raise AssertionError("a finished run was run again")

    monkeypatch.setattr(runner, "execute_run", must_not_run)
    before = results.read_bytes()
    summary = runner.run_sweep(sweep, results, log=[].append)
    assert (summary["executed"], summary["skipped"]) == (0, 6) and results.read_bytes() == before


def test_a_sweep_run_in_parts_reports_every_part(sweep_file, in_tmp, monkeypatch, capsys):
    """`--models=` / `--seeds=` subsets of one sweep into one results file: the report written at the end of each
    part covers all the sweep's finished runs there, against the sweep's own baseline (each part used to overwrite
    the report with its own runs only, compared against its first model)."""
    from recbole_sae.cli import main

    path = sweep_file(models=["SASRec", "GRU4Rec"], seeds=[1, 2], name="parts").rename(in_tmp / "parts.yaml")
    results = in_tmp / "parts.jsonl"
    sasrec_test = {1: 0.10, 2: 0.12}

    def fake(spec, *args, **kwargs):
        fields = _planted_fields()
        fields["test"] = {
            **fields["test"],
            "ndcg@10": 0.11 if spec.model == "GRU4Rec" else sasrec_test.get(spec.seed, 0.1),
        }
        return fields

    monkeypatch.setattr(runner, "execute_run", fake)
    report = in_tmp / "parts.md"

    assert main([f"--sweep={path}", f"--results={results}", "--models=GRU4Rec"]) == 0
    text = report.read_text()
    assert "| GRU4Rec |" in text and "No finished SASRec run on tiny" in text and "ΔNDCG@10 vs SASRec" in text
    assert {r["baseline"] for r in results_file.read_results(results)} == {"SASRec"}

    assert main([f"--sweep={path}", f"--results={results}", "--models=SASRec", "--seeds=1"]) == 0
    assert main([f"--sweep={path}", f"--results={results}", "--models=SASRec", "--seeds=2"]) == 0
    capsys.readouterr()
    text = report.read_text()
    assert "8 finished runs" not in text and "4 finished runs, 0 failed runs" in text
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert "| 2 |" in rows["SASRec"] and "baseline" in rows["SASRec"] and "0.1100" in rows["SASRec"]
    assert "| 2 |" in rows["GRU4Rec"] and "+0.0%" in rows["GRU4Rec"]  # paired over both seeds
    assert "No finished SASRec run" not in text

    # records of another sweep in the same file stay out of this sweep's report
    other = sweep_file(models=["SASRec"], seeds=[3], name="other")
    assert main([f"--sweep={other}", f"--results={results}"]) == 0
    assert "1 finished runs" in report.read_text()
    assert main([f"--sweep={path}", f"--results={results}", "--models=GRU4Rec", "--seeds=1"]) == 0
    assert "4 finished runs" in report.read_text()


def test_run_keys_name_inputs_by_content_and_leave_plugin_settings_out_of_recbole_models(
    sweep_file, in_tmp, monkeypatch
):
    """`--text_embeddings=FILE` on a sweep used to enter every model's run key by its path: moving the file (or a
    repository checked out elsewhere) made every run new, RecBole's baselines too, which never read it."""
    first = in_tmp / "a" / "emb.safetensors"
    first.parent.mkdir()
    first.write_bytes(b"embeddings v1")
    moved = in_tmp / "b" / "emb.safetensors"
    moved.parent.mkdir()
    moved.write_bytes(b"embeddings v1")
    other = in_tmp / "other.safetensors"
    other.write_bytes(b"embeddings v2")
    base = {"hidden_size": 16, "seed": 1}

    def key(model, **settings):
        return sweep_spec.run_key(model, "tiny", 1, {**base, **settings})

    # RecBole models: settings only this project's models read are not part of their identity
    assert key("SASRec", text_embeddings=str(first)) == key("SASRec") == key("SASRec", sae_k=32, fusion="gate")
    assert key("SASRec", hidden_dropout_prob=0.5) != key("SASRec")
    assert {"text_embeddings", "sae_k", "train_mode", "sasrec_checkpoint"} <= sweep_spec.plugin_only_settings()
    assert (
        not {"hidden_size", "seed", "epochs", "learning_rate", "MAX_ITEM_LIST_LENGTH"}
        & sweep_spec.plugin_only_settings()
    )
    # plugin models: an input file by what it holds, not where it lies
    assert key("SAERec", text_embeddings=str(first)) == key("SAERec", text_embeddings=str(moved))
    assert key("SAERec", text_embeddings=str(first)) not in {key("SAERec", text_embeddings=str(other)), key("SAERec")}
    assert key("SASRecPlus", sae_k=32) != key("SASRecPlus")  # plugin models keep every setting
    run = in_tmp / "run"
    run.mkdir()
    (run / "model.pth").write_bytes(b"weights")
    assert key("SteerableSASRec", sae_run=str(run)) == key("SteerableSASRec", sae_run=str(run / "model.pth"))
    # a missing input stays a path: the run itself says what is wrong
    assert key("SAERec", text_embeddings="nowhere.safetensors") != key(
        "SAERec", text_embeddings="elsewhere.safetensors"
    )

    # a sweep's finished runs survive a move of the input file
    path = sweep_file(models=["SASRec"], seeds=[1, 2])
    results = in_tmp / "moved.jsonl"
    ran = []

    def fake(spec, *args, **kwargs):
        ran.append(spec.seed)
        return _planted_fields()

    monkeypatch.setattr(runner, "execute_run", fake)
    summary = runner.run_sweep(sweep_spec.load_sweep(path, {"text_embeddings": str(first)}), results, log=[].append)
    assert ran == [1, 2] and (summary["executed"], summary["skipped"]) == (2, 0)
    summary = runner.run_sweep(sweep_spec.load_sweep(path, {"text_embeddings": str(moved)}), results, log=[].append)
    assert ran == [1, 2] and (summary["executed"], summary["skipped"]) == (0, 2)


OOM = "OutOfMemoryError: CUDA out of memory. Tried to allocate 1.11 GiB. GPU 0 has a total capacity of 79.18 GiB"


def _concurrency_fake(oom_when, together: int = 2):
    """A fake execute_run that notes ``(seed, other runs executing at its start)`` per call.

    The first ``together`` calls meet in pairs (calls 1 and 2 wait for each other, then 3 and 4, ...: each pair runs
    at the same time); a call returns the OOM error when ``oom_when(seed, other runs executing at its end)`` is true,
    planted metrics otherwise.
    """
    lock = threading.Lock()
    pairs = [threading.Barrier(2, timeout=30) for _ in range(together // 2)]
    calls = []
    active = [0]

    def fake(spec, logs_dir, timeout, threads, stop=None):
        with lock:
            others = active[0]
            active[0] += 1
            calls.append((spec.seed, others))
            call = len(calls)
        paired = call <= 2 * len(pairs)
        try:
            if paired:
                pairs[(call - 1) // 2].wait()
            else:
                time.sleep(0.02)
            with lock:  # a pair met at its barrier: each ran beside the other
                beside = 1 if paired else active[0] - 1
            if oom_when(spec.seed, beside):
                return {"status": "error", "error": OOM, "seconds": 0.01, "log": "x.log"}
            return _planted_fields()
        finally:
            with lock:
                active[0] -= 1

    return fake, calls


def test_a_run_out_of_gpu_memory_beside_others_is_requeued_and_runs_alone(sweep_file, in_tmp, monkeypatch):
    sweep = sweep_spec.load_sweep(sweep_file(seeds=[1, 2, 3], workers=2, oom_retries=1))
    fake, calls = _concurrency_fake(lambda seed, beside: seed == 1 and beside > 0)
    monkeypatch.setattr(runner, "execute_run", fake)
    results = in_tmp / "results.jsonl"
    messages = []
    summary = runner.run_sweep(sweep, results, log=messages.append)
    assert (summary["executed"], summary["errors"]) == (3, 0)
    assert sorted(seed for seed, _ in calls[:3]) == [1, 2, 3]
    assert calls[-1] == (1, 0) and len(calls) == 4  # the second attempt ran with no other run executing

    records = {r["seed"]: r for r in results_file.read_results(results)}
    assert len(results_file.read_results(results)) == 3  # the out-of-memory attempt is not recorded
    assert (records[1]["status"], records[1]["attempts"], records[1]["error"]) == ("ok", 2, None)
    assert [records[s]["attempts"] for s in (2, 3)] == [1, 1]
    assert results_file.read_results(results)[-1]["seed"] == 1  # requeued at the end of the queue

    requeued = [m for m in messages if "requeued" in m]
    assert requeued == [
        "run 1/3 SASRec tiny seed=1 out of GPU memory while 1 other run was executing; "
        "requeued (retry 1/1), will run alone"
    ]
    assert sum(m.startswith("run 1/3 SASRec tiny seed=1 started, retry 1/1, alone | elapsed") for m in messages) == 1
    assert sum(" finished, " in m for m in messages) == 3


def test_with_two_retries_the_first_runs_beside_others_and_the_last_alone(sweep_file, in_tmp, monkeypatch):
    sweep = sweep_spec.load_sweep(sweep_file(seeds=[1, 2, 3], workers=2))
    assert sweep.oom_retries == 2  # the default
    # seed 1 runs out of memory whenever another run executes: beside seed 2 (calls 1-2), beside seed 3 (calls 3-4)
    fake, calls = _concurrency_fake(lambda seed, beside: seed == 1 and beside > 0, together=4)
    monkeypatch.setattr(runner, "execute_run", fake)
    messages = []
    summary = runner.run_sweep(sweep, in_tmp / "results.jsonl", log=messages.append)
    assert (summary["executed"], summary["errors"]) == (3, 0)
    assert sorted(seed for seed, _ in calls[2:4]) == [1, 3]  # the first retry started beside seed 3
    assert calls[4] == (1, 0) and len(calls) == 5  # the second, last retry ran alone and finished
    records = {r["seed"]: r for r in results_file.read_results(in_tmp / "results.jsonl")}
    assert (records[1]["status"], records[1]["attempts"]) == ("ok", 3)
    requeued = [m.split("; ")[1] for m in messages if "requeued" in m]
    assert requeued == ["requeued (retry 1/2), will run again beside others", "requeued (retry 2/2), will run alone"]
    assert sum(m.startswith("run 1/3 SASRec tiny seed=1 started, retry 1/2 | elapsed") for m in messages) == 1
    assert sum(m.startswith("run 1/3 SASRec tiny seed=1 started, retry 2/2, alone | elapsed") for m in messages) == 1
    assert [runner.runs_alone(a, 2) for a in (1, 2, 3)] == [False, False, True]
    assert [runner.runs_alone(a, 0) for a in (1, 2)] == [False, True]


def test_out_of_gpu_memory_alone_or_after_its_retries_is_an_error(sweep_file, in_tmp, monkeypatch):
    def errors(results) -> list[tuple]:
        return [(r["seed"], r["status"], r["attempts"], r["error"]) for r in results_file.read_results(results)]

    # alone (one run for two workers): recorded at once
    fake, calls = _concurrency_fake(lambda seed, beside: True, together=0)
    monkeypatch.setattr(runner, "execute_run", fake)
    messages = []
    summary = runner.run_sweep(
        sweep_spec.load_sweep(sweep_file(workers=2)), in_tmp / "alone.jsonl", log=messages.append
    )
    assert (summary["executed"], summary["errors"]) == (1, 1) and calls == [(1, 0)]
    assert errors(in_tmp / "alone.jsonl") == [(1, "error", 1, OOM)]
    assert not any("requeued" in m for m in messages)

    # always out of memory: requeued once, then out of memory alone -> recorded with attempts = 1 + oom_retries
    fake, calls = _concurrency_fake(lambda seed, beside: True)
    monkeypatch.setattr(runner, "execute_run", fake)
    messages = []
    sweep = sweep_spec.load_sweep(sweep_file(seeds=[1, 2], workers=2, oom_retries=1))
    summary = runner.run_sweep(sweep, in_tmp / "exhausted.jsonl", log=messages.append)
    assert (summary["executed"], summary["errors"]) == (2, 2)
    assert sorted(seed for seed, _ in calls[:2]) == [1, 2]  # together, both out of memory
    assert sorted(calls[2:]) == [(1, 0), (2, 0)]  # then each alone, out of memory again
    assert sorted(errors(in_tmp / "exhausted.jsonl")) == [(1, "error", 2, OOM), (2, "error", 2, OOM)]
    assert sum("requeued (retry 1/1), will run alone" in m for m in messages) == 2

    # with the default of 2 retries: the second attempts run beside each other again, the third ones alone
    fake, calls = _concurrency_fake(lambda seed, beside: True, together=4)
    monkeypatch.setattr(runner, "execute_run", fake)
    sweep = sweep_spec.load_sweep(sweep_file(seeds=[1, 2], workers=2))
    summary = runner.run_sweep(sweep, in_tmp / "default.jsonl", log=[].append)
    assert len(calls) == 6 and sorted(calls[4:]) == [(1, 0), (2, 0)]
    assert [r["attempts"] for r in results_file.read_results(in_tmp / "default.jsonl")] == [3, 3]

    # oom_retries 0: no retry, beside other runs or not
    fake, calls = _concurrency_fake(lambda seed, beside: True)
    monkeypatch.setattr(runner, "execute_run", fake)
    sweep = sweep_spec.load_sweep(sweep_file(seeds=[1, 2], workers=2, oom_retries=0))
    summary = runner.run_sweep(sweep, in_tmp / "none.jsonl", log=[].append)
    assert len(calls) == 2
    assert sorted(errors(in_tmp / "none.jsonl")) == [(1, "error", 1, OOM), (2, "error", 1, OOM)]

    # other errors beside other runs are not retried
    def other_error(spec, *args, **kwargs):
        time.sleep(0.05)
        return {"status": "error", "error": "RuntimeError: shapes do not match", "seconds": 0.05}

    monkeypatch.setattr(runner, "execute_run", other_error)
    summary = runner.run_sweep(
        sweep_spec.load_sweep(sweep_file(seeds=[1, 2], workers=2)), in_tmp / "other.jsonl", log=[].append
    )
    assert (summary["executed"], summary["errors"]) == (2, 2)
    assert [r["attempts"] for r in results_file.read_results(in_tmp / "other.jsonl")] == [1, 1]


def test_is_gpu_oom():
    assert runner.is_gpu_oom(OOM)
    assert runner.is_gpu_oom(
        "AcceleratorError: CUDA error: out of memory\nSearch for `cudaErrorMemoryAllocation' in "
        "https://docs.nvidia.com/cuda/cuda-runtime-api/group__CUDART__TYPES.html for more information.\n"
    )
    assert runner.is_gpu_oom("RuntimeError: CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`")
    assert not runner.is_gpu_oom("RuntimeError: CUDA error: device-side assert triggered")
    assert not runner.is_gpu_oom("MemoryError: Unable to allocate 3.2 GiB for an array")  # the CPU's, not the GPU's
    assert not runner.is_gpu_oom("") and not runner.is_gpu_oom(None)


def _sleeping_python(folder: Path):
    """A stand-in for the run processes' Python: a shell script that notes its pid and sleeps 60 s; and
    the pids of those started so far."""
    pids = folder / "pids"
    fake_python = folder / "fake-python"
    fake_python.write_text(f"#!/bin/sh\necho $$ >> {pids}\nexec sleep 60\n")
    fake_python.chmod(0o755)

    def started() -> list[int]:
        return [int(p) for p in pids.read_text().split()] if pids.is_file() else []

    return fake_python, started


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_kills_the_running_runs(sweep_file, in_tmp, monkeypatch, signum, ctrl_c):
    """Ctrl-C, and SIGTERM (which used to end the sweep at once and leave its run processes running)."""
    fake_python, started = _sleeping_python(in_tmp)
    monkeypatch.setattr(sys, "executable", str(fake_python))
    monkeypatch.setattr(process, "model_problem", lambda name: None)
    sweep = sweep_spec.load_sweep(sweep_file(seeds=[1, 2, 3], workers=2))
    results = in_tmp / "results.jsonl"
    main_thread = threading.main_thread().ident

    interrupted = []

    def interrupt():  # Ctrl-C once both runs are running
        deadline = time.monotonic() + 60
        while len(started()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        interrupted.append(time.monotonic())
        signal.pthread_kill(main_thread, signum)

    threading.Thread(target=interrupt, daemon=True).start()
    messages = []
    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(runner.Terminated if signum == signal.SIGTERM else KeyboardInterrupt):
        runner.run_sweep(sweep, results, log=messages.append)
    assert signal.getsignal(signal.SIGTERM) is handler  # put back
    # the pool's shutdown did not wait for the 60 s sleeps (timed from the interrupt: the sweep's start,
    # imports and git calls included, took longer than that on a loaded machine)
    assert time.monotonic() - interrupted[0] < 30
    assert len(started()) == 2  # the third run never started
    for pid in started():
        with pytest.raises(ProcessLookupError):  # killed and reaped
            os.kill(pid, 0)
    assert not results.exists()  # the killed runs are not recorded: a rerun runs them
    assert sum(" started | " in m for m in messages) == 2 and not any(" finished, " in m for m in messages)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_sweep_command_leaves_no_run_process_behind(sweep_file, in_tmp, signum):
    """SIGTERM, and Ctrl-C (which used to end the command with a KeyboardInterrupt traceback)."""
    fake_python, started = _sleeping_python(in_tmp)
    path = sweep_file(seeds=[1, 2, 3], workers=2)
    driver = in_tmp / "driver.py"
    driver.write_text(
        "import signal, sys\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"  # as in a terminal (see ctrl_c)
        f"sys.path.insert(0, {str(sweep_spec.PACKAGE_ROOT)!r})\n"
        "from recbole_sae.benchmark import process\n"
        "from recbole_sae.cli import main\n"
        "process.model_problem = lambda name: None\n"
        f"sys.executable = {str(fake_python)!r}\n"
        f"sys.exit(main(['--sweep={path}', '--results={in_tmp / 'r.jsonl'}']))\n"
    )
    proc = subprocess.Popen([sys.executable, str(driver)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while len(started()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=30)
    by = "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C"
    assert proc.returncode == 128 + signum and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"sweep stopped by {by}: its running runs were killed")
    for pid in started():
        with pytest.raises(ProcessLookupError):  # the run processes died with the sweep
            os.kill(pid, 0)


def test_run_threads_and_time_left(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    sweep = sweep_spec.Sweep(name="s", path=None, models=["SASRec"], datasets=["d"], seeds=[1])
    assert sweep.workers == 1 and runner.run_threads(sweep) is None  # one worker: torch's default
    sweep.workers = 4
    assert runner.run_threads(sweep) == 4
    sweep.workers = 3
    assert runner.run_threads(sweep) == 5
    sweep.workers = 32
    assert runner.run_threads(sweep) == 1
    sweep.torch_threads = 2
    assert runner.run_threads(sweep) == 2  # set in the sweep: kept whatever the workers
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    sweep.torch_threads, sweep.workers = None, 2
    assert runner.run_threads(sweep) == 1

    assert runner.time_left([10.0, 20.0], 6, 1) == 90.0
    assert runner.time_left([10.0, 20.0], 6, 2) == 45.0
    assert runner.time_left([10.0, 20.0], 1, 4) == 15.0  # one run left takes a whole run, whatever the workers
    assert runner.time_left([10.0], 0, 2) == 0.0 and runner.time_left([], 3, 2) is None


def test_git_dirty_ignores_results_reports_and_plots(tmp_path, monkeypatch):
    # a sweep writing its results file inside the repository marked its own later runs "dirty"
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    for name in ["code.py", "results.jsonl", "report.md", "plot.png", "sweep.yaml"]:
        (tmp_path / name).write_text("a\n")
    git("add", ".")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "-m", "init")
    monkeypatch.setattr(runner, "PACKAGE_ROOT", tmp_path)
    assert runner.git_commit()[1] is False
    for name in ["results.jsonl", "report.md", "plot.png"]:
        (tmp_path / name).write_text("b\n")
    commit, dirty = runner.git_commit()
    assert len(commit) == 40 and dirty is False
    (tmp_path / "sweep.yaml").write_text("b\n")
    assert runner.git_commit()[1] is True
    git("checkout", "-q", "sweep.yaml")
    (tmp_path / "code.py").write_text("b\n")
    assert runner.git_commit()[1] is True


def test_grid_points_option_runs_only_those_points_with_the_whole_sweeps_keys(sweep_file, in_tmp, monkeypatch, capsys):
    from recbole_sae.cli import main

    path = sweep_file(
        seeds=[1, 2],
        grid={"learning_rate": [0.1, 0.01], "dropout_prob": [0.2, 0.5]},
        model_grid={"GRU4Rec": {"dropout_prob": [0.3]}},
        models=["SASRec", "GRU4Rec"],
    )
    whole = {(s.model, s.grid_label, s.seed): s.key for s in sweep_spec.plan_runs(sweep_spec.load_sweep(path))}
    ran = []

    def fake(spec, *args, **kwargs):
        ran.append((spec.model, spec.grid_label, spec.seed, spec.key))
        return _planted_fields()

    monkeypatch.setattr(runner, "execute_run", fake)
    results = in_tmp / "g.jsonl"
    points = "--grid_points=dropout_prob=0.5,learning_rate=0.01; dropout_prob=0.3"
    assert main([f"--sweep={path}", f"--results={results}", points]) == 0
    assert sorted((m, g, s) for m, g, s, _ in ran) == [
        ("GRU4Rec", "dropout_prob=0.3", 1),
        ("GRU4Rec", "dropout_prob=0.3", 2),
        ("SASRec", "dropout_prob=0.5,learning_rate=0.01", 1),
        ("SASRec", "dropout_prob=0.5,learning_rate=0.01", 2),
    ]
    assert all(key == whole[(m, g, s)] for m, g, s, key in ran)  # the same runs as in the whole sweep
    # the rest of the grid afterwards: nothing runs twice
    ran.clear()
    assert main([f"--sweep={path}", f"--results={results}"]) == 0
    assert len(ran) == 6 and not any(
        g == "dropout_prob=0.5,learning_rate=0.01" or g == "dropout_prob=0.3" for _, g, _, _ in ran
    )
    capsys.readouterr()
    assert main([f"--sweep={path}", f"--results={results}", "--grid_points=dropout=0.5"]) == 2
    err = capsys.readouterr().err
    assert "unknown grid point(s) dropout=0.5" in err and "dropout_prob=0.2,learning_rate=0.1" in err


@pytest.mark.parametrize("model", ["FEARec", "SASRecF"])
def test_the_full_profiles_new_baselines_run(model, tiny_dataset, in_tmp):
    """FEARec (needs 2 layers) and SASRecF (item attributes) through the pipeline, with the full profile's settings."""
    from recbole_sae.quick_start import run_recbole_sae

    data_path, name, yaml_file = tiny_dataset
    full = sweep_spec.load_sweep(sweep_spec.resolve_sweep_path("full"))
    settings = {**SMALL, **full.model_config.get(model, {}), "n_layers": 2, "data_path": data_path}
    if model == "SASRecF":
        settings["selected_features"] = ["genre"]  # the tiny data's attribute
    result = run_recbole_sae(model, name, [yaml_file], settings)
    assert result["epochs_run"] == 1 and 0 < result["test"]["hit@20"] <= 1
    assert (
        sweep_spec.resolve_sweep_path("properties/sweep/quick.yaml") == sweep_spec.PROPERTIES / "sweep" / "quick.yaml"
    )
    quick = sweep_spec.load_sweep(sweep_spec.resolve_sweep_path("quick"))
    assert quick.config["hidden_size"] == 32 and quick.config["n_layers"] == 1 and quick.baseline == "SASRec"
