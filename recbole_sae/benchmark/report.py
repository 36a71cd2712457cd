"""The report of a sweep: a markdown file with a table per dataset and protocol, and a bar plot of
test NDCG@10."""

from __future__ import annotations

from pathlib import Path

from recbole_sae import protocol
from recbole_sae.benchmark.curves import plot_curves, training_lines
from recbole_sae.benchmark.results import lacking_fields, latest_records
from recbole_sae.benchmark.stats import REPORT_METRICS, SELECT_METRIC, protocol_views, summarize
from recbole_sae.fileio import write_text_atomic
from recbole_sae.tables import fmt, markdown_table


def _bold_best(cells: list[str], values: list, higher: bool = True) -> list[str]:
    present = [v for v in values if v is not None]
    if len(present) < 2:
        return cells
    best = max(present) if higher else min(present)
    return [f"**{c}**" if v is not None and v == best else c for c, v in zip(cells, values)]


def _markdown_table(rows: list[dict], baseline: str) -> list[str]:
    headers = ["Model"] + [title for _, title in REPORT_METRICS]
    headers += ["seeds", "s/epoch", f"ΔNDCG@10 vs {baseline}", "p (paired t, NDCG@10)"]
    devices = [", ".join(row.get("devices") or []) or "?" for row in rows]
    mixed = len(set(devices)) > 1  # rows from different devices: say which, since their timings differ
    if mixed:
        headers.insert(1, "device")
    columns = []
    for key, _ in REPORT_METRICS:
        cells, means = [], []
        for row in rows:
            mean, std = row["metrics"][key]
            cells.append(fmt(mean) + ("" if std is None else f" ± {fmt(std)}"))
            means.append(mean)
        columns.append(_bold_best(cells, means))
    columns.append([str(row["n"]) for row in rows])
    per_epoch = [row["seconds_per_epoch"] for row in rows]
    columns.append(_bold_best([fmt(v, 2) for v in per_epoch], per_epoch, higher=False))
    rel = [row["rel_diff"] for row in rows]
    rel_cells = [
        "baseline" if row["baseline"] else ("n/a" if v is None else f"{v * 100:+.1f}%") for row, v in zip(rows, rel)
    ]
    # bold: the largest gain over the baseline; a loss (or +0.0%) is never "best"
    gains = [
        v if v is not None and not row["baseline"] and round(v * 100, 1) > 0 else None for row, v in zip(rows, rel)
    ]
    top = max((v for v in gains if v is not None), default=None)
    columns.append([f"**{c}**" if top is not None and v == top else c for c, v in zip(rel_cells, gains)])
    columns.append(
        ["—" if row["baseline"] else ("n/a" if row["p_value"] is None else f"{row['p_value']:.3g}") for row in rows]
    )
    cells = []
    for i, row in enumerate(rows):
        name = row["model"] + (f" ({row['grid_label']})" if row["grid_label"] else "")
        cells.append([name] + ([devices[i]] if mixed else []) + [col[i] for col in columns])
    align = ["left"] + ["right"] * (len(headers) - 1)
    return markdown_table(cells, headers, align=align, spaced_rule=False).splitlines()


def plot_ndcg(tables: dict, path, baseline: str = "SASRec"):
    """Bar plot of mean test NDCG@10 per model with std error bars, one panel per dataset."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    datasets = [d for d, rows in tables.items() if rows]
    if not datasets:
        return None
    width = max(4.0, max(len(tables[d]) for d in datasets) * 0.9)
    fig = Figure(figsize=(width * len(datasets), 4.2))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(datasets), squeeze=False)[0]
    for ax, dataset in zip(axes, datasets):
        rows = tables[dataset]
        names = [row["model"] + (f"\n({row['grid_label']})" if row["grid_label"] else "") for row in rows]
        means = [row["metrics"][SELECT_METRIC][0] for row in rows]
        stds = [row["metrics"][SELECT_METRIC][1] or 0.0 for row in rows]
        colors = ["#7f7f7f" if row["model"] == baseline else "#1f77b4" for row in rows]
        ax.bar(range(len(rows)), means, yerr=stds, capsize=4, color=colors)
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels(names, rotation=30, ha="right")
        ax.set_title(dataset)
        ax.set_ylabel("test NDCG@10 (mean ± std over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return Path(path)


def _runs_line(ok: list[dict]) -> list[str]:
    """The commits, devices and versions the finished runs ran with."""
    about = []
    commits = sorted(
        {r["git_commit"][:12] + (" (dirty)" if r.get("git_dirty") else "") for r in ok if r.get("git_commit")}
    )
    if commits:
        about.append(f"commit {', '.join(commits)}")
    devices = sorted({str(r["device"]) for r in ok if r.get("device")})
    if devices:
        about.append(f"device {', '.join(devices)}")
    envs = [r["environment"] for r in ok if r.get("environment")]
    about += sorted({f"torch {e.get('torch')}, recbole {e.get('recbole')}, python {e.get('python')}" for e in envs})
    return ["Runs: " + "; ".join(about) + ".", ""] if about else []


def _header(title, source, ok: list[dict], failed: list[dict], baseline: str, every_point: bool) -> list[str]:
    lines = [f"# {title or 'Benchmark report'}", ""]
    if source:
        lines += [f"Results: `{source}`; {len(ok)} finished runs, {len(failed)} failed runs.", ""]
    if len({r.get("source") for r in ok} - {None}) > 1:
        lines += [
            "Rows named `Model [file]` hold the runs of that results file only (the model has runs in "
            "several of the files); rows are paired by seed whatever file or device they come from.",
            "",
        ]
    lines += _runs_line(ok)
    choice = (
        "Every grid point has its own row (the baseline at its best point on validation)"
        if every_point
        else "Each model's grid point (if the sweep has a grid) is the one with the best mean *validation* NDCG@10"
    )
    lines += [
        f"Test metrics are mean ± sample std over seeds. {choice} (ties: NDCG@20, HR@10, HR@20, MRR@10 in turn). ΔNDCG@10 is the relative difference of the mean "
        f"test NDCG@10 to {baseline}; p is a two-sided paired t-test over seeds (scipy.stats.ttest_rel), "
        "n/a with fewer than two paired seeds, 1 where every pair is equal. Best value per column in bold (s/epoch: lowest; ΔNDCG@10: only a gain).",
        "",
    ]
    return lines


def _grid_point_lines(rows: list[dict]) -> list[str]:
    """The table of every grid point of each model, when some model has more than one."""
    if not any(len(row["grid"]) > 1 for row in rows):
        return []
    cells = [
        [
            row["model"],
            label or "-",
            fmt(stats["valid"]),
            fmt(stats["test"]),
            str(stats["n"]),
            "yes" if label == row["grid_label"] else "",
        ]
        for row in rows
        for label, stats in row["grid"].items()
    ]
    headers = ["Model", "grid point", "valid NDCG@10", "test NDCG@10", "seeds", "chosen"]
    align = ["left", "left", "right", "right", "right", "center"]
    table = markdown_table(cells, headers, align=align, spaced_rule=False).splitlines()
    return ["Grid points (mean over seeds; chosen on validation):", "", *table, ""]


def _failed_lines(failed: list[dict]) -> list[str]:
    if not failed:
        return []
    lines = ["## Failed runs", "", "| Model | Dataset | Seed | Grid point | Error |", "|---|---|---:|---|---|"]
    for r in failed:
        error = str(r.get("error") or "").replace("|", "\\|").replace("\n", " ")[:300]
        cells = [r.get("model"), r.get("dataset"), r.get("seed"), r.get("grid_label") or "-", error]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines.append("")
    return lines


def write_report(
    records: list[dict],
    out_dir,
    stem: str = "report",
    baseline: str | None = None,
    title: str | None = None,
    source: str | None = None,
    every_point: bool = False,
) -> dict:
    """Write ``<stem>.md``, ``<stem>-ndcg10.png`` and (when records hold learning curves)
    ``<stem>-curves.png`` into ``out_dir``; return their paths. A finished
    run's record without the fields a report needs is left out with a warning. ``every_point``: a row
    per grid point (see :func:`~recbole_sae.benchmark.stats.summarize`)."""
    records = [r for r in records if not lacking_fields(r)]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if baseline is None:
        named = [r.get("baseline") for r in records if r.get("baseline")]
        baseline = named[-1] if named else "SASRec"
    by_protocol = {name: summarize(view, baseline, every_point) for name, view in protocol_views(records).items()}
    tables = next(iter(by_protocol.values()), {})
    ok = latest_records(records, "ok")
    ok_keys = {r.get("key") for r in ok}
    failed = [r for r in latest_records(records, "error") if r.get("key") not in ok_keys]
    plot_path = out_dir / f"{stem}-ndcg10.png"
    plot = plot_ndcg(tables, plot_path, baseline) if ok else None
    curves = plot_curves(tables, out_dir / f"{stem}-curves.png") if ok else None

    lines = _header(title, source, ok, failed, baseline, every_point)
    sections = [(dataset, name, rows) for name, named in by_protocol.items() for dataset, rows in named.items()]
    for dataset, name, rows in sections:
        lines += [f"## {dataset}: {protocol.TITLES[name]}", ""]
        if baseline not in [row["model"] for row in rows]:
            lines += [f"No finished {baseline} run on {dataset}: no relative difference or test.", ""]
        lines += _markdown_table(rows, baseline) + [""]
        lines += _grid_point_lines(rows)
    if not tables:
        lines += ["No finished runs.", ""]
    if plot:
        lines += [f"![test NDCG@10 per model, {protocol.TITLES[next(iter(by_protocol))]}]({plot.name})", ""]
    for dataset, rows in tables.items():  # how the runs of the first table trained
        training = training_lines(rows)
        lines += [f"## {dataset}: training", "", *training] if training else []
    if curves:
        lines += [f"![validation curves of the runs above]({curves.name})", ""]
    lines += _failed_lines(failed)
    markdown = write_text_atomic("\n".join(lines), out_dir / f"{stem}.md")
    return {"markdown": str(markdown), "plot": str(plot) if plot else None, "curves": str(curves) if curves else None}
