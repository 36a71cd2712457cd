"""Benchmark sweeps' results file and report: crash-safe appends, report maths, grid point choice."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from recbole_sae.benchmark import commands
from recbole_sae.benchmark import report as reports
from recbole_sae.benchmark import results as results_file
from recbole_sae.benchmark import spec as sweep_spec
from recbole_sae.benchmark import stats as report_stats


def test_a_killed_writer_leaves_a_readable_file(tmp_path):
    results = tmp_path / "results.jsonl"
    script = (
        "import os, signal, sys\n"
        "from recbole_sae.benchmark.results import append_record\n"
        "path = sys.argv[1]\n"
        "append_record(path, {'key': 'a', 'status': 'ok'})\n"
        "append_record(path, {'key': 'b', 'status': 'ok'})\n"
        "fd = os.open(path, os.O_WRONLY | os.O_APPEND)\n"
        'os.write(fd, b\'{"key": "c", "stat\')\n'  # the writer dies mid-line
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(sweep_spec.PACKAGE_ROOT)}
    proc = subprocess.run([sys.executable, "-c", script, str(results)], env=env, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    with pytest.warns(results_file.ResultsFileWarning, match="partial last line"):
        records = results_file.read_results(results)
    assert records == [{"key": "a", "status": "ok"}, {"key": "b", "status": "ok"}]

    # the next record starts on its own line: the damage stays in the broken line
    results_file.append_record(results, {"key": "c", "status": "ok"})
    with pytest.warns(results_file.ResultsFileWarning, match="unreadable line 3"):
        records = results_file.read_results(results)
    assert [r["key"] for r in records] == ["a", "b", "c"]
    assert results.read_bytes().endswith(b"\n")

    # the report command says so in one line (it used to print the warning's source line under it)
    command = [sys.executable, "-m", "recbole_sae.benchmark", "report", str(results), "--out", str(tmp_path)]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stderr.splitlines()[0] == f"warning: {results}: ignoring unreadable line 3"
    assert all(line.startswith("warning: ") for line in proc.stderr.splitlines())


def test_latest_record_per_key_wins():
    records = [
        {"key": "a", "status": "error"},
        {"key": "a", "status": "ok", "n": 1},
        {"key": "a", "status": "ok", "n": 2},
        {"key": "b", "status": "error"},
    ]
    assert results_file.latest_records(records) == [{"key": "a", "status": "ok", "n": 2}]
    assert results_file.latest_records(records, "error") == [
        {"key": "a", "status": "error"},
        {"key": "b", "status": "error"},
    ]


def _record(model, seed, test, valid=None, dataset="d", label="", per_epoch=1.0):
    metrics = {k: test for k, _ in report_stats.REPORT_METRICS}
    valid_metrics = {k: test if valid is None else valid for k, _ in report_stats.REPORT_METRICS}
    return {
        "key": f"{model}-{dataset}-{label}-{seed}",
        "status": "ok",
        "model": model,
        "dataset": dataset,
        "seed": seed,
        "grid_label": label,
        "test": metrics,
        "best_valid": valid_metrics,
        "seconds_per_epoch": per_epoch,
    }


def test_report_maths(tmp_path):
    base = [0.10, 0.12, 0.14]
    other = [0.12, 0.15, 0.15]
    records = [_record("SASRec", s, v, per_epoch=2.0) for s, v in zip([1, 2, 3], base)]
    records += [_record("Other", s, v, per_epoch=3.0) for s, v in zip([1, 2, 3], other)]
    records += [_record("Single", 1, 0.05, per_epoch=5.0)]
    rows = {row["model"]: row for row in report_stats.summarize(records, "SASRec")["d"]}

    mean, std = rows["Other"]["metrics"]["ndcg@10"]
    assert mean == pytest.approx(0.14)
    assert std == pytest.approx(math.sqrt((0.02**2 + 0.01**2 + 0.01**2) / 2))  # sample std, n - 1
    assert rows["SASRec"]["metrics"]["ndcg@10"] == (pytest.approx(0.12), pytest.approx(0.02))
    assert rows["Other"]["rel_diff"] == pytest.approx((0.14 - 0.12) / 0.12)
    # paired t over seeds: differences 0.02, 0.03, 0.01 -> t = 0.02 / (0.01 / sqrt 3), 2 degrees of
    # freedom, where the t distribution's CDF is 1/2 + t / (2 sqrt(2 + t^2)): p = 1 - t / sqrt(2 + t^2)
    t = 0.02 / (0.01 / math.sqrt(3))
    assert rows["Other"]["p_value"] == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-6)
    from scipy import stats

    assert rows["Other"]["p_value"] == pytest.approx(stats.ttest_rel(other, base).pvalue)
    assert rows["Single"]["metrics"]["ndcg@10"][1] is None and rows["Single"]["p_value"] is None
    assert rows["SASRec"]["rel_diff"] is None and rows["SASRec"]["seconds_per_epoch"] == 2.0

    out = reports.write_report(records, tmp_path, "planted", baseline="SASRec")
    text = Path(out["markdown"]).read_text()
    lines = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert "**0.1400 ± 0.0173**" in lines["Other"]  # best NDCG@10 in bold
    assert "+16.7%" in lines["Other"] and f"{1 - t / math.sqrt(2 + t * t):.3g}" in lines["Other"]
    assert "**2.00**" in lines["SASRec"] and "baseline" in lines["SASRec"]  # fastest epoch in bold
    assert "0.0500 |" in lines["Single"] and lines["Single"].endswith("| 5.00 | -58.3% | n/a |")
    assert Path(out["plot"]).read_bytes()[:4] == b"\x89PNG"


def test_one_report_from_several_results_files(tmp_path, capsys):
    """A CPU file and a GPU file in one table: a model with runs in both gets one row per file (its runs
    used to be merged into one row, the later file's seeds replacing the earlier's), rows are paired
    by seed across files, and the table says which device each row ran on."""
    gpu, cpu = tmp_path / "gpu.jsonl", tmp_path / "cpu.jsonl"
    for r in [_record("SASRec", s, v) for s, v in zip([1, 2, 3], [0.10, 0.12, 0.14])] + [
        _record("Other", s, v) for s, v in zip([1, 2, 3], [0.09, 0.11, 0.13])
    ]:
        results_file.append_record(gpu, {**r, "device": "cuda:0"})
    for r in [_record("Other", s, v, per_epoch=9.0) for s, v in zip([1, 2, 3], [0.12, 0.15, 0.15])] + [
        _record("CpuOnly", s, 0.05) for s in (1, 2)
    ]:
        results_file.append_record(cpu, {**r, "device": "cpu"})  # same run keys as the GPU file's "Other" runs

    records = results_file.read_many([gpu, cpu])
    assert {r["source"] for r in records} == {"gpu", "cpu"}
    rows = {row["model"]: row for row in report_stats.summarize(records, "SASRec")["d"]}
    assert set(rows) == {"SASRec", "Other [gpu]", "Other [cpu]", "CpuOnly"}
    assert rows["Other [cpu]"]["metrics"]["ndcg@10"][0] == pytest.approx(0.14)
    assert rows["Other [gpu]"]["metrics"]["ndcg@10"][0] == pytest.approx(0.11)
    assert rows["Other [cpu]"]["rel_diff"] == pytest.approx((0.14 - 0.12) / 0.12)  # paired across devices
    assert rows["Other [cpu]"]["devices"] == ["cpu"] and rows["SASRec"]["devices"] == ["cuda"]
    assert rows["CpuOnly"]["n"] == 2

    out = tmp_path / "out"
    assert commands.cli(["report", str(gpu), str(cpu), "--out", str(out), "--baseline", "SASRec"]) == 0
    text = (out / "gpu+cpu.md").read_text()
    assert f"Results: `{gpu}, {cpu}`; 11 finished runs" in text and "Rows named `Model [file]`" in text
    assert "| Model | device | NDCG@10 |" in text
    assert "| Other [cpu] | cpu | **0.1400 ± 0.0173** |" in text and "| SASRec | cuda | 0.1200 ± 0.0200 |" in text
    assert (out / "gpu+cpu-ndcg10.png").is_file()
    # one file: no device column, no renaming (as before)
    assert commands.cli(["report", str(cpu), "--out", str(out), "--baseline", "Other", "--name", "alone"]) == 0
    alone = (out / "alone.md").read_text()
    assert "| Model | NDCG@10 |" in alone and "| Other | **0.1400 ± 0.0173** |" in alone
    capsys.readouterr()
    # a baseline that is in none of the files, and two files of one name, are errors that say so
    assert commands.cli(["report", str(gpu), str(cpu), "--out", str(out), "--baseline", "Other"]) == 2
    assert "no runs of the baseline 'Other'" in capsys.readouterr().err
    (tmp_path / "x").mkdir()
    twin = tmp_path / "x" / "cpu.jsonl"
    twin.write_bytes(cpu.read_bytes())
    assert commands.cli(["report", str(cpu), str(twin), "--out", str(out)]) == 2
    assert "same name" in capsys.readouterr().err


def test_runs_with_other_cut_offs_are_reported_or_left_out_with_a_reason(tmp_path):
    """A run with topk [10] (no @20 metrics) crashed the report with a KeyError; one without NDCG@10
    (topk [5], or no validation: eval_step 0) did too. Now: n/a where a metric was not computed, and
    a run the report cannot compare is left out with a warning that says why."""
    ten = [_record("SASRec", s, 0.1 + s / 100) for s in (1, 2)]
    for record in ten:
        for name in ("test", "best_valid"):
            record[name] = {k: v for k, v in record[name].items() if k.endswith("@10")}
    five = _record("Other", 1, 0.3)
    five["test"] = five["best_valid"] = {"ndcg@5": 0.3}
    with pytest.warns(results_file.ResultsFileWarning, match="lacks best_valid ndcg@10, test ndcg@10 .reports compare"):
        out = reports.write_report([*ten, five], tmp_path, "cut_offs", baseline="SASRec")
    rows = [line for line in Path(out["markdown"]).read_text().splitlines() if line.startswith("| SASRec |")]
    # one row: nothing is bold
    assert rows == [
        "| SASRec | 0.1150 ± 0.0071 | n/a | 0.1150 ± 0.0071 | n/a | 0.1150 ± 0.0071 | 2 | 1.00 | baseline | — |"
    ]


def test_paired_test_needs_two_pairs():
    assert report_stats.paired_pvalue({1: 0.2}, {1: 0.1}) is None
    assert report_stats.paired_pvalue({1: 0.2, 2: 0.3}, {2: 0.1, 3: 0.1}) is None  # one common seed
    assert report_stats.mean_std([0.5]) == (0.5, None) and report_stats.mean_std([]) == (None, None)
    assert report_stats.relative_difference(0.1, 0.0) is None


def test_identical_pairs_have_p_one():
    # the same numbers on every seed (SASRecSAE's backbone against SASRecPlus): no difference, p = 1, not "n/a"
    assert report_stats.paired_pvalue({1: 0.0415, 2: 0.0419, 3: 0.0428}, {1: 0.0415, 2: 0.0419, 3: 0.0428}) == 1.0


def test_grid_point_is_chosen_on_validation_not_test(tmp_path):
    records = []
    for seed in (1, 2):
        records.append(_record("SASRec", seed, test=0.10, valid=0.30, label="lr=0.1"))
        records.append(_record("SASRec", seed, test=0.40, valid=0.20, label="lr=0.01"))
    assert report_stats.choose_grid_points(records) == {("d", "SASRec"): "lr=0.1"}
    (row,) = report_stats.summarize(records, "SASRec")["d"]
    assert row["grid_label"] == "lr=0.1" and row["metrics"]["ndcg@10"][0] == pytest.approx(0.10)
    text = Path(reports.write_report(records, tmp_path, "grid")["markdown"]).read_text()
    assert "| SASRec (lr=0.1) |" in text and "| SASRec | lr=0.01 | 0.2000 | 0.4000 | 2 |  |" in text


def test_tied_grid_points_do_not_depend_on_the_finishing_order():
    """RecBole's 4-digit rounding makes ties; the first record seen used to win them."""
    a = _record("SAERec", 1, test=0.04, valid=0.0512, label="dropout=0.2")
    b = _record("SAERec", 1, test=0.05, valid=0.0512, label="dropout=0.5")
    b["best_valid"]["ndcg@20"] = 0.0600  # the first tie-break: validation NDCG@20
    for records in ([a, b], [b, a]):
        assert report_stats.choose_grid_points(records) == {("d", "SAERec"): "dropout=0.5"}
    c = _record("SAERec", 1, test=0.04, valid=0.0512, label="dropout=0.1")  # ties on everything with a
    for records in ([a, c], [c, a]):
        assert report_stats.choose_grid_points(records) == {("d", "SAERec"): "dropout=0.1"}


def test_every_grid_point_gets_a_row_against_the_baselines_chosen_point(tmp_path):
    """The ablation view: each variant of a model its own row, compared with the baseline's best point."""
    records = []
    for seed, base in ((1, 0.10), (2, 0.12)):
        records.append(_record("Base", seed, test=base, valid=0.5, label="lr=1"))
        records.append(_record("Base", seed, test=0.50, valid=0.1, label="lr=2"))  # not chosen: lower validation
        records.append(_record("Var", seed, test=base * 1.1, valid=0.2, label="a=1"))
        records.append(_record("Var", seed, test=base * 0.9, valid=0.3, label="a=2"))
    assert [row["grid_label"] for row in report_stats.summarize(records, "Base")["d"]] == ["lr=1", "a=2"]
    rows = report_stats.summarize(records, "Base", every_point=True)["d"]
    assert [(row["model"], row["grid_label"]) for row in rows] == [("Base", "lr=1"), ("Var", "a=1"), ("Var", "a=2")]
    assert [row["rel_diff"] for row in rows[1:]] == [pytest.approx(0.1), pytest.approx(-0.1)]
    text = Path(
        reports.write_report(records, tmp_path, "abl", baseline="Base", every_point=True)["markdown"]
    ).read_text()
    assert "| Var (a=1) |" in text and "| Var (a=2) |" in text and "Grid points (mean over seeds" not in text
    results = tmp_path / "r.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    assert commands.cli(["report", str(results), "--by_grid_point", "--baseline", "Base"]) == 0
    assert "| Var (a=1) |" in (tmp_path / "r.md").read_text()


def test_runs_of_one_grid_point_with_other_overrides_are_rows_of_their_own(tmp_path):
    """Two runs of one model, grid point and seed with another ``--key=value`` in one results file: the
    report showed one of them as the only run (the other silently dropped), and runs of one point with
    other settings on other seeds were averaged as seeds of one setting."""
    records = []
    for seed, value, test in ((1, 0.0, 0.10), (1, 0.5, 0.20), (2, 0.0, 0.12), (2, 0.5, 0.22)):
        record = _record("SAERec", seed, test=test, valid=test, label="dropout=0.5")
        record["key"] += f"-{value}"
        record["overrides"] = {"seed": seed, "lr": 1, "item_feature_dropout": value}
        records.append(record)
    rows = report_stats.summarize(records, "Base", every_point=True)["d"]
    assert [(row["grid_label"], row["n"], row["metrics"]["ndcg@10"][0]) for row in rows] == [
        ("dropout=0.5 [item_feature_dropout=0.0]", 2, pytest.approx(0.11)),
        ("dropout=0.5 [item_feature_dropout=0.5]", 2, pytest.approx(0.21)),
    ]
    # a key set on some runs only reads 'default' on the others; runs without a grid get the bracket alone
    del records[0]["overrides"]["item_feature_dropout"]
    for record in records:
        record["grid_label"] = ""
    labels = report_stats._settings_labels(records)
    assert labels[:2] == ["[item_feature_dropout=default]", "[item_feature_dropout=0.5]"]
    # the same settings on every run: the labels are the grid labels, as before
    same = [_record("SAERec", s, test=0.1, label="dropout=0.5") for s in (1, 2)]
    for record in same:
        record["overrides"] = {"seed": record["seed"], "lr": 1}
    assert report_stats._settings_labels(same) == ["dropout=0.5", "dropout=0.5"]
