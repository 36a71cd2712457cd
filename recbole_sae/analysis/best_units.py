"""Reading the attribute statistics: the best unit of every value, and a label for every unit.

The statistics are the dict of :func:`recbole_sae.analysis.attribute_stats.latent_attribute_stats`
(``corr``, ``auc``, ``precision``, ``recall`` ``[L, V]``; ``support``, ``base_rate`` ``[V]``).
"""

from __future__ import annotations

import math
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch

__all__ = ["best_per_value", "label_latents"]

LABEL_SEPARATOR = " · "
UNLABELLED = "unlabelled"


def value_names(stats: Mapping[str, torch.Tensor], values: Optional[Sequence[str]]) -> List[str]:
    """The names of the stats' attribute values (``values`` checked against their number; default: indices)."""
    n_values = stats["corr"].shape[1]
    if values is None:
        return [str(v) for v in range(n_values)]
    values = [str(v) for v in values]
    if len(values) != n_values:
        raise ValueError(f"got {len(values)} value names for {n_values} attribute values")
    return values


def _latent_record(stats: Mapping[str, torch.Tensor], latent: int, v: int) -> Dict[str, float]:
    return {
        "latent": int(latent),
        "corr": float(stats["corr"][latent, v]),
        "auc": float(stats["auc"][latent, v]),
        "precision": float(stats["precision"][latent, v]),
        "recall": float(stats["recall"][latent, v]),
    }


def best_per_value(
    stats: Mapping[str, torch.Tensor],
    values: Optional[Sequence[str]] = None,
    abs_corr: bool = True,
) -> List[dict]:
    """The best latent of every attribute value.

    Returns one record per value, in the order of ``values``::

        {"value", "index", "support", "base_rate",
         "by_corr": {"latent", "corr", "auc", "precision", "recall"},   # max |corr| (or corr)
         "by_auc":  {"latent", "corr", "auc", "precision", "recall"}}   # max AUC

    ``by_corr`` ranks latents by ``|corr|`` when ``abs_corr`` (the sign of a raw
    hidden dimension is arbitrary), else by the signed correlation; ``corr`` in
    the record keeps its sign.  Ties go to the lowest latent id.
    """
    names = value_names(stats, values)
    corr, auc = stats["corr"], stats["auc"]
    if corr.shape[0] == 0:
        raise ValueError("stats have no latents")
    key = corr.abs() if abs_corr else corr
    best_corr = torch.argmax(key, dim=0)
    best_auc = torch.argmax(auc, dim=0)
    out = []
    for v, name in enumerate(names):
        out.append(
            {
                "value": name,
                "index": v,
                "support": int(stats["support"][v]),
                "base_rate": float(stats["base_rate"][v]),
                "by_corr": _latent_record(stats, int(best_corr[v]), v),
                "by_auc": _latent_record(stats, int(best_auc[v]), v),
            }
        )
    return out


def top_values(corr: torch.Tensor, top: int, min_corr: Optional[float]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per latent, the ``top`` values by signed correlation: (values [L, t], indices [L, t])."""
    t = min(top, corr.shape[1])
    vals, idx = torch.topk(corr, t, dim=1) if t > 0 else (corr[:, :0], corr[:, :0].long())
    if min_corr is not None:
        vals = torch.where(vals >= min_corr, vals, torch.full_like(vals, float("nan")))
    return vals, idx


def label_latents(
    stats: Mapping[str, torch.Tensor],
    values: Optional[Sequence[str]] = None,
    top: int = 3,
    min_corr: float = 0.1,
    min_support: int = 0,
) -> List[str]:
    """A readable label per latent: its best values by (positive) correlation.

    E.g. ``"Western (0.71) · Drama (0.12)"``: at most ``top`` values whose
    correlation with the latent is at least ``min_corr`` (and whose support is at
    least ``min_support``), best first; ``"unlabelled"`` when none passes.
    """
    names = value_names(stats, values)
    corr = stats["corr"].clone()
    corr[:, stats["support"] < min_support] = -math.inf
    vals, idx = top_values(corr, top, min_corr)
    labels = []
    for lat in range(corr.shape[0]):
        parts = [
            f"{names[int(j)]} ({float(c):.2f})"
            for c, j in zip(vals[lat].tolist(), idx[lat].tolist())
            if not math.isnan(c)
        ]
        labels.append(LABEL_SEPARATOR.join(parts) if parts else UNLABELLED)
    return labels
