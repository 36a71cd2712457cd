"""The committed reports are what `python -m recbole_sae.benchmark report` writes from the committed results."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from recbole_sae.benchmark import commands
from recbole_sae.benchmark import report as reports
from recbole_sae.benchmark import stats as report_stats

REPO = Path(__file__).resolve().parents[1]
REPORTS = sorted((REPO / "benchmarks" / "results").glob("*.md"))


def regenerate_command(report: Path) -> list[str]:
    """The report command a committed report says it came from: its results files (the 'Results:' line),
    its name (the file's) and its baseline (the 'ΔNDCG@10 vs X' column, when that model has runs)."""
    text = report.read_text(encoding="utf-8")
    files = re.search(r"^Results: `([^`]+)`", text, re.M)
    baseline = re.search(r"ΔNDCG@10 vs (.+?) \|", text)  # a name may carry its file: "SASRecPlus [full_cpu]"
    assert files and baseline, f"{report.name}: no 'Results:' line or ΔNDCG@10 column"
    command = ["report", *files[1].split(", "), "--name", report.stem]
    if "Every grid point has its own row" in text:  # an ablation table
        command.append("--by_grid_point")
    # a baseline with runs of its own was chosen (or defaulted to); one without runs is the default
    return command + (["--baseline", baseline[1]] if "| baseline |" in text else [])


@pytest.mark.parametrize("report", REPORTS, ids=lambda p: p.name)
def test_committed_report_regenerates_byte_identically(report, tmp_path, monkeypatch, capsys):
    """A tracked report (quick_cpu.md) differed from what `report` writes now: regenerate it with
    python -m recbole_sae.benchmark report <files> --name <name> --baseline <baseline> (from the repository root)."""
    monkeypatch.chdir(REPO)  # the reports name their results files relative to the repository root
    assert commands.cli([*regenerate_command(report), "--out", str(tmp_path)]) == 0
    assert (tmp_path / report.name).read_text(encoding="utf-8") == report.read_text(encoding="utf-8")


def test_no_bold_on_a_loss_against_the_baseline():
    """The 'best' ΔNDCG@10 used to be bold even when every model was below the baseline."""
    rows = [
        {"model": "SASRec", "grid_label": "", "baseline": True, "rel_diff": 0.0, "p_value": None},
        {"model": "GRU4Rec", "grid_label": "", "baseline": False, "rel_diff": -0.1, "p_value": 0.2},
        {"model": "BERT4Rec", "grid_label": "", "baseline": False, "rel_diff": -0.0004, "p_value": 0.5},
    ]
    for row in rows:
        row.update(
            metrics={key: (0.05, 0.001) for key, _ in report_stats.REPORT_METRICS},
            n=2,
            seconds_per_epoch=1.0,
            devices=["cpu"],
        )
    lines = reports._markdown_table(rows, "SASRec")
    assert "**" not in lines[3].split("|")[-3] and "**" not in lines[4].split("|")[-3]
    assert lines[4].split("|")[-3].strip() == "-0.0%"
    rows[1]["rel_diff"] = 0.05
    lines = reports._markdown_table(rows, "SASRec")
    assert lines[3].split("|")[-3].strip() == "**+5.0%**"
