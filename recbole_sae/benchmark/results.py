"""The results file of a sweep: one JSON line per finished run, appended as each run ends and read
back to skip finished runs and to write reports."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path


class ResultsFileWarning(UserWarning):
    """A line of a results file that could not be read (e.g. cut short by a crash) was skipped."""


def append_record(path, record: dict) -> None:
    """Append ``record`` as one JSON line: one write of the whole line, then flush to disk.

    A writer killed mid-write can at worst leave a last line without its newline; the next append
    starts on a fresh line so that the damage stays confined to that line, which readers skip.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, default=str) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size:
            with open(path, "rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    line = b"\n" + line
        view = memoryview(line)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def read_results(path) -> list[dict]:
    """The records of a results file, in order; unreadable lines are skipped with a warning."""
    path = Path(path)
    if not path.is_file():
        return []
    lines = path.read_bytes().split(b"\n")
    records = []
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except ValueError:
            if number == len(lines):  # no newline after it: a write that was cut short
                warnings.warn(
                    f"{path}: ignoring a partial last line ({len(raw)} bytes), left by an interrupted write",
                    ResultsFileWarning,
                    stacklevel=2,
                )
            else:
                warnings.warn(f"{path}: ignoring unreadable line {number}", ResultsFileWarning, stacklevel=2)
            continue
        records.append(record)
    return records


def finished_keys(path) -> set:
    """The run keys recorded as ``ok`` in the results file ``path``: a rerun of the sweep skips them."""
    return {r.get("key") for r in read_results(path) if r.get("status") == "ok"}


# What a finished run's record must hold for the reports (and the type of each).
OK_RECORD_FIELDS = {"key": str, "model": str, "dataset": str, "seed": int, "best_valid": dict, "test": dict}
COMPARED = "ndcg@10"  # the metric reports choose grid points by (validation) and compare models by (test)


def lacking_fields(record: dict) -> list[str]:
    """The fields a record of status ``ok`` lacks (or holds with the wrong type), with a warning; none
    for other records."""
    if record.get("status") != "ok":
        return []
    lacking = [
        name
        for name, kind in OK_RECORD_FIELDS.items()
        if not isinstance(record.get(name), kind) or isinstance(record.get(name), bool)
    ]
    unmeasured = [
        f"{name} {COMPARED}" for name in ("best_valid", "test") if name not in lacking and COMPARED not in record[name]
    ]
    lacking += unmeasured
    if lacking:
        hint = " (reports compare NDCG@10: run with NDCG in metrics and 10 in topk)" if unmeasured else ""
        warnings.warn(
            f"{record.get('source') or 'results'}: leaving out the record of run {record.get('key')!r}, "
            f"which lacks {', '.join(lacking)}{hint}",
            ResultsFileWarning,
            stacklevel=3,
        )
    return lacking


def results_stem(path) -> str:
    """A results file's name without ``.jsonl``: its rows' ``source`` in a report of several files."""
    return Path(path).name.removesuffix(".jsonl")


def read_many(paths) -> list[dict]:
    """The records of one or more results files, for one report.

    Each record gets ``source`` (its file's name without ``.jsonl``). A model whose finished runs on a
    dataset lie in more than one of the files (the same model on a CPU and on a GPU, or before and
    after a change) gets one row per file: its name becomes ``"Model [source]"`` and its run keys are
    prefixed with the source, so that no row mixes runs of different files. Rows of different files
    are compared by seed like any others (a relative difference and a paired test across devices).
    """
    per_file = [(results_stem(path), read_results(path)) for path in paths]
    if len(per_file) == 1:
        return [{**r, "source": per_file[0][0]} for r in per_file[0][1]]
    sources: dict = {}
    for stem, records in per_file:
        for r in latest_records(records, "ok"):
            sources.setdefault((r.get("dataset"), r.get("model")), set()).add(stem)
    combined = []
    for stem, records in per_file:
        for r in records:
            r = {**r, "source": stem}
            if len(sources.get((r.get("dataset"), r.get("model")), ())) > 1:
                r["model"] = f"{r['model']} [{stem}]"
                r["key"] = f"{stem}:{r.get('key')}"
            combined.append(r)
    return combined


def latest_records(records: list[dict], status: str | None = "ok") -> list[dict]:
    """The last record of each run key (with the given status), in first-seen order."""
    latest = {}
    for record in records:
        if status is None or record.get("status") == status:
            latest[record.get("key")] = record
    return list(latest.values())
