"""How the runs of a report trained: each row's best epoch, epochs run and why training stopped (a
table), and the validation curves the records hold (a plot). A reviewer reads here whether a model
converged or ran out of epochs."""

from __future__ import annotations

import re
from pathlib import Path

from recbole_sae import protocol, runfiles
from recbole_sae.tables import markdown_table

PATIENCE, LIMIT = "patience", "epoch limit"


def stop_reason(record: dict) -> str | None:
    """``patience`` (early stopping ended it), ``epoch limit`` (it ran every epoch it was given), or
    None when the record does not say (no training epoch, or no resolved config)."""
    epochs = (record.get("config") or {}).get("epochs")
    run = record.get("epochs_run")
    if not epochs or not run:
        return None
    return LIMIT if run >= epochs else PATIENCE


NEAR_END = 10  # validations: a best among the last min(stopping_step, NEAR_END) of a run at its limit is "near the end"


def best_near_end(record: dict) -> bool:
    """Stopped by the epoch limit with its best validation among the last min(``stopping_step``,
    :data:`NEAR_END`) validations: early stopping would not have ended it yet (or, without early
    stopping, the curve was still rising late), so more epochs might have helped."""
    config = record.get("config") or {}
    if stop_reason(record) != LIMIT or record.get("best_epoch") is None:
        return False
    step = int(config.get("eval_step") or 1)
    window = min(int(config.get("stopping_step") or 0), NEAR_END)
    validations_after = (record["epochs_run"] - 1 - record["best_epoch"]) // step
    return validations_after < window


def _name(row: dict) -> str:
    return row["model"] + (f" ({row['grid_label']})" if row["grid_label"] else "")


def training_lines(rows: list[dict]) -> list[str]:
    """The table of how each row's runs trained, by seed: best epoch / epochs run (counted from 1,
    as the console prints them) and the stop reason; rows none of whose records says, left out."""
    cells = []
    for row in rows:
        runs = row.get("runs") or []
        reasons = [stop_reason(r) for r in runs]
        if not any(reasons):
            continue
        epochs = ", ".join(
            f"{r['best_epoch'] + 1} / {r['epochs_run']}" if r.get("best_epoch") is not None else "-" for r in runs
        )
        stopped = ", ".join(
            (reason or "?") + (" (best near the end)" if best_near_end(r) else "") for r, reason in zip(runs, reasons)
        )
        cells.append([_name(row), ", ".join(str(s) for s in row["seeds"]), epochs, stopped])
    if not cells:
        return []
    headers = ["Model", "seeds", "best epoch / epochs run", "stopped by"]
    table = markdown_table(cells, headers, align=["left", "left", "left", "left"], spaced_rule=False)
    note = (
        "Training, per seed: the epoch whose validation was tested and the epochs run, counted from 1; "
        "stopped by patience (early stopping: `stopping_step` validations without a better one) or by the "
        f"epoch limit (`epochs`); 'best near the end' when its best validation was among the last "
        f"min(`stopping_step`, {NEAR_END}) validations, so more epochs might have helped."
    )
    return [note, "", *table.splitlines(), ""]


def plot_curves(tables: dict, path) -> Path | None:
    """Validation score against epoch for every run of the tables' rows that holds a learning curve
    (``curve`` of its record), one panel per dataset, one colour per row; a dot marks the tested
    epoch. None when no run holds one."""
    panels = {
        dataset: [(row, run) for row in rows for run in row.get("runs") or [] if (run.get("curve") or {}).get("valid")]
        for dataset, rows in tables.items()
    }
    panels = {dataset: runs for dataset, runs in panels.items() if runs}
    if not panels:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4 * len(panels), 4.4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (dataset, runs) in zip(axes, panels.items()):
        names = list(dict.fromkeys(_name(row) for row, _ in runs))
        colour = {name: f"C{i % 10}" for i, name in enumerate(names)}
        labelled, metrics = set(), set()
        for row, run in runs:
            curve, name = run["curve"], _name(row)
            epochs = [e + 1 for e in curve["valid_epoch"]]
            label = None if name in labelled else name
            labelled.add(name)
            ax.plot(epochs, curve["valid"], color=colour[name], linewidth=1.2, label=label)
            if run.get("best_epoch") is not None and run["best_epoch"] in curve["valid_epoch"]:
                i = curve["valid_epoch"].index(run["best_epoch"])
                ax.plot([epochs[i]], [curve["valid"][i]], "o", color=colour[name], markersize=4)
            metrics.add(f"{curve.get('metric', '?')}, {curve.get('protocol', '?').replace('_', ' ')}")
        ax.set_title(dataset)
        ax.set_xlabel("epoch (counted from 1)")
        ax.set_ylabel("validation " + "; ".join(sorted(metrics)))
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return Path(path)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_TRAINED = re.compile(r"epoch (\d+) training \[time: ([0-9.]+)s, (.*)\]")
_VALIDATED = re.compile(r"epoch (\d+) evaluating \[time: [0-9.]+s, valid_score: ([^\]]+)\]")
_LOSS = re.compile(r"loss\d*: (-?[0-9.]+(?:e[-+]?\d+)?|nan|inf)")


def from_run_log(run_dir, metric: str, headline: str) -> dict | None:
    """The learning curve of a run, read from RecBole's lines in its ``run.log`` (``epoch N training
    [time: ..., train loss: ...]``, ``epoch N evaluating [..., valid_score: ...]``), in the form of a
    result's ``curve``, for records written before results held one; the last line of an epoch counts
    (a resumed run trains again the epoch it was killed in). None without a log or a training line."""
    log = Path(run_dir) / runfiles.LOG
    if not log.is_file():
        return None
    trained, validated = {}, {}
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        line = _ANSI.sub("", line)
        if match := _TRAINED.search(line):
            losses = [float(value) for value in _LOSS.findall(match[3])]
            trained[int(match[1])] = (float(match[2]), sum(losses) if losses else None)
        elif match := _VALIDATED.search(line):
            validated[int(match[1])] = float(match[2])
    if not trained:
        return None
    epochs = range(max(trained) + 1)
    return {
        "metric": metric,
        "protocol": headline,
        "valid_epoch": sorted(validated),
        "valid": [validated[epoch] for epoch in sorted(validated)],
        "train_loss": [trained[epoch][1] if epoch in trained else None for epoch in epochs],
        "train_seconds": [trained[epoch][0] if epoch in trained else None for epoch in epochs],
        "from": "run.log",
    }


def add_from_logs(records: list[dict]) -> tuple[list[dict], list[str]]:
    """``records`` with ``curve`` read from the run folder's log (:func:`from_run_log`) where a finished
    run's record has none; and the keys of the records that needed one and whose log was not there."""
    out, missing = [], []
    for record in records:
        if record.get("status") == "ok" and not record.get("curve"):
            metric = str((record.get("config") or {}).get("valid_metric") or "ndcg@10").lower()
            curve = from_run_log(record.get("run_dir") or "", metric, record.get("protocol") or protocol.SEEN_KEPT)
            if curve is None:
                missing.append(str(record.get("key")))
            else:
                record = {**record, "curve": curve}
        out.append(record)
    return out, missing
