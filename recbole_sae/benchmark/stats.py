"""The statistics of a report: each model's grid point chosen on validation, mean and std over seeds,
the relative difference to the baseline and a paired test over seeds, per protocol."""

from __future__ import annotations

import math
import warnings

from recbole_sae import protocol
from recbole_sae.benchmark.results import COMPARED, latest_records

SELECT_METRIC = COMPARED  # chooses grid points, on validation only
# (result key, column title) of the report's tables: test metrics, mean ± std over seeds.
REPORT_METRICS = [
    ("ndcg@10", "NDCG@10"),
    ("ndcg@20", "NDCG@20"),
    ("hit@10", "HR@10"),
    ("hit@20", "HR@20"),
    ("mrr@10", "MRR@10"),
]


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


def _settings_labels(records: list[dict]) -> list[str]:
    """Each record's grid label, extended by the settings in which the records of its dataset, model
    and grid label differ (seed aside): runs of one grid point with other ``--key=value`` overrides,
    written to one results file, are rows of their own rather than seeds of one row (or one run
    silently replacing another of the same seed)."""
    labels = [r.get("grid_label") or "" for r in records]
    point = [(r["dataset"], r["model"], label) for r, label in zip(records, labels)]
    settings = [{k: v for k, v in (r.get("overrides") or {}).items() if k != "seed"} for r in records]
    for group in set(point):
        members = [i for i, p in enumerate(point) if p == group]
        keys = {k for i in members for k in settings[i]}
        differ = sorted(k for k in keys if len({repr(settings[i].get(k)) for i in members}) > 1)
        for i in members:
            if differ:
                extra = ", ".join(f"{k}={settings[i].get(k, 'default')}" for k in differ)
                labels[i] = f"{labels[i]} [{extra}]" if labels[i] else f"[{extra}]"
    return labels


def _groups(records: list[dict]) -> dict:
    """``{dataset: {model: {grid_label: {seed: record}}}}`` of the last ok record per run (the grid
    label extended by the settings that tell runs of one point apart, :func:`_settings_labels`)."""
    groups: dict = {}
    ok = latest_records(records, "ok")
    for record, label in zip(ok, _settings_labels(ok)):
        by_label = groups.setdefault(record["dataset"], {}).setdefault(record["model"], {})
        by_label.setdefault(label, {})[record["seed"]] = record
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
            metrics = {  # a metric some seed's run did not compute (its topk) is n/a
                key: mean_std(by_seed[s]["test"][key] for s in seeds)
                if all(key in by_seed[s]["test"] for s in seeds)
                else (None, None)
                for key, _ in REPORT_METRICS
            }
            per_epoch = [by_seed[s].get("seconds_per_epoch") for s in seeds]
            per_epoch = [v for v in per_epoch if v is not None]
            ndcg = {s: by_seed[s]["test"][SELECT_METRIC] for s in seeds}
            is_base = model == baseline
            rows.append(
                {
                    "model": model,
                    "grid_label": label,
                    "seeds": seeds,
                    "runs": [by_seed[s] for s in seeds],
                    "n": len(seeds),
                    "metrics": metrics,
                    "valid": mean_std(by_seed[s]["best_valid"][SELECT_METRIC] for s in seeds)[0],
                    "seconds_per_epoch": mean_std(per_epoch)[0],
                    "devices": sorted({_device_kind(by_seed[s].get("device")) for s in seeds} - {""}),
                    "baseline": is_base,
                    "rel_diff": None if is_base else relative_difference(metrics[SELECT_METRIC][0], base_mean),
                    "p_value": None if is_base else paired_pvalue(ndcg, base_ndcg),
                    "grid": {}
                    if every_point
                    else {
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
