"""The report's training section: best epoch, epochs run and why each run stopped, on planted records;
the validation curves' plot from the records' learning curves."""

from pathlib import Path

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
