"""SAE latents against raw hidden dims: how well the best unit of each kind captures each value.

:func:`monosemanticity_summary` compares the best units of two statistics (SAE latents and raw
hidden dims, over the same positions); :func:`linear_probe_corr` and :func:`held_out_best_corr`
give it the baselines that hold items out, so that units recognising particular items do not
count as capturing a value.
"""

from __future__ import annotations

import math
from typing import List, Mapping, Optional, Sequence, Tuple

import torch

from recbole_sae.analysis.attribute_stats import latent_attribute_stats
from recbole_sae.analysis.best_units import best_per_value, value_names
from recbole_sae.analysis.checks import both_parities, check_acts, check_attr, check_item_ids

__all__ = ["RARE_BASE_RATE", "held_out_best_corr", "linear_probe_corr", "monosemanticity_summary"]

# Attribute values on fewer than this share of the positions count as rare in the summary's split.
RARE_BASE_RATE = 0.05


@torch.no_grad()
def linear_probe_corr(
    acts: torch.Tensor,
    item_ids: torch.Tensor,
    attr_matrix: torch.Tensor,
    ridge: float = 1e-3,
) -> torch.Tensor:
    """How much of each attribute value a linear read-out of ALL the dims finds: ``[V]`` float64.

    For every value, a ridge regression (penalty ``ridge`` times the mean diagonal of the Gram
    matrix, intercept unpenalised) from the standardised activations to the value's indicator is
    fitted on the positions of the items with an even id and scored on those with an odd id, then
    the reverse: held out by item, so that the read-out cannot learn items by heart (with d dims
    and a few thousand items that alone gives a correlation of about sqrt(d / items) to any
    per-item noise); the result is the Pearson correlation between these held-out predictions and
    the indicator over all positions, 0 for a value that is constant.

    It measures how much of the value the state encodes linearly in a way that carries over to
    items the read-out never saw. The best-unit correlations of :func:`latent_attribute_stats`
    are taken over the same items the units fire on; a best unit far above the probe picks out
    particular items of the value (a few well-known Westerns) rather than the value itself.
    """
    acts = check_acts(acts)
    n, d = acts.shape
    attr = check_attr(attr_matrix)
    item_ids = check_item_ids(item_ids, n, attr.shape[0])
    x = acts.to(torch.float64)
    x = (x - x.mean(dim=0)) / x.std(dim=0).clamp_min(1e-12)
    x = torch.cat([x, torch.ones(n, 1, dtype=torch.float64)], dim=1)
    y = attr[item_ids].to(torch.float64)
    if not both_parities(item_ids):
        raise ValueError("linear_probe_corr needs positions of items with even and with odd ids")
    odd = (item_ids % 2).bool()
    pred = torch.empty_like(y)
    for fit, score in ((~odd, odd), (odd, ~odd)):
        gram = x[fit].T @ x[fit]
        penalty = ridge * gram.diagonal()[:d].mean().clamp_min(1e-12)
        gram[range(d), range(d)] += penalty
        coef = torch.linalg.solve(gram, x[fit].T @ y[fit])
        pred[score] = x[score] @ coef
    pc, yc = pred - pred.mean(dim=0), y - y.mean(dim=0)
    den = torch.sqrt((pc * pc).sum(dim=0) * (yc * yc).sum(dim=0))
    return torch.where(den > 0, (pc * yc).sum(dim=0) / den.clamp_min(1e-300), torch.zeros_like(den))


@torch.no_grad()
def held_out_best_corr(
    acts: torch.Tensor,
    item_ids: torch.Tensor,
    attr_matrix: torch.Tensor,
    chunk: Optional[int] = None,
) -> torch.Tensor:
    """The best unit's correlation with the choice of unit held out by item: ``[V]`` float64.

    For every value, the unit with the largest ``|corr|`` over the positions of the items with an
    even id is scored on the positions of the items with an odd id (its correlation there, times
    the sign it had where it was chosen), then the reverse; the result is the mean of the two.

    The best ``|corr|`` of :func:`best_per_value` is a maximum over all units on the same
    positions it is reported on: the more units (a 2,048-latent dictionary against 64 raw
    dimensions), the more it gains from units that happen to fit, and a unit that fires on a few
    particular items of the value scores as if it were the value. Choosing on one half of the
    items and scoring on the other removes both: a unit that carries the value scores about the
    same on unseen items; one that recognises items scores near 0 there.
    """
    acts = check_acts(acts)
    attr = check_attr(attr_matrix)
    item_ids = check_item_ids(item_ids, acts.shape[0], attr.shape[0])
    if not both_parities(item_ids):
        raise ValueError("held_out_best_corr needs positions of items with even and with odd ids")
    odd = (item_ids % 2).bool().to(acts.device)
    folds = [
        latent_attribute_stats(acts[m], item_ids[m.to(item_ids.device)], attr, chunk=chunk)["corr"] for m in (~odd, odd)
    ]
    cols = torch.arange(attr.shape[1], device=folds[0].device)
    scores = []
    for chosen_on, scored_on in ((folds[0], folds[1]), (folds[1], folds[0])):
        best = torch.argmax(chosen_on.abs(), dim=0)
        scores.append(scored_on[best, cols] * torch.sign(chosen_on[best, cols]))
    return (scores[0] + scores[1]) / 2


# --------------------------------------------------------------------------- the summary
def _ratio(num: float, den: float) -> Optional[float]:
    """``num / den``; ``None`` when ``den`` is 0 up to rounding (a mean of +1 and -1) or either is not finite."""
    if not math.isfinite(num) or not math.isfinite(den) or abs(den) < 1e-12:
        return None
    return num / den


def _mean(group: List[dict], key: str) -> Optional[float]:
    return sum(row[key] for row in group) / len(group) if group else None


def _check_comparable(
    stats_sae: Mapping[str, torch.Tensor],
    stats_raw: Mapping[str, torch.Tensor],
    n_values: int,
) -> None:
    if stats_raw["corr"].shape[1] != n_values:
        raise ValueError("SAE and raw stats have a different number of attribute values")
    if not torch.equal(stats_sae["support"].cpu(), stats_raw["support"].cpu()):
        raise ValueError("SAE and raw stats were computed on different positions (supports differ)")


def _check_per_value(n_values: int, probe: Optional[torch.Tensor], held_out: Optional[Tuple]) -> None:
    for name, vec in [("probe", probe)] + list(zip(("held_out[0]", "held_out[1]"), held_out or ())):
        if vec is not None and vec.shape != (n_values,):
            raise ValueError(f"{name} has shape {tuple(vec.shape)}, expected ({n_values},)")


def _summary_rows(
    sae_best: List[dict],
    raw_best: List[dict],
    min_support: int,
    probe: Optional[torch.Tensor],
    held_out: Optional[Tuple[torch.Tensor, torch.Tensor]],
) -> List[dict]:
    """One row per value with at least ``min_support`` positions: the best units of both kinds."""
    rows = []
    for v, (s, r) in enumerate(zip(sae_best, raw_best)):
        if s["support"] < min_support:
            continue
        sae_c, raw_c = abs(s["by_corr"]["corr"]), abs(r["by_corr"]["corr"])
        rows.append(
            {
                "value": s["value"],
                "support": s["support"],
                "base_rate": s["base_rate"],
                "raw_best_abs_corr": raw_c,
                "sae_best_abs_corr": sae_c,
                "raw_best_auc": r["by_auc"]["auc"],
                "sae_best_auc": s["by_auc"]["auc"],
                "raw_dim": r["by_corr"]["latent"],
                "sae_latent": s["by_corr"]["latent"],
                "gain": sae_c - raw_c,
            }
        )
        if probe is not None:
            rows[-1]["probe_corr"] = float(probe[v])
        if held_out is not None:
            rows[-1]["sae_held_out_corr"] = float(held_out[0][v])
            rows[-1]["raw_held_out_corr"] = float(held_out[1][v])
    return rows


def _held_out_means(group: List[dict], with_held_out: bool) -> dict:
    if not with_held_out:
        return {}
    sae_h, raw_h = _mean(group, "sae_held_out_corr"), _mean(group, "raw_held_out_corr")
    return {
        "sae_mean_held_out_corr": sae_h,
        "raw_mean_held_out_corr": raw_h,
        "ratio_held_out": _ratio(sae_h, raw_h) if group else None,
    }


def _corr_split(group: List[dict], with_probe: bool, with_held_out: bool) -> dict:
    """The means of one group of rows (rare or common values) and their ratios."""
    sae_c, raw_c = _mean(group, "sae_best_abs_corr"), _mean(group, "raw_best_abs_corr")
    out = {
        "n_values": len(group),
        "sae_mean_best_abs_corr": sae_c,
        "raw_mean_best_abs_corr": raw_c,
        "ratio_corr": _ratio(sae_c, raw_c) if group else None,
    }
    if with_probe:
        out["probe_mean_corr"] = _mean(group, "probe_corr")
    out.update(_held_out_means(group, with_held_out))
    return out


def _summary_ratios(sae: dict, raw: dict, have: bool) -> dict:
    return {
        "ratio_corr": _ratio(sae["mean_best_abs_corr"], raw["mean_best_abs_corr"]) if have else None,
        "ratio_auc": _ratio(sae["mean_best_auc"], raw["mean_best_auc"]) if have else None,
        "ratio_auc_above_chance": (_ratio(sae["mean_best_auc"] - 0.5, raw["mean_best_auc"] - 0.5) if have else None),
    }


def monosemanticity_summary(
    stats_sae: Mapping[str, torch.Tensor],
    stats_raw: Mapping[str, torch.Tensor],
    values: Optional[Sequence[str]] = None,
    min_support: int = 10,
    rare_rate: float = RARE_BASE_RATE,
    probe: Optional[torch.Tensor] = None,
    held_out: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
) -> dict:
    """SAE latents vs raw hidden dims: how well the best unit captures each value.

    For every value with at least ``min_support`` positions, the best ``|corr|``
    and the best AUC over SAE latents and over raw dims; their means over the
    values; and the monosemanticity ratios SAE / raw (``None`` when the raw mean
    is 0).  Both stats must come from the same positions.  Returns::

        {"n_values", "min_support",
         "sae": {"mean_best_abs_corr", "mean_best_auc"},
         "raw": {"mean_best_abs_corr", "mean_best_auc"},
         "ratio_corr", "ratio_auc",
         "ratio_auc_above_chance",        # (SAE mean AUC - 0.5) / (raw mean AUC - 0.5)
         "rows": [{"value", "support", "base_rate",
                   "raw_best_abs_corr", "sae_best_abs_corr", "raw_best_auc", "sae_best_auc",
                   "raw_dim", "sae_latent", "gain"}],     # gain = SAE - raw best |corr|
         "by_frequency": {"rare": {...}, "common": {...}}}

    With ``probe`` (``[V]``, :func:`linear_probe_corr` of the raw dims) each row has
    ``probe_corr``, the summary ``probe_mean_corr`` and the groups of ``by_frequency`` theirs:
    how much of each value a read-out of the whole state carries to unseen items.
    ``by_frequency`` repeats ``n_values``, the two mean best ``|corr|`` and their ratio for the
    values on fewer than ``rare_rate`` of the positions (``rare``) and the others (``common``):
    a sparse latent can match a rare value closely, while a value on a large share of the
    positions is one a dense raw dimension can already track.
    With ``held_out`` (``(sae [V], raw [V])``, :func:`held_out_best_corr` of the latents and of
    the raw dims) each row has ``sae_held_out_corr`` and ``raw_held_out_corr``, and the summary
    and each group of ``by_frequency`` the means (``sae_mean_held_out_corr``,
    ``raw_mean_held_out_corr``) and their ratio ``ratio_held_out``: the ratio with the best unit
    chosen on other items than it is scored on.
    With no value passing ``min_support`` the means and ratios are ``None``.
    """
    names = value_names(stats_sae, values)
    _check_comparable(stats_sae, stats_raw, len(names))
    sae_best, raw_best = best_per_value(stats_sae, names), best_per_value(stats_raw, names)
    _check_per_value(len(names), probe, held_out)
    rows = _summary_rows(sae_best, raw_best, min_support, probe, held_out)
    with_probe, with_held_out = probe is not None, held_out is not None

    sae = {"mean_best_abs_corr": _mean(rows, "sae_best_abs_corr"), "mean_best_auc": _mean(rows, "sae_best_auc")}
    raw = {"mean_best_abs_corr": _mean(rows, "raw_best_abs_corr"), "mean_best_auc": _mean(rows, "raw_best_auc")}
    by_frequency = {
        "rare_rate": float(rare_rate),
        "rare": _corr_split([row for row in rows if row["base_rate"] < rare_rate], with_probe, with_held_out),
        "common": _corr_split([row for row in rows if row["base_rate"] >= rare_rate], with_probe, with_held_out),
    }
    extra = {"probe_mean_corr": _mean(rows, "probe_corr")} if with_probe else {}
    extra.update(_held_out_means(rows, with_held_out))
    return {
        "n_values": len(rows),
        "min_support": int(min_support),
        "sae": sae,
        "raw": raw,
        **extra,
        **_summary_ratios(sae, raw, bool(rows)),
        "rows": rows,
        "by_frequency": by_frequency,
    }
