"""The report's training section: best epoch, epochs run and why each run stopped, on planted records;
the validation curves' plot from the records' learning curves."""

from pathlib import Path

import pytest

from recbole_sae.benchmark import curves
from recbole_sae.benchmark import report as reports
from recbole_sae.benchmark.stats import REPORT_METRICS


def _record(model, seed, best_epoch, epochs_run, epochs=200, eval_step=1, stopping_step=10, curve=None):
    metrics = {key: 0.05 for key, _ in REPORT_METRICS}
    record = {
        "key": f"{model}-{seed}",
        "status": "ok",
        "model": model,
        "dataset": "d",
        "seed": seed,
        "grid_label": "",
        "test": metrics,
        "best_valid": metrics,
        "best_epoch": best_epoch,
        "epochs_run": epochs_run,
        "config": {"epochs": epochs, "eval_step": eval_step, "stopping_step": stopping_step},
    }
    if curve is not None:
        record["curve"] = curve
    return record


def test_stop_reason_and_best_near_the_end():
    # early stopping ended it: 11 validations after epoch 30 (0-based) at a patience of 10
    patience = _record("A", 1, best_epoch=30, epochs_run=42)
    assert curves.stop_reason(patience) == "patience" and not curves.best_near_end(patience)
    # the published schedule: 200 epochs validated every 5, no early stopping; best at epoch 180 of
    # 200 (0-based 179) is 4 validations before the end, within the last 10
    late = _record("A", 2, best_epoch=179, epochs_run=200, eval_step=5, stopping_step=200)
    assert curves.stop_reason(late) == "epoch limit" and curves.best_near_end(late)
    # best at epoch 105 of 200: 19 validations before the end, a flat tail
    flat = _record("A", 3, best_epoch=104, epochs_run=200, eval_step=5, stopping_step=200)
    assert curves.stop_reason(flat) == "epoch limit" and not curves.best_near_end(flat)
    # a patience of 3 that the limit cut short 2 validations after its best
    short = _record("A", 4, best_epoch=17, epochs_run=20, epochs=20, stopping_step=3)
    assert curves.best_near_end(short)
    assert curves.stop_reason({"epochs_run": 3}) is None  # no resolved config: unknown
    assert curves.stop_reason({"config": {"epochs": 5}, "epochs_run": 0}) is None  # no training epoch


def test_report_says_how_each_run_trained(tmp_path):
    records = [
        _record("SASRec", 1, best_epoch=30, epochs_run=42),
        _record("SASRec", 2, best_epoch=179, epochs_run=200, eval_step=5, stopping_step=200),
        {**_record("Loaded", 1, best_epoch=None, epochs_run=0)},  # weights loaded: no training to tell
    ]
    out = reports.write_report(records, tmp_path, "training", baseline="SASRec")
    text = Path(out["markdown"]).read_text()
    assert "## d: training" in text
    row = next(line for line in text.splitlines() if line.startswith("| SASRec | 1, 2 |"))
    assert row == "| SASRec | 1, 2 | 31 / 42, 180 / 200 | patience, epoch limit (best near the end) |"
    assert not any(line.startswith("| Loaded | 1 |") for line in text.splitlines())
    assert out["curves"] is None and "validation curves" not in text  # no record holds a curve


def test_report_plots_the_curves_the_records_hold(tmp_path):
    curve = {"metric": "ndcg@10", "protocol": "seen_removed", "valid_epoch": [0, 1, 2], "valid": [0.01, 0.03, 0.02]}
    records = [
        _record("SASRec", 1, best_epoch=1, epochs_run=3, epochs=3, curve=curve),
        _record("SASRec", 2, best_epoch=1, epochs_run=3, epochs=3),  # an older record: in the table, not the plot
    ]
    out = reports.write_report(records, tmp_path, "curves", baseline="SASRec")
    assert Path(out["curves"]).name == "curves-curves.png" and Path(out["curves"]).read_bytes()[:4] == b"\x89PNG"
    text = Path(out["markdown"]).read_text()
    assert "![validation curves of the runs above](curves-curves.png)" in text
    assert "| SASRec | 1, 2 | 2 / 3, 2 / 3 | epoch limit (best near the end), epoch limit (best near the end) |" in text


GREEN, BLUE, END = "\x1b[1;32m", "\x1b[1;34m", "\x1b[0m"


def _trained(epoch, seconds, loss):
    return f"x INFO  {GREEN}epoch {epoch} training{END} [{BLUE}time{END}: {seconds:.2f}s, {BLUE}train loss{END}: {loss:.4f}]"


def _validated(epoch, score):
    return f"x INFO  {GREEN}epoch {epoch} evaluating{END} [{BLUE}time{END}: 1.00s, {BLUE}valid_score{END}: {score:f}]"


def test_a_curve_is_read_from_recboles_log_lines(tmp_path):
    """RecBole's coloured lines; a run killed in epoch 2 and resumed logs epoch 2's training twice
    (the last counts); a tuple of losses is summed."""
    lines = [_trained(0, 3.5, 10.0), _validated(0, 0.01), _trained(1, 3.0, 8.0), _validated(1, 0.02)]
    lines += [_trained(2, 9.0, 99.0), "resumed from resume.pth", _trained(2, 3.25, 7.5), _validated(2, 0.015)]
    lines += [f"{GREEN}epoch 3 training{END} [{BLUE}time{END}: 3.00s, train_loss1: 4.0000, train_loss2: 2.5000]"]
    (tmp_path / "run.log").write_text("\n".join(lines) + "\n")
    curve = curves.from_run_log(tmp_path, "ndcg@10", "seen_removed")
    assert curve == {
        "metric": "ndcg@10",
        "protocol": "seen_removed",
        "valid_epoch": [0, 1, 2],
        "valid": [0.01, 0.02, 0.015],
        "train_loss": [10.0, 8.0, 7.5, 6.5],
        "train_seconds": [3.5, 3.0, 3.25, 3.0],
        "from": "run.log",
    }
    assert curves.from_run_log(tmp_path / "nowhere", "ndcg@10", "seen_removed") is None


def test_curves_command_fills_records_from_their_run_folders(tmp_path, capsys):
    import json

    from recbole_sae.benchmark.commands import cli

    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "run.log").write_text(_trained(0, 2.0, 5.0) + "\n" + _validated(0, 0.03) + "\n")
    has = _record("A", 1, 0, 1, curve={"valid_epoch": [0], "valid": [0.5]})
    needs = {**_record("A", 2, 0, 1), "run_dir": str(folder)}
    lost = {**_record("A", 3, 0, 1), "run_dir": str(tmp_path / "gone")}
    source = tmp_path / "r.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in (has, needs, lost, {"key": "e", "status": "error"})))
    with pytest.warns(UserWarning, match=r"no run.log in the run folder of 1 record\(s\) \(A-3\)"):
        assert cli(["curves", str(source), "--out", str(tmp_path / "with.jsonl")]) == 0
    out = [json.loads(line) for line in (tmp_path / "with.jsonl").read_text().splitlines()]
    assert out[0] == has and out[1]["curve"]["valid"] == [0.03] and out[1]["curve"]["protocol"] == "seen_kept"
    assert "curve" not in out[2] and out[3] == {"key": "e", "status": "error"}
    captured = capsys.readouterr()
    assert "curves: 1 of 4 records hold a curve read from their run.log" in captured.out
    # the file read is never overwritten; a missing file is an error line
    assert cli(["curves", str(source), "--out", str(source)]) == 2
    assert cli(["curves", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "x.jsonl")]) == 2
    assert capsys.readouterr().err.count("error: ") == 2
