"""Benchmark sweeps: many runs of the single-run pipeline, one results file, one report.

    python run_recbole_sae.py --sweep=properties/sweep/quick.yaml [--results=RESULTS.jsonl] [--report_dir=DIR]
                              [--workers=N] [--oom_retries=N] [--backend=ray [--ray_address=auto]]
    python -m recbole_sae.benchmark sweep FILE [--results RESULTS.jsonl] [--report-dir DIR] [--workers N]
                                               [--oom-retries N] [--backend ray [--ray-address auto]]
    python -m recbole_sae.benchmark report RESULTS.jsonl [--out DIR] [--baseline NAME]

Sweep file (yaml; the shipped ones are in ``properties/sweep/``)::

    name: quick                  # (str) sweep name; default results file runs/sweeps/<name>.jsonl
    models: [SASRec, GRU4Rec]    # (list) RecBole models by class name and plugin models
    datasets: [ml-100k]          # (list) dataset names, found as for a single run
    seeds: [2020, 2021]          # (list of int) one run per seed; the report pairs runs by seed
    baseline: SASRec             # (str) model the report compares against (default SASRec)
    config_files: []             # (list) yaml files, relative to the sweep file, under every run
    config: {epochs: 10}         # (dict) overrides for every run
    model_config: {GRU4Rec: {}}  # (dict) per-model overrides, over `config`
    dataset_config: {ml-100k: {}}  # (dict) per-dataset overrides, over `model_config`
    grid: {learning_rate: [0.001, 0.0005]}  # (dict) key -> values; every point of the product is run
    model_grid: {GRU4Rec: {}}    # (dict) per-model grid that replaces `grid` for that model ({} = none)
    run_timeout: 3600            # (int) seconds before a run is killed and recorded as an error (~ = none)
    torch_threads: 1             # (int) CPU threads of each run (~ = the run's `threads`, or a share of the cores
                                 #   with several workers); not part of the run key
    workers: 1                   # (int) runs executed at once (default 1); not part of the run key
    oom_retries: 2               # (int) requeues of a run out of GPU memory beside other runs (default 2,
                                 #   0 = none; the last one runs alone); not part of the run key
    backend: local               # (str) where runs execute: local (a process pool here) or ray (Ray tasks,
                                 #   see recbole_sae.ray_backend); not part of the run key
    ray_address: auto            # (str) the Ray cluster (auto, HOST:PORT; ~ = a Ray started on this machine)
    gpus_per_run: 0.5            # (float) GPUs each Ray task asks for (a share of one, or a whole number;
                                 #   ~ = the cluster's GPUs shared by the workers, at most 1)

A grid value may be a mapping, which sets several keys at once (``dropout: [{hidden_dropout_prob: 0.2,
attn_dropout_prob: 0.2}, ...]``). Each run's overrides are, lowest first: ``config`` <
``model_config[model]`` < ``dataset_config[dataset]`` < grid point < command-line ``--key=value`` of the
sweep < ``seed``; whole values are replaced, not merged. The best grid point of each model on each dataset
is the one with the highest mean *validation* NDCG@10 over seeds; test metrics never choose anything.

Every run goes through :func:`recbole_sae.quick_start.run_recbole_sae` (the pipeline, protocol and
run folder of the single-run CLI) in a fresh Python process, so that no memory or global state
(RecBole's logger, torch's thread settings, imported plugin modules) passes from one run to the next,
and so that each run's peak memory is its own. Each finished run is appended at once as one JSON
line to the results file; a rerun of the sweep skips the runs already recorded as ``ok`` (same run
key: a hash of model, dataset, seed and resolved overrides, see :func:`run_key`: an input file by its
content, not its path; for a RecBole model without the settings only this project's models read) and
retries the ones that failed. Each run's folder under ``checkpoint_dir`` is named by its key
(:func:`run_folder_name`), so a run killed mid-training (the sweep stopped, the machine gone) goes on
from its last validation when the sweep runs again (:mod:`recbole_sae.resume`). A
model that is neither a RecBole model nor a plugin model present in this installation is recorded as
an error and the sweep goes on. A sweep may be run in parts into one results file (``--models=``,
``--seeds=``, ``--datasets=`` subsets): the report written at the end of each part covers every
finished run of the sweep (same ``name``) in that file, against the sweep file's ``baseline``.

With ``workers: N`` (or ``--workers=N``) above 1, up to N runs execute at once: a pool of N threads,
each waiting on the process of its run. The sweep process stays the only writer of the results file
(appends go one at a time, each as soon as its run finishes), an error in one run does not stop the
others, and an interrupt (Ctrl-C) kills the running processes and records nothing for them. Without
``torch_threads``, each of the N runs gets ``max(1, os.cpu_count() // N)`` CPU threads (see
:func:`run_threads`), so that N runs do not oversubscribe the CPU. The estimate of the time left is
the mean run time times the runs left, divided by the workers (see :func:`time_left`).

With ``backend: ray`` (or ``--backend=ray [--ray_address=auto|HOST:PORT]``) each of those threads
waits on a Ray task instead of a local process: the task runs :func:`execute_run` on a node of the
cluster (a Ray started on this machine when no address is given), asking for the run's CPU threads and
a share of a GPU; the results file, run keys, resume, progress lines and report stay this process's,
as with the local pool (see :mod:`recbole_sae.ray_backend`).

Runs that share one GPU can run out of its memory because of the others. A run that fails with a GPU
out-of-memory error (see :func:`is_gpu_oom`) while other runs were executing is therefore not
recorded: it goes back to the end of the queue and runs again, at most ``oom_retries`` times (or
``--oom_retries=N``; 0 = never). The last of those retries runs alone (it starts only once no other
run is executing, and no run starts beside it); the ones before it run beside others like any run,
since memory may be free by then. Out of memory while alone, a run is recorded as an error like any
other. So ``oom_retries: 1`` sends a run that ran out of memory straight to running alone, and the
default 2 first tries once more beside others.

On the command line, ``--models=A,B``, ``--datasets=x`` and ``--seeds=1,2`` replace the sweep's lists,
``--grid_points=dropout=0.5`` (grid point labels as in the report, ';'-separated) runs only those points,
and any other ``--key=value`` overrides that key in every run (``--epochs=2`` for a smoke test). The
exit code is 0 when every run finished, 1 when some failed (recorded), 2 for a bad sweep file.
A record holds: ``key``, ``sweep``, ``model``, ``dataset``, ``seed``, ``grid``/``grid_label``,
``overrides``, the resolved ``config`` (the run folder's ``config.yaml``), ``best_valid`` and ``test``
metrics, ``best_epoch``, ``seconds_per_epoch``, ``seconds`` (wall time of the run process),
``peak_memory_mb`` (the process's max RSS), ``peak_gpu_memory_mb``, ``device``, ``environment``
(package versions), ``git_commit``, ``workers`` (runs at once, to read the timings in context),
``attempts`` (1, or more for a run requeued after running out of GPU memory), ``backend``/``node`` (only
for a run executed on Ray: ``ray`` and the host that ran it), ``resumed_at_epoch``
(only for a run killed before and continued from its run folder; see :mod:`recbole_sae.resume`), ``status``
(``ok``/``error``) and ``error``. At the end the sweep
writes ``<results stem>.md`` (a table per dataset) and ``<results stem>-ndcg10.png`` beside the results
file (or into ``--report_dir``); the logs of failed runs stay in ``<results stem>-logs/``.

Why this loop and not RecBole's ``HyperTuning``: HyperTuning imports hyperopt (and ray for its
parallel mode), trains through ``recbole.quick_start.run_recbole``, which bypasses this project's
config layers, plugin models, trainers and run folders, keeps its trials only in memory (a crash
loses them, nothing resumes), and has no notion of seeds or of a results file to report from.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import itertools
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import yaml

from recbole_sae import protocol, ray_backend, runlock
from recbole_sae.errors import ConfigError, FinishedRunError, RecboleSAEError
from recbole_sae.known_keys import check_sweep_keys
from recbole_sae.textlist import split_list

PACKAGE_DIR = Path(__file__).resolve().parent
PACKAGE_ROOT = PACKAGE_DIR.parent
PROPERTIES = PACKAGE_DIR / "properties"
DEFAULT_RESULTS_DIR = Path("runs") / "sweeps"

# Allowed keys of a sweep file and what they hold (listed in the error for an unknown key).
SWEEP_KEYS = {
    "name": "sweep name (str)",
    "models": "model names (list)",
    "datasets": "dataset names (list)",
    "seeds": "random seeds (list of int)",
    "baseline": "model the report compares against (str)",
    "config_files": "yaml files under every run (list)",
    "config": "overrides for every run (dict)",
    "model_config": "per-model overrides (dict of dict)",
    "dataset_config": "per-dataset overrides (dict of dict)",
    "grid": "key -> list of values (dict)",
    "model_grid": "per-model grid replacing `grid` (dict of dict)",
    "run_timeout": "seconds before a run is killed (int)",
    "torch_threads": "CPU threads of each run (int)",
    "workers": "runs executed at once (int)",
    "oom_retries": "times a run out of GPU memory beside other runs is requeued (int >= 0)",
    "backend": "where runs execute: local or ray (str)",
    "ray_address": "the Ray cluster for backend ray: auto or HOST:PORT (str)",
    "gpus_per_run": "GPUs each Ray task asks for (float)",
}

# Command-line keys of a sweep that are not run overrides.
SWEEP_CLI_KEYS = {"sweep", "results", "report_dir", "workers", "oom_retries", *ray_backend.SETTINGS}

SELECT_METRIC = "ndcg@10"  # chooses grid points, on validation only
# (result key, column title) of the report's tables: test metrics, mean ± std over seeds.
REPORT_METRICS = [
    ("ndcg@10", "NDCG@10"),
    ("ndcg@20", "NDCG@20"),
    ("hit@10", "HR@10"),
    ("hit@20", "HR@20"),
    ("mrr@10", "MRR@10"),
]


class ResultsFileWarning(UserWarning):
    """A line of a results file that could not be read (e.g. cut short by a crash) was skipped."""


# --------------------------------------------------------------------------------------------
# Sweep files


@dataclass
class Sweep:
    name: str
    path: str | None
    models: list[str]
    datasets: list[str]
    seeds: list[int]
    baseline: str = "SASRec"
    config_files: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    model_config: dict = field(default_factory=dict)
    dataset_config: dict = field(default_factory=dict)
    grid: dict = field(default_factory=dict)
    model_grid: dict = field(default_factory=dict)
    run_timeout: float | None = None
    torch_threads: int | None = None
    workers: int = 1
    oom_retries: int = 2
    backend: str = "local"  # local process pool, or ray (recbole_sae.ray_backend)
    ray_address: str | None = None  # the Ray cluster; None = a Ray started for the sweep
    gpus_per_run: float | None = None  # GPUs of each Ray task; None = shared by the workers
    cli_overrides: dict = field(default_factory=dict)
    # only these grid points (labels such as "dropout=0.5"); None = all (--grid_points=A;B)
    grid_only: list[str] | None = None


@dataclass
class RunSpec:
    """One run of a sweep."""

    model: str
    dataset: str
    seed: int
    grid: dict
    grid_label: str
    overrides: dict
    config_files: list[str]
    key: str
    legacy_key: str = ""  # the key the first results files gave this run (see run_key), when it differs

    @property
    def keys(self) -> set[str]:
        return {self.key, self.legacy_key} - {""}

    @property
    def title(self) -> str:
        text = f"{self.model} {self.dataset} seed={self.seed}"
        return f"{text} [{self.grid_label}]" if self.grid_label else text


def resolve_sweep_path(value: str) -> Path:
    """The sweep file: relative to the working directory, then to the package's properties folder."""
    path = Path(str(value)).expanduser()
    names = [path] if path.suffix in (".yaml", ".yml") else [path, path.with_name(path.name + ".yaml")]
    candidates = []
    for name in names:
        if name.is_absolute():
            candidates.append(name)
        else:
            candidates += [Path.cwd() / name, PROPERTIES / name, PACKAGE_DIR / name]
            candidates.append(PROPERTIES / "sweep" / name)
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    shipped = sorted(p.stem for p in (PROPERTIES / "sweep").glob("*.yaml"))
    looked = ", ".join(dict.fromkeys(str(c) for c in candidates))
    raise ConfigError(
        f"sweep file not found: {value} (looked at {looked}). "
        f"Shipped sweeps: {', '.join(f'sweep/{s}.yaml' for s in shipped)}"
    )


def _names(data: dict, key: str, where: str) -> list[str]:
    value = data.get(key)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: '{key}' must be a non-empty list (got {value!r})")
    if not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(f"{where}: '{key}' must list names (strings), got {value!r}")
    duplicates = sorted({v for v in value if value.count(v) > 1})
    if duplicates:
        raise ConfigError(f"{where}: '{key}' lists {', '.join(duplicates)} more than once")
    return [v.strip() for v in value]


def _mapping(data: dict, key: str, where: str, nested: bool = False) -> dict:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: '{key}' must be a mapping (got {type(value).__name__})")
    if nested:
        for name, inner in value.items():
            if inner is None:
                value[name] = {}
            elif not isinstance(inner, dict):
                raise ConfigError(f"{where}: '{key}.{name}' must be a mapping (got {inner!r})")
    return value


def _check_grid(grid: dict, where: str) -> dict:
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: grid key '{key}' needs a non-empty list of values (got {values!r})")
    return grid


def _positive_int(value, what: str, minimum: int = 1):
    """``value`` when it is an integer >= ``minimum`` (1 or 0); a ConfigError naming ``what`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive integer" if minimum == 1 else "a non-negative integer"
        raise ConfigError(f"{what} must be {kind} (got {value!r})")
    return value


def load_sweep(path, overrides: dict | None = None) -> Sweep:
    """Read and check a sweep file; ``overrides`` (from the command line) apply to every run."""
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise ConfigError(f"sweep file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{where}: not valid yaml: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: a sweep file is a mapping with keys {', '.join(SWEEP_KEYS)}")
    unknown = sorted(set(data) - set(SWEEP_KEYS))
    if unknown:
        allowed = "; ".join(f"{k}: {v}" for k, v in SWEEP_KEYS.items())
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}. Allowed keys: {allowed}")

    models = _names(data, "models", where)
    datasets = _names(data, "datasets", where)
    seeds = data.get("seeds", [2020])
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
    ):
        raise ConfigError(f"{where}: 'seeds' must be a non-empty list of integers (got {seeds!r})")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{where}: 'seeds' repeats a seed: {seeds}")

    name = str(data.get("name") or path.stem)
    if "baseline" in data:
        baseline = str(data["baseline"])
        if baseline not in models:
            raise ConfigError(f"{where}: baseline '{baseline}' is not among the models {models}")
    else:
        baseline = "SASRec" if "SASRec" in models else models[0]

    files = data.get("config_files") or []
    if isinstance(files, str):
        files = [files]
    config_files = []
    for f in files:
        full = (path.parent / str(f)).resolve()
        if not full.is_file():
            raise ConfigError(f"{where}: config file not found: {f} (relative to the sweep file: {full})")
        config_files.append(str(full))

    grid = _check_grid(_mapping(data, "grid", where), where)
    model_grid = _mapping(data, "model_grid", where, nested=True)
    for model, inner in model_grid.items():
        _check_grid(inner, f"{where}: model_grid.{model}")

    timeout = data.get("run_timeout")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0
    ):
        raise ConfigError(f"{where}: 'run_timeout' must be a positive number of seconds (got {timeout!r})")

    threads = data.get("torch_threads")
    if threads is not None:
        _positive_int(threads, f"{where}: 'torch_threads'")
    workers = data.get("workers")
    workers = Sweep.workers if workers is None else _positive_int(workers, f"{where}: 'workers'")
    oom_retries = data.get("oom_retries")
    oom_retries = Sweep.oom_retries if oom_retries is None else _positive_int(oom_retries, f"{where}: 'oom_retries'", 0)

    return Sweep(
        name=name,
        path=str(path.resolve()),
        models=models,
        datasets=datasets,
        seeds=list(seeds),
        baseline=baseline,
        config_files=config_files,
        config=_mapping(data, "config", where),
        model_config=_mapping(data, "model_config", where, nested=True),
        dataset_config=_mapping(data, "dataset_config", where, nested=True),
        grid=grid,
        model_grid=model_grid,
        run_timeout=timeout,
        torch_threads=threads,
        workers=workers,
        oom_retries=oom_retries,
        cli_overrides=dict(overrides or {}),
        **ray_backend.read_settings(data, where),
    )


def _compact(value) -> str:
    if isinstance(value, dict) and len(value) > 1 and len({_compact(v) for v in value.values()}) == 1:
        # {hidden_dropout_prob: 0.2, attn_dropout_prob: 0.2} -> 0.2; a one-key point keeps its key, so
        # {intent_personal: False} and {intent_public: False} stay two labels
        return _compact(next(iter(value.values())))
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


def grid_points(grid: dict) -> list[tuple[str, dict, dict]]:
    """``(label, point, overrides)`` for every point of the grid's cartesian product, in file order.

    ``point`` maps grid keys to the chosen values; ``overrides`` is what the point sets in the
    config (a mapping value sets all its keys). An empty grid has one point with label ``""``.
    """
    if not grid:
        return [("", {}, {})]
    keys = list(grid)
    points = []
    for values in itertools.product(*(grid[k] for k in keys)):
        point = dict(zip(keys, values))
        overrides = {}
        for key, value in point.items():
            if isinstance(value, dict):
                overrides.update(value)
            else:
                overrides[key] = value
        label = ",".join(f"{k}={_compact(v)}" for k, v in point.items())
        points.append((label, point, overrides))
    return points


@functools.lru_cache(maxsize=64)
def _digest_of(path: str, size: int, mtime_ns: int) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _file_digest(path) -> str:
    """SHA-256 of a file's bytes, read once per version of the file (a sweep plans many runs on the same
    config files and inputs, each keyed twice: see :func:`run_key`)."""
    path = Path(path).resolve()
    stat = path.stat()
    return _digest_of(str(path), stat.st_size, stat.st_mtime_ns)


# Settings that name an input of the run: the key holds what the input holds, not where it lies.
INPUT_SETTINGS = ("text_embeddings", "sasrec_checkpoint", "sae_run")


def _input_digest(value):
    """``{"sha256": ...}`` of the file ``value`` names (of ``model.pth`` for a run folder), else ``value``
    itself (a missing input fails in the run, with its own message)."""
    if not isinstance(value, str) or not value:
        return value
    path = Path(value).expanduser()
    if path.is_dir():
        path = path / "model.pth"
    if not path.is_file():
        return value
    return {"sha256": _file_digest(path)}


def _yaml_keys(folder: Path) -> set[str]:
    keys = set()
    for path in sorted(folder.glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if isinstance(data, dict):
            keys.update(str(k) for k in data)
    return keys


@functools.lru_cache(maxsize=1)
def plugin_only_settings() -> frozenset:
    """Settings that this project's model and model-family yamls declare and none of RecBole's yamls
    know: no RecBole model reads them."""
    import importlib.util

    properties = Path(__file__).resolve().parent / "properties"
    ours = _yaml_keys(properties / "model") | _yaml_keys(properties / "family")
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        return frozenset()
    root = Path(list(spec.submodule_search_locations)[0]) / "properties"
    theirs = _yaml_keys(root)
    for folder in ("model", "dataset", "quick_start_config"):
        theirs |= _yaml_keys(root / folder)
    return frozenset(ours - theirs)


def key_settings(model: str, overrides: dict) -> dict:
    """The overrides as a run key sees them: inputs by content (:data:`INPUT_SETTINGS`), and for a
    RecBole model without the settings only this project's models read (:func:`plugin_only_settings`),
    so that ``--text_embeddings=FILE`` or ``--sae_k=32`` on a sweep does not make its baselines new runs."""
    from recbole_sae import registry

    plugin = model in registry.PLUGIN_MODELS
    dropped = frozenset() if plugin else plugin_only_settings()
    return {
        key: _input_digest(value) if key in INPUT_SETTINGS else value
        for key, value in overrides.items()
        if key not in dropped
    }


def run_protocol(overrides: dict, config_files=()) -> str:
    """The headline protocol of a run: ``filter_seen`` from its overrides, else from its config
    files (the last that sets it), else from the project's ``overall.yaml``."""
    value = overrides.get("filter_seen")
    if value is None:
        for path in [*reversed(list(config_files)), PROPERTIES / "overall.yaml"]:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
            if isinstance(data, dict) and "filter_seen" in data:
                value = data["filter_seen"]
                break
    return protocol.SEEN_REMOVED if _parse_value(str(value)) is True else protocol.SEEN_KEPT


def run_key(model: str, dataset: str, seed: int, overrides: dict, config_files=(), legacy: bool = False) -> str:
    """Identity of a run: the same key means the same model, data, seed and settings.

    ``legacy=True`` gives the key of the first results files, which held every override as given
    (input paths included, for every model); resume and reports still accept their records.
    """
    settings = overrides if legacy else key_settings(model, overrides)
    payload = {
        "model": model,
        "dataset": dataset,
        "seed": seed,
        "overrides": {k: v for k, v in settings.items() if k != "filter_seen"},
        # by content, so that the key does not depend on where the repository lies
        "config_files": [_file_digest(f) for f in config_files],
    }
    # the protocol that chooses the best epoch, however it is set; runs from before there was a
    # choice ranked with seen items kept and keep their keys
    if run_protocol(overrides, config_files) == protocol.SEEN_REMOVED:
        payload["protocol"] = protocol.SEEN_REMOVED
    text = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def plan_runs(sweep: Sweep) -> list[RunSpec]:
    """All runs of a sweep: per dataset, per model, per grid point, per seed."""
    specs = []
    for dataset in sweep.datasets:
        for model in sweep.models:
            grid = sweep.model_grid.get(model, sweep.grid)
            for label, point, grid_overrides in grid_points(grid):
                if sweep.grid_only is not None and label not in sweep.grid_only:
                    continue
                for seed in sweep.seeds:
                    overrides = {
                        **sweep.config,
                        **sweep.model_config.get(model, {}),
                        **sweep.dataset_config.get(dataset, {}),
                        **grid_overrides,
                        **sweep.cli_overrides,
                        "seed": seed,
                    }
                    key = run_key(model, dataset, seed, overrides, sweep.config_files)
                    legacy = run_key(model, dataset, seed, overrides, sweep.config_files, legacy=True)
                    specs.append(
                        RunSpec(
                            model=model,
                            dataset=dataset,
                            seed=seed,
                            grid=point,
                            grid_label=label,
                            overrides=overrides,
                            config_files=list(sweep.config_files),
                            key=key,
                            legacy_key="" if legacy == key else legacy,
                        )
                    )
    return specs


# --------------------------------------------------------------------------------------------
# Results file


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
            view = view[os.write(fd, view):]
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


# What a finished run's record must hold for the reports (and the type of each).
OK_RECORD_FIELDS = {"key": str, "model": str, "dataset": str, "seed": int, "best_valid": dict, "test": dict}


def _lacking_fields(record: dict) -> list[str]:
    """The fields a record of status ``ok`` lacks (or holds with the wrong type), with a warning; none
    for other records."""
    if record.get("status") != "ok":
        return []
    lacking = [name for name, kind in OK_RECORD_FIELDS.items()
               if not isinstance(record.get(name), kind) or isinstance(record.get(name), bool)]
    if lacking:
        warnings.warn(f"{record.get('source') or 'results'}: leaving out the record of run {record.get('key')!r}, "
                      f"which lacks {', '.join(lacking)}", ResultsFileWarning, stacklevel=3)
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


# --------------------------------------------------------------------------------------------
# Running


NOT_CODE = (":(exclude)*.jsonl", ":(exclude)*.md", ":(exclude)*.png")


def git_commit() -> tuple[str | None, bool | None]:
    """``(commit, dirty)`` of the repository holding this package, ``(None, None)`` outside git.

    ``dirty``: a tracked file other than results (``.jsonl``), reports (``.md``) and plots (``.png``) differs
    from the commit.
    """
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PACKAGE_ROOT, capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return None, None
        # results files, reports and plots do not change what runs: a sweep whose results file lies in the
        # repository would otherwise mark its own later runs dirty
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *NOT_CODE],
            cwd=PACKAGE_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
        dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
        return commit.stdout.strip() or None, dirty
    except (OSError, subprocess.SubprocessError):
        return None, None


def _known_model(name: str) -> bool:
    """Whether ``name`` is a plugin model (installed or not) or a RecBole model."""
    from recbole_sae import registry

    return name in registry.PLUGIN_MODELS or name.lower() in registry.recbole_model_modules()


def _installed_plugins() -> str:
    """The plugin models of this installation, as text for error messages."""
    from recbole_sae import registry

    return ", ".join(registry.plugin_model_names()) or "none installed"


def model_problem(name: str) -> str | None:
    """Why ``name`` cannot run in this installation, or None when it can."""
    from recbole_sae import registry

    if name in registry.plugin_model_names():
        return None
    if name in registry.PLUGIN_MODELS:
        module = registry.PLUGIN_MODELS[name].split(":")[0]
        return f"plugin model '{name}' is not in this installation (module {module} not found)"
    if name.lower() in registry.recbole_model_modules():
        return None
    return f"unknown model '{name}': not a plugin model ({_installed_plugins()}) and not a RecBole model"


def _peak_rss_mb(maxrss: float) -> float:
    # ru_maxrss is in kilobytes on Linux, in bytes on macOS
    return round(maxrss / (2**20 if sys.platform == "darwin" else 2**10), 1)


def _check_stop(stop: threading.Event | None) -> None:
    """Raise KeyboardInterrupt once ``stop`` is set: the sweep was interrupted."""
    if stop is not None and stop.is_set():
        raise KeyboardInterrupt("sweep interrupted")


def _wait(proc: subprocess.Popen, timeout: float | None, stop: threading.Event | None = None):
    """Wait for ``proc``: ``(exit code, peak RSS in MB or None, timed out)``; the child's own rusage.

    Raises KeyboardInterrupt once ``stop`` is set (the caller kills ``proc``).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    if not hasattr(os, "wait4"):  # not a POSIX system: no per-child rusage
        while True:
            try:
                return proc.wait(timeout=0.1), None, False
            except subprocess.TimeoutExpired:
                _check_stop(stop)
                if deadline is not None and time.monotonic() > deadline:
                    proc.kill()
                    return proc.wait(), None, True
    timed_out = False
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        _check_stop(stop)
        if deadline is not None and time.monotonic() > deadline:
            proc.kill()
            pid, status, usage = os.wait4(proc.pid, 0)
            timed_out = True
            break
        time.sleep(0.1)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, _peak_rss_mb(usage.ru_maxrss), timed_out


# What torch and CUDA say when the GPU has no memory left: torch's OutOfMemoryError ("CUDA out of
# memory. Tried to allocate ..."), the CUDA runtime's "CUDA error: out of memory" (AcceleratorError)
# and a failed allocation of a library handle ("CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate").
GPU_OOM = re.compile(r"CUDA out of memory|CUDA error: out of memory|_STATUS_ALLOC_FAILED")


def is_gpu_oom(error: str | None) -> bool:
    """Whether a run's ``error`` text says that the GPU ran out of memory."""
    return bool(error) and GPU_OOM.search(error) is not None


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def execute_run(
    spec: RunSpec,
    logs_dir: Path,
    timeout: float | None = None,
    threads: int | None = None,
    stop: threading.Event | None = None,
) -> dict:
    """Run ``spec`` in a fresh Python process; the fields of its record that the run decides.

    ``threads`` caps the CPU threads of the run (torch, OpenMP, MKL); None keeps torch's default.
    Setting ``stop`` (from another thread) kills the process and raises KeyboardInterrupt here.
    """
    problem = model_problem(spec.model)
    if problem:
        return {"status": "error", "error": problem, "seconds": 0.0}

    logs_dir.mkdir(parents=True, exist_ok=True)
    log_path = logs_dir / f"{spec.model}-{spec.dataset}-seed{spec.seed}-{spec.key}.log"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(PACKAGE_ROOT), env.get("PYTHONPATH", "")] if p)
    env["PYTHONUNBUFFERED"] = "1"
    if threads:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[name] = str(threads)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sweep-run-") as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec_path.write_text(
            json.dumps(
                {
                    "model": spec.model,
                    "dataset": spec.dataset,
                    "config_files": spec.config_files or None,
                    # a fixed folder per run key: a run killed mid-training continues there when the sweep runs again
                    "config_dict": {**spec.overrides, "run_name": run_folder_name(spec)},
                    "torch_threads": threads,
                    "parent_pid": os.getpid(),  # the run process dies with this one
                }
            ),
            encoding="utf-8",
        )
        # this package first on the path, whatever the working directory holds
        bootstrap = (
            f"import sys; sys.path.insert(0, {str(PACKAGE_ROOT)!r}); "
            "from recbole_sae.benchmark import cli; sys.exit(cli())"
        )
        command = [sys.executable, "-c", bootstrap, "run-one", str(spec_path), str(out_path)]
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
            try:
                code, peak_mb, timed_out = _wait(proc, timeout, stop)
            finally:
                if proc.returncode is None:  # interrupted: leave no orphan behind
                    proc.kill()
                    proc.wait()
        child = {}
        if out_path.is_file():
            child = json.loads(out_path.read_text(encoding="utf-8"))
    seconds = round(time.perf_counter() - start, 2)

    fields = {
        "seconds": seconds,
        "peak_memory_mb": peak_mb if peak_mb is not None else child.get("peak_memory_mb"),
        "peak_gpu_memory_mb": child.get("peak_gpu_memory_mb"),
        "environment": child.get("environment"),
    }
    if child.get("status") == "ok" and code == 0:
        result = dict(child["result"])
        fields.update(
            status="ok",
            error=None,
            protocol=result.pop("protocol", protocol.SEEN_KEPT),
            best_valid=result.pop("best_valid", None),
            test=result.pop("test", None),
            best_epoch=result.pop("best_epoch", None),
            epochs_run=result.pop("epochs_run", None),
            seconds_per_epoch=result.pop("seconds_per_epoch", None),
            run_seconds=result.pop("seconds", None),
            device=result.pop("device", None),
            run_dir=result.pop("run_dir", None),
            config=child.get("config"),
        )
        # a run killed before and continued from its run folder: where it went on (run_seconds is this part's)
        if "resumed_at_epoch" in result:
            fields["resumed_at_epoch"] = result.pop("resumed_at_epoch")
        if child.get("replaced_run_dir"):
            fields["replaced_run_dir"] = child["replaced_run_dir"]
        for key in ("model", "dataset", "seed"):
            result.pop(key, None)
        fields["extra"] = result  # whatever the model's trainer added (SAE fidelity, ...)
        log_path.unlink(missing_ok=True)
        return fields

    if timed_out:
        error = f"run killed after the run_timeout of {timeout} s"
    elif child.get("error"):
        error = child["error"]
    else:
        reason = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        error = f"run process ended without a result ({reason}): {_tail(log_path, 5)}"
    fields.update(status="error", error=error, traceback=child.get("traceback"), log=str(log_path))
    return fields


def run_folder_name(spec: RunSpec) -> str:
    """The run folder of a sweep run under ``checkpoint_dir``: fixed by its key, so that it can resume."""
    return f"{spec.model}-{spec.dataset}-seed{spec.seed}-{spec.key}"


def _run_one(spec_path: str, out_path: str) -> int:
    """Child process: run one spec through the pipeline, write what happened to ``out_path``."""
    import resource

    sys.argv = [sys.argv[0]]  # RecBole's Config reads --key=value from sys.argv
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    runlock.die_with_parent(spec.get("parent_pid"))  # a sweep killed with SIGKILL takes its runs along
    out: dict = {"status": "error"}
    try:
        import torch

        if spec.get("torch_threads"):
            torch.set_num_threads(int(spec["torch_threads"]))
        from recbole_sae.quick_start import environment, run_recbole_sae

        out["environment"] = {**environment(), "torch_threads": torch.get_num_threads()}
        try:
            result = run_recbole_sae(spec["model"], spec["dataset"], spec["config_files"], spec["config_dict"])
        except FinishedRunError as err:
            # a finished run of this key whose record is not in this results file (the sweep stopped
            # before recording it, the file was deleted, or another file is being filled): its result may
            # come from other code, so the run is done again and the old folder kept beside it
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            moved = f"{err.run_dir}.replaced-{stamp}"
            os.replace(err.run_dir, moved)
            out["replaced_run_dir"] = moved
            result = run_recbole_sae(spec["model"], spec["dataset"], spec["config_files"], spec["config_dict"])
        config_file = Path(result["run_dir"]) / "config.yaml"
        if config_file.is_file():
            out["config"] = yaml.safe_load(config_file.read_text(encoding="utf-8"))
        out.update(status="ok", result=result)
    except Exception as err:  # recorded, not raised: the sweep goes on
        out["error"] = str(err) if isinstance(err, RecboleSAEError) else f"{type(err).__name__}: {err}"
        out["traceback"] = traceback.format_exc()[-4000:]
        traceback.print_exc()
    out["peak_memory_mb"] = _peak_rss_mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        out["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    tmp = Path(out_path).with_suffix(".partial")
    tmp.write_text(json.dumps(out, default=str), encoding="utf-8")
    os.replace(tmp, out_path)
    return 0 if out["status"] == "ok" else 1


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def default_results_path(sweep: Sweep) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in sweep.name)
    return DEFAULT_RESULTS_DIR / f"{safe}.jsonl"


def run_threads(sweep: Sweep) -> int | None:
    """CPU threads of each run of ``sweep``.

    The sweep's ``torch_threads`` when set; otherwise, with several workers, an equal share of the
    CPU cores, ``max(1, os.cpu_count() // workers)``, so that the runs at once do not oversubscribe
    the CPU; otherwise None (the run's own ``threads`` setting, see :mod:`recbole_sae.threads`).
    """
    if sweep.torch_threads is not None:
        return sweep.torch_threads
    if sweep.workers > 1:
        return max(1, (os.cpu_count() or 1) // sweep.workers)
    return None


def time_left(durations: list[float], remaining: int, workers: int = 1) -> float | None:
    """Estimated seconds until ``remaining`` runs are done: mean duration * remaining / workers.

    No more workers than runs count (the last run takes its whole duration); None before any duration.
    """
    if not durations:
        return None
    if remaining <= 0:
        return 0.0
    return sum(durations) / len(durations) * remaining / min(workers, remaining)


def runs_alone(attempt: int, oom_retries: int) -> bool:
    """Whether attempt number ``attempt`` of a run (1 = first) must run with no other run beside it:
    the last retry after running out of GPU memory beside others, attempt ``oom_retries + 1``."""
    return attempt > 1 and attempt > oom_retries


class Terminated(KeyboardInterrupt):
    """SIGTERM reached the sweep: handled like Ctrl-C, so that the run processes are killed too."""


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """In the main thread: SIGTERM (``kill``, a batch system's preemption, the end of a session) raises
    :class:`Terminated` instead of ending the process at once, which left the run processes running
    on as orphans (and a rerun of the sweep would have run beside them, in the same run folders)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_sweep(sweep: Sweep, results=None, report_dir=None, log=None) -> dict:
    """:func:`run_sweep_locked` while holding the results file's lock: one sweep per results file (a
    second one is a :class:`~recbole_sae.runlock.LockedError`), so that no run is trained or recorded twice."""
    results_path = Path(results) if results else default_results_path(sweep)
    results_path.parent.mkdir(parents=True, exist_ok=True)
    with runlock.lock_results(results_path), ray_backend.open_backend(sweep) as backend:
        return run_sweep_locked(sweep, results_path, report_dir, log, backend)


def run_sweep_locked(sweep: Sweep, results=None, report_dir=None, log=None, backend=None) -> dict:
    """Run (or resume) a sweep; append each run to ``results``; write the report at the end.

    With ``sweep.workers`` above 1, up to that many runs execute at once, each in a thread of a pool
    that waits on the run's process; this process alone appends to ``results``, one record at a time
    under a lock, as soon as each run finishes. An interrupt (Ctrl-C, or SIGTERM: :class:`Terminated`)
    kills the running processes.

    A run that fails with a GPU out-of-memory error (:func:`is_gpu_oom`) while other runs were
    executing is not recorded but put back at the end of the queue, at most ``sweep.oom_retries``
    times; the last retry (:func:`runs_alone`) starts only when no other run is executing, and no run
    starts beside it. Out of memory while it ran alone, or after its retries, it is recorded as an
    error. Every record holds its ``attempts``.

    ``backend`` (from :func:`recbole_sae.ray_backend.open_backend`) executes each run elsewhere: its
    ``execute`` replaces :func:`execute_run` and its ``threads`` :func:`run_threads`; None = here.
    """
    log = log or (lambda message: print(message, flush=True))
    results_path = Path(results) if results else default_results_path(sweep)
    logs_dir = results_path.parent / f"{results_path.stem}-logs"
    plan = plan_runs(sweep)
    done = {r.get("key") for r in read_results(results_path) if r.get("status") == "ok"}
    todo = sum(not spec.keys & done for spec in plan)
    commit, dirty = git_commit()
    workers, threads = sweep.workers, (backend.threads if backend else run_threads(sweep))
    log(
        f"sweep {sweep.name}: {len(plan)} planned runs, {len(plan) - todo} done before; "
        f"{workers} worker{'s' if workers > 1 else ''}, {threads or 'default'} threads per run; "
        + (f"on {backend.where}; " if backend else "")
        + f"results -> {results_path}"
    )

    start = time.monotonic()
    lock = threading.Lock()  # guards the results file, the counters, `executing` and the log
    stop = threading.Event()  # set on an interrupt: running runs are killed and not recorded
    durations: list[float] = []
    counts = {"executed": 0, "errors": 0}
    # run key -> the most other runs that executed at once beside it so far, for the runs executing
    executing: dict[str, int] = {}

    def progress() -> str:
        left = time_left(durations, todo - counts["executed"], workers)
        return f"elapsed {_duration(time.monotonic() - start)} | left ~{_duration(left)}"

    def alone(attempt: int) -> bool:
        return runs_alone(attempt, sweep.oom_retries)

    def run(number: int, spec: RunSpec, attempt: int = 1) -> bool:
        """Execute and record one attempt of ``spec``; True when it is to be requeued instead."""
        head = f"run {number}/{len(plan)} {spec.title}"
        with lock:
            if stop.is_set():  # interrupted before this run began
                return False
            retry = ""
            if attempt > 1:
                retry = f", retry {attempt - 1}/{sweep.oom_retries}" + (", alone" if alone(attempt) else "")
            log(f"{head} started{retry} | {progress()}")
            for key in executing:
                executing[key] = max(executing[key], len(executing))
            executing[spec.key] = len(executing)
        began = time.perf_counter()
        try:
            execute = backend.execute if backend else execute_run
            fields = execute(spec, logs_dir, sweep.run_timeout, threads, stop)
        except Exception as err:  # recorded, not raised: the other runs go on
            fields = {
                "status": "error",
                "error": f"{type(err).__name__}: {err}",
                "traceback": traceback.format_exc()[-4000:],
                "seconds": round(time.perf_counter() - began, 2),
            }
        finally:
            with lock:
                others = executing.pop(spec.key)
        record = {
            "key": spec.key,
            "sweep": sweep.name,
            "sweep_file": sweep.path,
            "baseline": sweep.baseline,
            "model": spec.model,
            "dataset": spec.dataset,
            "seed": spec.seed,
            "grid": spec.grid,
            "grid_label": spec.grid_label,
            "overrides": spec.overrides,
            "config_files": spec.config_files,
            "git_commit": commit,
            "git_dirty": dirty,
            "workers": workers,
            "attempts": attempt,
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **fields,
        }
        with lock:
            if stop.is_set():
                return False
            if record["status"] != "ok" and others and attempt <= sweep.oom_retries and is_gpu_oom(record["error"]):
                verb = "run was" if others == 1 else "runs were"
                log(
                    f"{head} out of GPU memory while {others} other {verb} executing; "
                    f"requeued (retry {attempt}/{sweep.oom_retries}), "
                    + ("will run alone" if alone(attempt + 1) else "will run again beside others")
                )
                return True
            append_record(results_path, record)
            counts["executed"] += 1
            if fields["seconds"]:
                durations.append(fields["seconds"])
            if record["status"] == "ok":
                valid, test = record["best_valid"].get(SELECT_METRIC), record["test"].get(SELECT_METRIC)
                log(
                    f"{head} finished, ok in {record['seconds']:.1f} s: valid {SELECT_METRIC}={valid}, "
                    f"test {SELECT_METRIC}={test}, peak {record['peak_memory_mb']} MB | {progress()}"
                )
            else:
                counts["errors"] += 1
                log(
                    f"{head} finished, error in {record['seconds']:.1f} s | {progress()}: {record['error']}"
                    + (f" (log: {record['log']})" if record.get("log") else "")
                )
        return False

    pending = []
    for number, spec in enumerate(plan, 1):
        if spec.keys & done:
            log(f"run {number}/{len(plan)} {spec.title}: done before, skipped")
        else:
            pending.append((number, spec))
    with _sigterm_as_interrupt():
        if workers == 1:
            for number, spec in pending:
                run(number, spec)  # an interrupt reaches execute_run here, which kills its process
        else:
            queue = deque((number, spec, 1) for number, spec in pending)  # requeued runs go to the end
            running: dict = {}  # future -> (number, spec, attempt)
            pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sweep-run")
            try:
                while queue or running:
                    # first come first started; a run on its last retry waits until no run executes,
                    # and no run starts beside it
                    while queue and len(running) < workers and not any(alone(a) for _, _, a in running.values()):
                        if alone(queue[0][2]) and running:
                            break
                        number, spec, attempt = queue.popleft()
                        running[pool.submit(run, number, spec, attempt)] = (number, spec, attempt)
                    # a timeout, so that an interrupt is seen whichever thread it reached
                    finished, _ = wait_futures(running, timeout=1.0, return_when=FIRST_COMPLETED)
                    for future in finished:
                        number, spec, attempt = running.pop(future)
                        if future.result():  # run() records the errors of runs; this raises the sweep's own
                            queue.append((number, spec, attempt + 1))
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)  # no further run starts
                stop.set()  # each running run kills its process within 0.1 s and records nothing
                raise
            finally:
                pool.shutdown(wait=True, cancel_futures=True)  # the threads end soon after their processes

    if logs_dir.is_dir() and not any(logs_dir.iterdir()):
        logs_dir.rmdir()  # logs are kept for failed runs only
    # the whole sweep as far as the results file holds it: a sweep run in parts (--models=, --seeds=) into one file
    # gets one report of all its parts, not of the last part alone
    keys = set().union(*(spec.keys for spec in plan))
    records = [r for r in read_results(results_path) if r.get("key") in keys or r.get("sweep") == sweep.name]
    report = write_report(
        records,
        Path(report_dir) if report_dir else results_path.parent,
        results_path.stem,
        baseline=sweep.baseline,
        title=f"Benchmark sweep: {sweep.name}",
        source=str(results_path),
    )
    executed, errors, skipped = counts["executed"], counts["errors"], len(plan) - len(pending)
    log(
        f"sweep {sweep.name} finished in {_duration(time.monotonic() - start)}: {executed} executed, "
        f"{skipped} skipped, {errors} failed; report {report['markdown']}"
        + (f", plot {report['plot']}" if report["plot"] else "")
    )
    return {
        "runs": len(plan),
        "executed": executed,
        "skipped": skipped,
        "errors": errors,
        "results": str(results_path),
        **report,
    }


# --------------------------------------------------------------------------------------------
# Report


def mean_std(values) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n - 1); the std is None for fewer than two values."""
    values = [float(v) for v in values]
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def relative_difference(value: float | None, base: float | None) -> float | None:
    """``(value - base) / base``, None when either is missing or the base is 0."""
    if value is None or base is None or base == 0:
        return None
    return (value - base) / base


def paired_pvalue(values: dict, base_values: dict) -> float | None:
    """Two-sided paired t-test (scipy.stats.ttest_rel) over the seeds both have; None below 2 pairs.

    The same value on every seed gives 1.0 (no difference), where the t statistic itself is undefined.
    """
    seeds = sorted(set(values) & set(base_values))
    if len(seeds) < 2:
        return None
    if all(values[s] == base_values[s] for s in seeds):
        return 1.0
    from scipy import stats

    with warnings.catch_warnings():  # nearly equal pairs: scipy warns of precision loss, p is still given
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(stats.ttest_rel([values[s] for s in seeds], [base_values[s] for s in seeds]).pvalue)
    return None if math.isnan(p) else p


def _groups(records: list[dict]) -> dict:
    """``{dataset: {model: {grid_label: {seed: record}}}}`` of the last ok record per run."""
    groups: dict = {}
    for record in latest_records(records, "ok"):
        by_label = groups.setdefault(record["dataset"], {}).setdefault(record["model"], {})
        by_label.setdefault(record.get("grid_label") or "", {})[record["seed"]] = record
    return groups


def choose_grid_points(records: list[dict], metric: str = SELECT_METRIC) -> dict:
    """``{(dataset, model): grid_label}``: the highest mean *validation* ``metric`` over seeds.

    Test metrics play no part. RecBole rounds metrics to 4 digits, so ties happen: they go to the
    mean validation value of the report's other metrics in turn (NDCG@20, HR@10, HR@20, MRR@10),
    then to the grid label in sorted order, never to the order in which runs finished.
    """
    order = [metric] + [key for key, _ in REPORT_METRICS if key != metric]

    def score(by_seed: dict) -> tuple:
        means = []
        for key in order:
            values = [r["best_valid"][key] for r in by_seed.values() if key in r.get("best_valid", {})]
            means.append(mean_std(values)[0] if values else float("-inf"))
        return tuple(means)

    chosen = {}
    for dataset, models in _groups(records).items():
        for model, labels in models.items():
            ranked = sorted(labels.items(), key=lambda item: item[0])  # label order decides full ties
            chosen[(dataset, model)] = max(ranked, key=lambda item: score(item[1]))[0]
    return chosen


def summarize(records: list[dict], baseline: str = "SASRec", every_point: bool = False) -> dict:
    """Per dataset, one row per model at its chosen grid point (see :func:`choose_grid_points`);
    ``every_point``: one row per model and grid point (an ablation table: each variant against the
    baseline at the baseline's chosen point, paired by seed)."""
    groups = _groups(records)
    chosen = choose_grid_points(records)
    tables = {}
    for dataset, models in groups.items():
        rows = []
        base = models.get(baseline, {}).get(chosen.get((dataset, baseline)), {}) if baseline in models else {}
        base_ndcg = {seed: r["test"][SELECT_METRIC] for seed, r in base.items()}
        base_mean, _ = mean_std(base_ndcg.values())
        order = sorted(models, key=lambda m: m != baseline)  # the baseline first, then in order of appearance
        pairs = [
            (model, label)
            for model in order
            for label in (models[model] if every_point and model != baseline else [chosen[(dataset, model)]])
        ]
        for model, label in pairs:
            labels = models[model]
            by_seed = labels[label]
            seeds = sorted(by_seed)
            metrics = {key: mean_std(by_seed[s]["test"][key] for s in seeds) for key, _ in REPORT_METRICS}
            per_epoch = [by_seed[s].get("seconds_per_epoch") for s in seeds]
            per_epoch = [v for v in per_epoch if v is not None]
            ndcg = {s: by_seed[s]["test"][SELECT_METRIC] for s in seeds}
            is_base = model == baseline
            rows.append(
                {
                    "model": model,
                    "grid_label": label,
                    "seeds": seeds,
                    "n": len(seeds),
                    "metrics": metrics,
                    "valid": mean_std(by_seed[s]["best_valid"][SELECT_METRIC] for s in seeds)[0],
                    "seconds_per_epoch": mean_std(per_epoch)[0],
                    "devices": sorted({_device_kind(by_seed[s].get("device")) for s in seeds} - {""}),
                    "baseline": is_base,
                    "rel_diff": None if is_base else relative_difference(metrics[SELECT_METRIC][0], base_mean),
                    "p_value": None if is_base else paired_pvalue(ndcg, base_ndcg),
                    "grid": {} if every_point else {
                        lab: {
                            "valid": mean_std(r["best_valid"][SELECT_METRIC] for r in recs.values())[0],
                            "test": mean_std(r["test"][SELECT_METRIC] for r in recs.values())[0],
                            "n": len(recs),
                        }
                        for lab, recs in labels.items()
                    },
                }
            )
        tables[dataset] = rows
    return tables


def protocol_views(records: list[dict]) -> dict:
    """``{protocol: ok records}``, each with its ``best_valid`` and ``test`` under that protocol
    (records that lack it left out), the papers' protocol first: a report never mixes the two."""
    views = {}
    for name in protocol.PROTOCOLS:
        view = []
        for record in records:
            valid, test = protocol.metrics(record, name, "best_valid"), protocol.metrics(record, name, "test")
            if record.get("status") == "ok" and valid is not None and test is not None:
                view.append({**record, "best_valid": valid, "test": test})
        if view:
            views[name] = view
    return views


def _device_kind(device) -> str:
    """``cuda``/``cpu``/...: the device a record ran on, without its index."""
    return str(device or "").split(":")[0]


def _fmt(value, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


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
            cells.append(_fmt(mean) + ("" if std is None else f" ± {_fmt(std)}"))
            means.append(mean)
        columns.append(_bold_best(cells, means))
    columns.append([str(row["n"]) for row in rows])
    per_epoch = [row["seconds_per_epoch"] for row in rows]
    columns.append(_bold_best([_fmt(v, 2) for v in per_epoch], per_epoch, higher=False))
    rel = [row["rel_diff"] for row in rows]
    rel_cells = [
        "baseline" if row["baseline"] else ("n/a" if v is None else f"{v * 100:+.1f}%") for row, v in zip(rows, rel)
    ]
    # bold: the largest gain over the baseline; a loss (or +0.0%) is never "best"
    gains = [v if v is not None and not row["baseline"] and round(v * 100, 1) > 0 else None for row, v in zip(rows, rel)]
    top = max((v for v in gains if v is not None), default=None)
    columns.append([f"**{c}**" if top is not None and v == top else c for c, v in zip(rel_cells, gains)])
    columns.append(
        ["—" if row["baseline"] else ("n/a" if row["p_value"] is None else f"{row['p_value']:.3g}") for row in rows]
    )
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|"]
    for i, row in enumerate(rows):
        name = row["model"] + (f" ({row['grid_label']})" if row["grid_label"] else "")
        lines.append("| " + " | ".join([name] + ([devices[i]] if mixed else []) + [col[i] for col in columns]) + " |")
    return lines


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


def write_report(
    records: list[dict],
    out_dir,
    stem: str = "report",
    baseline: str | None = None,
    title: str | None = None,
    source: str | None = None,
    every_point: bool = False,
) -> dict:
    """Write ``<stem>.md`` and ``<stem>-ndcg10.png`` into ``out_dir``; return their paths. A finished
    run's record without the fields a report needs is left out with a warning. ``every_point``: a row
    per grid point (see :func:`summarize`)."""
    records = [r for r in records if not _lacking_fields(r)]
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

    lines = [f"# {title or 'Benchmark report'}", ""]
    if source:
        lines += [f"Results: `{source}`; {len(ok)} finished runs, {len(failed)} failed runs.", ""]
    if len({r.get("source") for r in ok} - {None}) > 1:
        lines += [
            "Rows named `Model [file]` hold the runs of that results file only (the model has runs in "
            "several of the files); rows are paired by seed whatever file or device they come from.",
            "",
        ]
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
    about += sorted(
        {f"torch {e.get('torch')}, recbole {e.get('recbole')}, python {e.get('python')}" for e in envs}
    )
    if about:
        lines += ["Runs: " + "; ".join(about) + ".", ""]
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
    sections = [(dataset, name, rows) for name, named in by_protocol.items() for dataset, rows in named.items()]
    for dataset, name, rows in sections:
        lines += [f"## {dataset}: {protocol.TITLES[name]}", ""]
        if baseline not in [row["model"] for row in rows]:
            lines += [f"No finished {baseline} run on {dataset}: no relative difference or test.", ""]
        lines += _markdown_table(rows, baseline) + [""]
        if any(len(row["grid"]) > 1 for row in rows):
            lines += [
                "Grid points (mean over seeds; chosen on validation):",
                "",
                "| Model | grid point | valid NDCG@10 | test NDCG@10 | seeds | chosen |",
                "|---|---|---:|---:|---:|:---:|",
            ]
            for row in rows:
                for label, stats in row["grid"].items():
                    mark = "yes" if label == row["grid_label"] else ""
                    cells = [row["model"], label or "-", _fmt(stats["valid"]), _fmt(stats["test"]), str(stats["n"]), mark]
                    lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
    if not tables:
        lines += ["No finished runs.", ""]
    if plot:
        lines += [f"![test NDCG@10 per model, {protocol.TITLES[next(iter(by_protocol))]}]({plot.name})", ""]
    if failed:
        lines += ["## Failed runs", "", "| Model | Dataset | Seed | Grid point | Error |", "|---|---|---:|---|---|"]
        for r in failed:
            error = str(r.get("error") or "").replace("|", "\\|").replace("\n", " ")[:300]
            cells = [r.get("model"), r.get("dataset"), r.get("seed"), r.get("grid_label") or "-", error]
            lines.append("| " + " | ".join(str(c) for c in cells) + " |")
        lines.append("")
    markdown = out_dir / f"{stem}.md"
    markdown.write_text("\n".join(lines), encoding="utf-8")
    return {"markdown": str(markdown), "plot": str(plot) if plot else None}


# --------------------------------------------------------------------------------------------
# Command lines


def _parse_value(text: str):
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _grid_selection(sweep: Sweep, text: str) -> list[str]:
    """The grid point labels of ``--grid_points=A;B``, each checked against the sweep's grids."""
    wanted = [label.strip() for label in text.split(";") if label.strip()]
    known = {label for grid in [sweep.grid, *sweep.model_grid.values()] for label, _, _ in grid_points(grid)}
    unknown = [label for label in wanted if label not in known]
    if not wanted or unknown:
        raise ConfigError(
            f"--grid_points: {'no grid point given' if not wanted else 'unknown grid point(s) ' + '; '.join(unknown)}. "
            f"The sweep's grid points: {'; '.join(sorted(known)) or '(no grid)'} (separate several with ';')"
        )
    return wanted


def main(args: dict) -> int:
    """``run_recbole_sae.py --sweep=FILE [--results=R.jsonl] [--report_dir=DIR] [--workers=N] [--oom_retries=N]
    [--grid_points=A;B] [--backend=ray [--ray_address=A] [--gpus_per_run=F]] [--key=v ...]``.

    ``--models``, ``--datasets`` and ``--seeds`` (comma-separated) replace the sweep's lists;
    ``--grid_points`` (labels as in the report, e.g. ``dropout=0.5``, ';'-separated) runs only those
    points of the grid (a model whose grid has none of them runs nothing); the runs keep the keys they
    have in the whole sweep;
    ``--workers`` replaces the sweep's ``workers`` (runs at once) and ``--oom_retries`` its
    ``oom_retries``; ``--backend``, ``--ray_address`` and ``--gpus_per_run`` replace the sweep's
    (:mod:`recbole_sae.ray_backend`); any other
    ``--key=value`` overrides that key in every run. Returns 0 when every run finished, 1 when some
    failed (they are recorded), 2 for a bad sweep file or argument.
    """
    args = dict(args)
    try:
        if not args.get("sweep"):
            raise ConfigError("--sweep needs a sweep file, e.g. --sweep=sweep/quick.yaml")
        for singular in ("model", "dataset", "seed"):
            if singular in args:
                raise ConfigError(
                    f"--{singular} does not apply to a sweep; use --{singular}s=a,b to replace the sweep's list"
                )
        path = resolve_sweep_path(args.pop("sweep"))
        results = args.pop("results", None)
        report_dir = args.pop("report_dir", None)
        workers = args.pop("workers", None)
        oom_retries = args.pop("oom_retries", None)
        grid_only = args.pop("grid_points", None)
        where = {k: args.pop(k) for k in ray_backend.SETTINGS if k in args}  # --backend=ray ...
        if "gpus_per_run" in where:
            where["gpus_per_run"] = _parse_value(str(where["gpus_per_run"]))
        lists = {k: args.pop(k) for k in ("models", "datasets", "seeds") if k in args}
        overrides = {key: _parse_value(value) for key, value in args.items()}
        sweep = load_sweep(path, overrides)
        for key, value in lists.items():
            items = split_list(value)
            if not items:
                raise ConfigError(f"--{key} is empty")
            if key == "seeds":
                try:
                    items = [int(v) for v in items]
                except ValueError:
                    raise ConfigError(f"--seeds must be integers, got {value}") from None
            setattr(sweep, key, items)
        if grid_only is not None:
            sweep.grid_only = _grid_selection(sweep, str(grid_only))
        if workers is not None:
            sweep.workers = _positive_int(_parse_value(str(workers)), "--workers")
        if oom_retries is not None:
            sweep.oom_retries = _positive_int(_parse_value(str(oom_retries)), "--oom_retries", 0)
        for key, value in ray_backend.read_settings(where).items():
            setattr(sweep, key, value)
        ray_backend.check_settings(sweep)
        check_sweep_keys(sweep, SWEEP_KEYS)  # --bakend=ray or a typo in the sweep is an error, not ignored
        unknown = [name for name in sweep.models if not _known_model(name)]
        if unknown:
            raise ConfigError(
                f"unknown model(s) {', '.join(unknown)} in the sweep's models: use a plugin model ({_installed_plugins()}) "
                "or a RecBole model by its class name (e.g. SASRec, BERT4Rec, GRU4Rec)"
            )
        summary = run_sweep(sweep, results, report_dir)
    except RecboleSAEError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Terminated:
        print(
            "sweep stopped by SIGTERM: its running runs were killed and not recorded; run the same command "
            "again to go on (finished runs are skipped, killed ones resume from their last validation)",
            file=sys.stderr,
        )
        return 128 + signal.SIGTERM
    return 0 if summary["errors"] == 0 else 1


def cli(argv: list[str] | None = None) -> int:
    """``python -m recbole_sae.benchmark {report,sweep,run-one} ...``."""
    parser = argparse.ArgumentParser(
        prog="python -m recbole_sae.benchmark", description="Benchmark sweeps and reports."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    report = sub.add_parser("report", help="write the markdown report and NDCG@10 plot of a results file")
    report.add_argument("results", nargs="+", help="results file(s) (JSONL) written by sweeps; several make one report")
    report.add_argument("--out", help="output folder (default: the (first) results file's folder)")
    report.add_argument("--name", help="file name of the report, without .md (default: the results file's name; "
                        "with several files their names joined by '+')")
    report.add_argument("--baseline", help="model to compare against (default: the sweep's baseline, else SASRec)")
    report.add_argument("--sweep", help="only the records of this sweep name")
    report.add_argument("--by_grid_point", "--by-grid-point", action="store_true",
                        help="a row per model and grid point (an ablation table) instead of each model's best point")
    sweep = sub.add_parser("sweep", help="run a sweep file (same as run_recbole_sae.py --sweep=FILE)")
    sweep.add_argument("file")
    sweep.add_argument("--results")
    sweep.add_argument("--report-dir")
    sweep.add_argument("--workers", help="runs executed at once (default: the sweep's `workers`, else 1)")
    sweep.add_argument(
        "--oom-retries",
        "--oom_retries",
        dest="oom_retries",
        help="requeues of a run out of GPU memory beside other runs (default: the sweep's `oom_retries`, else 2)",
    )
    sweep.add_argument("--backend", choices=ray_backend.BACKENDS, help="where runs execute (default: local)")
    for key in ("ray_address", "gpus_per_run"):
        sweep.add_argument(f"--{key.replace('_', '-')}", f"--{key}", dest=key, help="for --backend=ray: see README")
    one = sub.add_parser("run-one", help="(internal) run one spec in this process")
    one.add_argument("spec")
    one.add_argument("out")
    ns = parser.parse_args(argv)

    if ns.command == "run-one":
        return _run_one(ns.spec, ns.out)
    if ns.command == "sweep":
        args = {"sweep": ns.file}
        if ns.results:
            args["results"] = ns.results
        if ns.report_dir:
            args["report_dir"] = ns.report_dir
        if ns.workers is not None:
            args["workers"] = ns.workers
        if ns.oom_retries is not None:
            args["oom_retries"] = ns.oom_retries
        args.update({k: getattr(ns, k) for k in ray_backend.SETTINGS if getattr(ns, k) is not None})
        return main(args)
    files = [Path(path) for path in ns.results]
    missing = [str(path) for path in files if not path.is_file()]
    if missing:
        print(f"error: results file not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    stems = [results_stem(path) for path in files]  # read_many names rows by these
    if len(set(stems)) < len(stems):
        print(f"error: two results files have the same name ({', '.join(map(str, files))}): their rows could "
              "not be told apart; copy one under another name", file=sys.stderr)
        return 2
    records = read_many(files)
    if ns.sweep:
        records = [r for r in records if r.get("sweep") == ns.sweep]
    stem = ns.name or "+".join(stems)
    models = {r.get("model") for r in records}
    if ns.baseline and ns.baseline not in models:
        named = ", ".join(sorted(str(m) for m in models if m))
        print(f"error: no runs of the baseline {ns.baseline!r} in {', '.join(map(str, files))}; models: {named}",
              file=sys.stderr)
        return 2
    out = write_report(
        records,
        Path(ns.out) if ns.out else files[0].parent,
        stem,
        baseline=ns.baseline,
        title=f"Benchmark report: {ns.sweep or stem}",
        source=", ".join(str(path) for path in files),
        every_point=ns.by_grid_point,
    )
    print(f"report: {out['markdown']}" + (f"\nplot: {out['plot']}" if out["plot"] else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
