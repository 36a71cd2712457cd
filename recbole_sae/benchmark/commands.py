"""The command lines of sweeps: ``run_recbole_sae.py --sweep=FILE ...`` (:func:`main`) and
``python -m recbole_sae.benchmark sweep|report|curves ...`` (:func:`cli`); see docs/sweeps.md."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import warnings
from pathlib import Path

from recbole_sae import ray_backend
from recbole_sae.benchmark import curves
from recbole_sae.benchmark.process import installed_plugins, known_model, run_one
from recbole_sae.benchmark.report import write_report
from recbole_sae.benchmark.results import read_many, read_results, results_stem
from recbole_sae.benchmark.runner import Terminated, run_sweep
from recbole_sae.benchmark.spec import (
    SWEEP_KEYS,
    Sweep,
    grid_points,
    load_sweep,
    parse_value,
    plan_runs,
    positive_int,
    resolve_sweep_path,
)
from recbole_sae.errors import ConfigError, DatasetNotFoundError, RecboleSAEError
from recbole_sae.fileio import write_text_atomic
from recbole_sae.known_keys import check_sweep_keys
from recbole_sae.textlist import split_list


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


def _check_arguments(args: dict) -> None:
    if not args.get("sweep"):
        raise ConfigError("--sweep needs a sweep file, e.g. --sweep=sweep/quick.yaml")
    for singular in ("model", "dataset", "seed"):
        if singular in args:
            raise ConfigError(
                f"--{singular} does not apply to a sweep; use --{singular}s=a,b to replace the sweep's list"
            )


def _replace_lists(sweep: Sweep, lists: dict) -> None:
    """``--models=A,B``, ``--datasets=x`` and ``--seeds=1,2`` replace the sweep's lists."""
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


def _sweep_from_arguments(args: dict) -> tuple[Sweep, str | None, str | None]:
    """The sweep that ``args`` (the command line, as a dict) asks for, checked; its results file and
    report folder."""
    args = dict(args)
    _check_arguments(args)
    path = resolve_sweep_path(args.pop("sweep"))
    results = args.pop("results", None)
    report_dir = args.pop("report_dir", None)
    workers = args.pop("workers", None)
    oom_retries = args.pop("oom_retries", None)
    grid_only = args.pop("grid_points", None)
    where = {k: args.pop(k) for k in ray_backend.SETTINGS if k in args}  # --backend=ray ...
    if "gpus_per_run" in where:
        where["gpus_per_run"] = parse_value(str(where["gpus_per_run"]))
    lists = {k: args.pop(k) for k in ("models", "datasets", "seeds") if k in args}
    overrides = {key: parse_value(value) for key, value in args.items()}
    sweep = load_sweep(path, overrides)
    _replace_lists(sweep, lists)
    if grid_only is not None:
        sweep.grid_only = _grid_selection(sweep, str(grid_only))
    if workers is not None:
        sweep.workers = positive_int(parse_value(str(workers)), "--workers")
    if oom_retries is not None:
        sweep.oom_retries = positive_int(parse_value(str(oom_retries)), "--oom_retries", 0)
    for key, value in ray_backend.read_settings(where).items():
        setattr(sweep, key, value)
    ray_backend.check_settings(sweep)
    check_sweep_keys(sweep, SWEEP_KEYS)  # --bakend=ray or a typo in the sweep is an error, not ignored
    unknown = [name for name in sweep.models if not known_model(name)]
    if unknown:
        raise ConfigError(
            f"unknown model(s) {', '.join(unknown)} in the sweep's models: use a plugin model ({installed_plugins()}) "
            "or a RecBole model by its class name (e.g. SASRec, BERT4Rec, GRU4Rec)"
        )
    _check_run_settings(sweep)
    return sweep, results, report_dir


def _check_run_settings(sweep: Sweep) -> None:
    """Build the config of every planned run (one per setting, seeds aside) before the first run
    starts: a value one grid point cannot take (``hidden_dropout_prob: 7``) or a dataset that is not
    there stops the sweep now, not when that run's turn comes hours later. On Ray the data may live
    only on the workers, so a dataset missing here is left to them."""
    from recbole_sae.config import Config

    checked = set()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")  # RecBole's Config sets it from gpu_id
    try:
        for spec in plan_runs(sweep):
            settings = {k: v for k, v in spec.overrides.items() if k != "seed"}
            key = (spec.model, spec.dataset, json.dumps(settings, sort_keys=True, default=str))
            if key in checked:
                continue
            checked.add(key)
            try:
                Config(spec.model, spec.dataset, spec.config_files or None, settings)
            except DatasetNotFoundError:
                if sweep.backend != "ray":
                    raise
            except ConfigError as err:
                raise ConfigError(f"the sweep's run {spec.title}: {err}") from None
    finally:
        if visible is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = visible


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
    try:
        sweep, results, report_dir = _sweep_from_arguments(args)
        summary = run_sweep(sweep, results, report_dir)
    except RecboleSAEError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM (Terminated)
        by = "SIGTERM" if isinstance(err, Terminated) else "Ctrl-C"
        print(
            f"sweep stopped by {by}: its running runs were killed and not recorded; run the same command "
            "again to go on (finished runs are skipped, killed ones resume from their last saved state)",
            file=sys.stderr,
        )
        return 128 + (signal.SIGTERM if isinstance(err, Terminated) else signal.SIGINT)
    return 0 if summary["errors"] == 0 else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m recbole_sae.benchmark", description="Benchmark sweeps and reports."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    report = sub.add_parser("report", help="write the markdown report and NDCG@10 plot of a results file")
    report.add_argument("results", nargs="+", help="results file(s) (JSONL) written by sweeps; several make one report")
    report.add_argument("--out", help="output folder (default: the (first) results file's folder)")
    report.add_argument(
        "--name",
        help="file name of the report, without .md (default: the results file's name; "
        "with several files their names joined by '+')",
    )
    report.add_argument("--baseline", help="model to compare against (default: the sweep's baseline, else SASRec)")
    report.add_argument("--sweep", help="only the records of this sweep name")
    by_point = "a row per model and grid point (an ablation table) instead of each model's best point"
    report.add_argument("--by_grid_point", "--by-grid-point", action="store_true", help=by_point)
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
    fill = sub.add_parser(
        "curves",
        help="copy a results file, adding to each finished run's record without a learning curve the one "
        "its run folder's run.log holds",
    )
    fill.add_argument("results", help="results file (JSONL)")
    fill.add_argument("--out", required=True, help="the new results file (not the one read)")
    one = sub.add_parser("run-one", help="(internal) run one spec in this process")
    one.add_argument("spec")
    one.add_argument("out")
    return parser


def _sweep_command(ns: argparse.Namespace) -> int:
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


def _report_command(ns: argparse.Namespace) -> int:
    files = [Path(path) for path in ns.results]
    missing = [str(path) for path in files if not path.is_file()]
    if missing:
        print(f"error: results file not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    stems = [results_stem(path) for path in files]  # read_many names rows by these
    if len(set(stems)) < len(stems):
        print(
            f"error: two results files have the same name ({', '.join(map(str, files))}): their rows could "
            "not be told apart; copy one under another name",
            file=sys.stderr,
        )
        return 2
    records = read_many(files)
    if ns.sweep:
        records = [r for r in records if r.get("sweep") == ns.sweep]
    stem = ns.name or "+".join(stems)
    models = {r.get("model") for r in records}
    if ns.baseline and ns.baseline not in models:
        named = ", ".join(sorted(str(m) for m in models if m))
        print(
            f"error: no runs of the baseline {ns.baseline!r} in {', '.join(map(str, files))}; models: {named}",
            file=sys.stderr,
        )
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
    print(f"report: {out['markdown']}" + "".join(f"\n{name}: {out[name]}" for name in ("plot", "curves") if out[name]))
    return 0


def _curves_command(ns: argparse.Namespace) -> int:
    source, target = Path(ns.results), Path(ns.out)
    if not source.is_file():
        print(f"error: results file not found: {source}", file=sys.stderr)
        return 2
    if target.resolve() == source.resolve() or target.is_dir():
        print(f"error: --out={target} must be a new file beside {source}, not it or a folder", file=sys.stderr)
        return 2
    records, missing = curves.add_from_logs(read_results(source))
    if missing:
        warnings.warn(
            f"no run.log in the run folder of {len(missing)} record(s) ({', '.join(missing[:5])}): left without a curve",
            stacklevel=2,
        )
    write_text_atomic("".join(json.dumps(r, default=str) + "\n" for r in records), target)
    filled = sum(1 for r in records if (r.get("curve") or {}).get("from") == "run.log")
    print(f"curves: {filled} of {len(records)} records hold a curve read from their run.log -> {target}")
    return 0


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def cli(argv: list[str] | None = None) -> int:
    """``python -m recbole_sae.benchmark {report,sweep,curves,run-one} ...``."""
    warnings.formatwarning = _one_line_warning  # 'warning: <what>', not the source line that warned
    ns = _parser().parse_args(argv)
    if ns.command == "run-one":
        return run_one(ns.spec, ns.out)
    if ns.command == "sweep":
        return _sweep_command(ns)
    if ns.command == "curves":
        return _curves_command(ns)
    return _report_command(ns)
