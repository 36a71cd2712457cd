"""Interpretation of sparse-autoencoder latents against item attributes.

Every statistic here is computed over *positions*: row ``n`` of an activation
matrix ``acts [N, L]`` is one (sequence, position) pair whose item is
``item_ids[n]``.  For an attribute value ``v`` the binary target of row ``n`` is
``attr_matrix[item_ids[n], v]`` (e.g. "the item at this position is a
Western").  The same functions run on SAE latents and, as the baseline, on the
raw hidden dimensions of the recommender (a raw dimension is treated as a
"latent"), so the two can be compared side by side (the monosemanticity
ratio).

The module takes plain tensors and lists; it knows nothing of RecBole.

Public API::

    stats = latent_attribute_stats(acts, item_ids, attr_matrix)      # dict of [L, V] tensors
    best_per_value(stats, values)                                     # best latent per value
    monosemanticity_summary(stats_sae, stats_raw, values)             # SAE vs raw dims
    linear_probe_corr(raw_acts, item_ids, attr_matrix)                # [V]: all dims together
    label_latents(stats, values)                                      # "Western (0.71) · Drama (0.12)"
    top_items_by_activation(acts, item_ids, k)                        # [L, k] item ids
    logit_lens(decoder_directions, item_embeddings, k)                # ([L, k] ids, [L, k] scores)
    interpret(...)                                                    # everything, as one JSON-ready dict
"""

from __future__ import annotations

import math
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch

__all__ = [
    "DEFAULT_ELEMENT_BUDGET",
    "latent_attribute_stats",
    "best_per_value",
    "monosemanticity_summary",
    "linear_probe_corr",
    "label_latents",
    "top_items_by_activation",
    "logit_lens",
    "interpret",
]

# Number of (position, latent) entries handled at once by the chunked
# computations.  Dense chunks need about 80 bytes of working memory per entry
# (indices, sort permutations, float64 copies), sparse ones a fraction of it.
DEFAULT_ELEMENT_BUDGET = 1 << 22

LABEL_SEPARATOR = " · "
UNLABELLED = "unlabelled"


# --------------------------------------------------------------------------- checks
def _check_acts(acts: torch.Tensor, name: str = "acts") -> torch.Tensor:
    if not isinstance(acts, torch.Tensor) or acts.dim() != 2:
        shape = tuple(acts.shape) if isinstance(acts, torch.Tensor) else type(acts).__name__
        raise ValueError(f"{name} must be a 2-D tensor [N positions, L latents], got {shape}")
    if not acts.is_floating_point():
        acts = acts.to(torch.float32)
    if acts.dtype in (torch.float16, torch.bfloat16):
        acts = acts.to(torch.float32)
    if acts.shape[0] == 0:
        raise ValueError(f"{name} has zero positions")
    return acts


def _check_finite(val: torch.Tensor) -> None:
    # Called on the nonzero entries only (NaN and inf are nonzero), which is cheap.
    if not bool(torch.isfinite(val).all()):
        raise ValueError("activations contain NaN or infinite values")


def _check_item_ids(item_ids: torch.Tensor, n: int, n_items: Optional[int] = None) -> torch.Tensor:
    if not isinstance(item_ids, torch.Tensor) or item_ids.dim() != 1 or item_ids.shape[0] != n:
        shape = tuple(item_ids.shape) if isinstance(item_ids, torch.Tensor) else type(item_ids).__name__
        raise ValueError(f"item_ids must be a 1-D tensor with one item per position ({n}), got {shape}")
    if item_ids.is_floating_point() or item_ids.dtype == torch.bool:
        raise ValueError(f"item_ids must be an integer tensor, got {item_ids.dtype}")
    item_ids = item_ids.long()
    if int(item_ids.min()) < 0:
        raise ValueError("item_ids contains negative ids")
    if n_items is not None and int(item_ids.max()) >= n_items:
        raise ValueError(
            f"item_ids contains id {int(item_ids.max())} but the attribute matrix has only {n_items} rows "
            "(one row per item id, padding id 0 included)"
        )
    return item_ids


def _check_attr(attr_matrix: torch.Tensor) -> torch.Tensor:
    if not isinstance(attr_matrix, torch.Tensor) or attr_matrix.dim() != 2:
        shape = tuple(attr_matrix.shape) if isinstance(attr_matrix, torch.Tensor) else type(attr_matrix).__name__
        raise ValueError(f"attr_matrix must be a 2-D tensor [n_items, V values], got {shape}")
    if attr_matrix.dtype != torch.bool:
        if not bool(((attr_matrix == 0) | (attr_matrix == 1)).all()):
            raise ValueError("attr_matrix must be boolean (or hold only 0 and 1)")
        attr_matrix = attr_matrix != 0
    return attr_matrix


def _chunk_size(chunk: Optional[int], n_rows: int, n_cols: int) -> int:
    if chunk is None:
        return max(1, min(n_cols, DEFAULT_ELEMENT_BUDGET // max(n_rows, 1)))
    if int(chunk) < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    return int(chunk)


# --------------------------------------------------------------------------- statistics
def _order_key(val: torch.Tensor) -> Tuple[torch.Tensor, int]:
    """Int64 keys in ``[0, n_keys)`` ordered as ``val`` (equal values, equal keys).

    float32: the IEEE bits made order-preserving (negative values get their
    magnitude bits flipped), a cheap exact map; other dtypes: dense ranks.
    """
    if val.dtype == torch.float32:
        bits = val.view(torch.int32)
        ordered = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits).to(torch.int64)
        return ordered + (1 << 31), 1 << 32
    uniq, inverse = torch.unique(val, sorted=True, return_inverse=True)
    return inverse, max(int(uniq.numel()), 1)


def _chunk_sums(
    x: torch.Tensor, item_ids: torch.Tensor, n_items: int
) -> Dict[str, torch.Tensor]:
    """Per-latent and per-(latent, item) sums of one chunk ``x [N, c]``, from its nonzeros.

    Every activation equal to 0 shares one tie group per latent, so the ranks
    and sums are built from the nonzero entries plus closed forms for the zeros:
    the cost is one sort of the ``nnz`` nonzero values (by latent, then value),
    not of all ``N * c`` entries.  Returned (float64 unless said):

    * ``sum_x [c]``, ``ss_centred [c]`` (sum of squared deviations from the mean),
      ``zero_rank [c]`` (average rank of the zeros), ``n_fire [c]``,
      ``constant [c]`` (bool), and ``[c, n_items]`` per-item sums of the
      activation (``item_x``), of ``rank - zero_rank`` (``item_rank``) and of the
      firing indicator (``item_fire``).
    """
    n, c = x.shape
    dev = x.device
    take = torch.index_select  # much faster than advanced indexing for 1-D gathers
    # Latent-major layout: the nonzeros come out grouped by latent, so the sort below
    # only reorders within a latent's run and the gathers stay cache-friendly.
    flat_x = x.contiguous().t().contiguous().view(-1)  # (a row copy first: faster than a strided transpose)
    idx = torch.nonzero(flat_x).squeeze(1)  # idx = latent * N + position
    val = take(flat_x, 0, idx)
    _check_finite(val)
    lat = torch.div(idx, n, rounding_mode="floor")
    # Sort by (latent, value) with one integer sort of a composite key.
    key, n_keys = _order_key(val)
    order = torch.argsort(lat * n_keys + key)
    val = take(val, 0, order)
    pos = take(idx, 0, order) - take(lat, 0, order) * n
    lat = take(lat, 0, order)

    negative = val < 0
    nnz = torch.bincount(lat, minlength=c)
    n_neg = torch.bincount(lat, weights=negative.to(torch.float64), minlength=c).round().to(torch.int64)
    n_zero = n - nnz
    row_start = torch.cumsum(nnz, 0) - nnz

    # Tie groups among the nonzeros (a group never spans two latents).
    m = val.shape[0]
    new_group = torch.ones(m, dtype=torch.bool, device=dev)
    if m > 1:
        new_group[1:] = (val[1:] != val[:-1]) | (lat[1:] != lat[:-1])
    gid = torch.cumsum(new_group, 0) - 1
    sizes = torch.bincount(gid)
    first = torch.cumsum(sizes, 0) - sizes
    g_lat = take(lat, 0, first)
    g_val = take(val, 0, first)
    # 1-based rank of the group's first element in its latent's full column (zeros included).
    first_rank = (first - take(row_start, 0, g_lat) + 1) + torch.where(
        g_val > 0, take(n_zero, 0, g_lat), torch.zeros_like(first)
    )
    g_avg = first_rank.to(torch.float64) + (sizes.to(torch.float64) - 1.0) * 0.5
    zero_rank = n_neg.to(torch.float64) + (n_zero.to(torch.float64) + 1.0) * 0.5
    delta = take(g_avg, 0, gid) - take(zero_rank, 0, lat)

    val64 = val.to(torch.float64)
    sum_x = torch.zeros(c, dtype=torch.float64, device=dev).index_add_(0, lat, val64)
    mean = sum_x / n
    dev_sq = (val64 - take(mean, 0, lat)) ** 2
    ss = torch.zeros(c, dtype=torch.float64, device=dev).index_add_(0, lat, dev_sq) + n_zero * mean * mean
    fires = ~negative
    n_groups = torch.bincount(g_lat, minlength=c) + (n_zero > 0).to(torch.int64)

    flat = lat * n_items + take(item_ids, 0, pos)
    per_item = torch.zeros(3, c * n_items, dtype=torch.float64, device=dev)
    per_item[0].index_add_(0, flat, val64)
    per_item[1].index_add_(0, flat, delta)
    per_item[2].index_add_(0, flat, fires.to(torch.float64))
    per_item = per_item.view(3, c, n_items)
    return {
        "sum_x": sum_x,
        "ss_centred": ss,
        "zero_rank": zero_rank,
        "n_fire": (nnz - n_neg).to(torch.float64),
        "constant": n_groups <= 1,
        "item_x": per_item[0],
        "item_rank": per_item[1],
        "item_fire": per_item[2],
    }


@torch.no_grad()
def latent_attribute_stats(
    acts: torch.Tensor,
    item_ids: torch.Tensor,
    attr_matrix: torch.Tensor,
    chunk: Optional[int] = None,
) -> Dict[str, torch.Tensor]:
    """Statistics of every latent against every attribute value, over all positions.

    Args:
        acts: ``[N, L]`` activations (SAE latents, or raw hidden dims as the baseline).
        item_ids: ``[N]`` item id at each position (indexes the rows of ``attr_matrix``).
        attr_matrix: ``[n_items, V]`` bool, ``attr_matrix[i, v]``: item ``i`` has value ``v``.
        chunk: latents processed at once (memory is ``O(max(N, n_items) * chunk)``);
            ``None`` picks a size that keeps about ``DEFAULT_ELEMENT_BUDGET`` elements
            per chunk.  The result does not depend on it.

    Returns a dict of float64 tensors:

    * ``corr [L, V]``: Pearson correlation between the activation and the binary target;
    * ``auc [L, V]``: ROC-AUC of the activation as a score for the target (Mann-Whitney
      rank sum, ties get average ranks, so it equals the trapezoidal ROC area; the
      rank sums are exact);
    * ``precision [L, V]``: share of firing positions (``act > 0``) whose item has ``v``;
    * ``recall [L, V]``: share of positions with ``v`` where the latent fires;
    * ``firing_rate [L]``: share of positions where the latent fires;
    * ``n_fire [L]`` (int64), ``support [V]`` (int64, positions with ``v``), ``base_rate [V]``.

    Degenerate cases are numbers, never NaN: a constant latent (e.g. dead) has
    correlation 0 and AUC 0.5 for every value; a value with no positions (or on
    every position) has correlation 0 and AUC 0.5 for every latent; precision of
    a latent that never fires and recall of a value with no positions are 0.

    Method: every statistic is a sum over positions of ``g(act) * target``, which
    equals ``(per-item sums of g(act)) @ attr``; the per-item sums come from the
    nonzero activations only (zeros, one tie group per latent, enter in closed
    form), so the cost is one sort of the nonzeros per chunk of latents plus an
    ``[n_items, V]`` matmul.  Sparse SAE activations are cheap; dense raw hidden
    dims cost one sort of all their entries.
    """
    acts = _check_acts(acts)
    attr = _check_attr(attr_matrix)
    n, n_latents = acts.shape
    n_items, n_values = attr.shape
    item_ids = _check_item_ids(item_ids, n, n_items).to(acts.device)
    attr64 = attr.to(device=acts.device, dtype=torch.float64)

    support = torch.bincount(item_ids, minlength=n_items).to(torch.float64) @ attr64  # [V], exact
    n_neg = n - support
    both = (support > 0) & (n_neg > 0)
    # Denominators that do not depend on the latent.
    sd_y = torch.sqrt(support * n_neg / n)  # sqrt(N * var(target))
    auc_offset = support * (support + 1.0) * 0.5
    auc_den = torch.where(both, support * n_neg, torch.ones_like(support))
    safe_support = support.clamp_min(1.0)

    corr = torch.zeros(n_latents, n_values, dtype=torch.float64, device=acts.device)
    auc = torch.full_like(corr, 0.5)
    precision = torch.zeros_like(corr)
    recall = torch.zeros_like(corr)
    n_fire = torch.zeros(n_latents, dtype=torch.float64, device=acts.device)

    step = _chunk_size(chunk, max(n, n_items), n_latents)
    for lo in range(0, n_latents, step):
        hi = min(lo + step, n_latents)
        cs = _chunk_sums(acts[:, lo:hi], item_ids, n_items)
        c = hi - lo
        sums = (torch.cat([cs["item_x"], cs["item_rank"], cs["item_fire"]]) @ attr64).view(3, c, n_values)
        sum_xy, rank_delta, fire_and_v = sums[0], sums[1], sums[2]

        mean = cs["sum_x"] / n
        cov = sum_xy - mean[:, None] * support[None, :]  # sum over positions of (x - mean) * y
        den = torch.sqrt(cs["ss_centred"])[:, None] * sd_y[None, :]
        ok = (~cs["constant"])[:, None] & both[None, :] & (den > 0)
        corr[lo:hi] = torch.where(ok, cov / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(cov))

        rank_sum = cs["zero_rank"][:, None] * support[None, :] + rank_delta
        a = (rank_sum - auc_offset[None, :]) / auc_den[None, :]
        auc[lo:hi] = torch.where(both[None, :], a, torch.full_like(a, 0.5))

        nf = cs["n_fire"]
        n_fire[lo:hi] = nf
        precision[lo:hi] = torch.where(nf[:, None] > 0, fire_and_v / nf.clamp_min(1.0)[:, None],
                                       torch.zeros_like(fire_and_v))
        recall[lo:hi] = fire_and_v / safe_support[None, :]

    corr.clamp_(-1.0, 1.0)
    return {
        "corr": corr,
        "auc": auc,
        "precision": precision,
        "recall": recall,
        "firing_rate": n_fire / n,
        "n_fire": n_fire.round().to(torch.int64),
        "support": support.round().to(torch.int64),
        "base_rate": support / n,
    }


def _value_names(stats: Mapping[str, torch.Tensor], values: Optional[Sequence[str]]) -> List[str]:
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
    names = _value_names(stats, values)
    corr, auc = stats["corr"], stats["auc"]
    if corr.shape[0] == 0:
        raise ValueError("stats have no latents")
    key = corr.abs() if abs_corr else corr
    best_corr = torch.argmax(key, dim=0)
    best_auc = torch.argmax(auc, dim=0)
    out = []
    for v, name in enumerate(names):
        out.append({
            "value": name,
            "index": v,
            "support": int(stats["support"][v]),
            "base_rate": float(stats["base_rate"][v]),
            "by_corr": _latent_record(stats, int(best_corr[v]), v),
            "by_auc": _latent_record(stats, int(best_auc[v]), v),
        })
    return out


def _both_parities(item_ids: torch.Tensor) -> bool:
    """Whether the positions hold items with even and with odd ids (the probe's two folds)."""
    return torch.unique(item_ids.long() % 2).numel() == 2


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
    acts = _check_acts(acts)
    n, d = acts.shape
    attr = _check_attr(attr_matrix)
    item_ids = _check_item_ids(item_ids, n, attr.shape[0])
    x = acts.to(torch.float64)
    x = (x - x.mean(dim=0)) / x.std(dim=0).clamp_min(1e-12)
    x = torch.cat([x, torch.ones(n, 1, dtype=torch.float64)], dim=1)
    y = attr[item_ids].to(torch.float64)
    if not _both_parities(item_ids):
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
    acts = _check_acts(acts)
    attr = _check_attr(attr_matrix)
    item_ids = _check_item_ids(item_ids, acts.shape[0], attr.shape[0])
    if not _both_parities(item_ids):
        raise ValueError("held_out_best_corr needs positions of items with even and with odd ids")
    odd = (item_ids % 2).bool().to(acts.device)
    folds = [latent_attribute_stats(acts[m], item_ids[m.to(item_ids.device)], attr, chunk=chunk)["corr"]
             for m in (~odd, odd)]
    cols = torch.arange(attr.shape[1], device=folds[0].device)
    scores = []
    for chosen_on, scored_on in ((folds[0], folds[1]), (folds[1], folds[0])):
        best = torch.argmax(chosen_on.abs(), dim=0)
        scores.append(scored_on[best, cols] * torch.sign(chosen_on[best, cols]))
    return (scores[0] + scores[1]) / 2


def _ratio(num: float, den: float) -> Optional[float]:
    """``num / den``; ``None`` when ``den`` is 0 up to rounding (a mean of +1 and -1) or either is not finite."""
    if not math.isfinite(num) or not math.isfinite(den) or abs(den) < 1e-12:
        return None
    return num / den


# Attribute values on fewer than this share of the positions count as rare in the summary's split.
RARE_BASE_RATE = 0.05


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
    names = _value_names(stats_sae, values)
    if stats_raw["corr"].shape[1] != len(names):
        raise ValueError("SAE and raw stats have a different number of attribute values")
    if not torch.equal(stats_sae["support"].cpu(), stats_raw["support"].cpu()):
        raise ValueError("SAE and raw stats were computed on different positions (supports differ)")
    sae_best = best_per_value(stats_sae, names)
    raw_best = best_per_value(stats_raw, names)
    for name, vec in [("probe", probe)] + list(zip(("held_out[0]", "held_out[1]"), held_out or ())):
        if vec is not None and vec.shape != (len(names),):
            raise ValueError(f"{name} has shape {tuple(vec.shape)}, expected ({len(names)},)")
    rows = []
    for v, (s, r) in enumerate(zip(sae_best, raw_best)):
        if s["support"] < min_support:
            continue
        sae_c, raw_c = abs(s["by_corr"]["corr"]), abs(r["by_corr"]["corr"])
        rows.append({
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
        })
        if probe is not None:
            rows[-1]["probe_corr"] = float(probe[v])
        if held_out is not None:
            rows[-1]["sae_held_out_corr"] = float(held_out[0][v])
            rows[-1]["raw_held_out_corr"] = float(held_out[1][v])

    def mean(key: str, group=rows) -> Optional[float]:
        return sum(row[key] for row in group) / len(group) if group else None

    def held_out_means(group) -> dict:
        if held_out is None:
            return {}
        sae_h, raw_h = mean("sae_held_out_corr", group), mean("raw_held_out_corr", group)
        return {"sae_mean_held_out_corr": sae_h, "raw_mean_held_out_corr": raw_h,
                "ratio_held_out": _ratio(sae_h, raw_h) if group else None}

    def corr_split(group) -> dict:
        sae_c, raw_c = mean("sae_best_abs_corr", group), mean("raw_best_abs_corr", group)
        out = {"n_values": len(group), "sae_mean_best_abs_corr": sae_c, "raw_mean_best_abs_corr": raw_c,
               "ratio_corr": _ratio(sae_c, raw_c) if group else None}
        if probe is not None:
            out["probe_mean_corr"] = mean("probe_corr", group)
        out.update(held_out_means(group))
        return out

    sae = {"mean_best_abs_corr": mean("sae_best_abs_corr"), "mean_best_auc": mean("sae_best_auc")}
    raw = {"mean_best_abs_corr": mean("raw_best_abs_corr"), "mean_best_auc": mean("raw_best_auc")}
    have = bool(rows)
    by_frequency = {
        "rare_rate": float(rare_rate),
        "rare": corr_split([row for row in rows if row["base_rate"] < rare_rate]),
        "common": corr_split([row for row in rows if row["base_rate"] >= rare_rate]),
    }
    extra = {"probe_mean_corr": mean("probe_corr")} if probe is not None else {}
    extra.update(held_out_means(rows))
    return {
        "n_values": len(rows),
        "min_support": int(min_support),
        "sae": sae,
        "raw": raw,
        **extra,
        "ratio_corr": _ratio(sae["mean_best_abs_corr"], raw["mean_best_abs_corr"]) if have else None,
        "ratio_auc": _ratio(sae["mean_best_auc"], raw["mean_best_auc"]) if have else None,
        "ratio_auc_above_chance": (
            _ratio(sae["mean_best_auc"] - 0.5, raw["mean_best_auc"] - 0.5) if have else None
        ),
        "rows": rows,
        "by_frequency": by_frequency,
    }


def _top_values(
    corr: torch.Tensor, top: int, min_corr: Optional[float]
) -> Tuple[torch.Tensor, torch.Tensor]:
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
    names = _value_names(stats, values)
    corr = stats["corr"].clone()
    corr[:, stats["support"] < min_support] = -math.inf
    vals, idx = _top_values(corr, top, min_corr)
    labels = []
    for lat in range(corr.shape[0]):
        parts = [
            f"{names[int(j)]} ({float(c):.2f})"
            for c, j in zip(vals[lat].tolist(), idx[lat].tolist())
            if not math.isnan(c)
        ]
        labels.append(LABEL_SEPARATOR.join(parts) if parts else UNLABELLED)
    return labels


# --------------------------------------------------------------------------- items
@torch.no_grad()
def top_items_by_activation(
    acts: torch.Tensor,
    item_ids: torch.Tensor,
    k: int,
    n_items: Optional[int] = None,
    positive_only: bool = False,
    chunk: Optional[int] = None,
    return_values: bool = False,
):
    """Per latent, the ``k`` distinct items at the positions with the largest activations.

    An item's score for a latent is its maximum activation over its positions;
    items never seen in ``item_ids`` are not candidates.  Returns ``[L, k]`` int64
    item ids (and the ``[L, k]`` max activations when ``return_values``), best
    first; slots left empty (fewer than ``k`` distinct items, or with
    ``positive_only`` the latent fires on fewer than ``k`` items) hold ``-1``
    (value ``-inf``).
    """
    acts = _check_acts(acts)
    n, n_latents = acts.shape
    item_ids = _check_item_ids(item_ids, n, n_items).to(acts.device)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if n_items is None:
        n_items = int(item_ids.max()) + 1
    kk = min(k, n_items)
    ids = torch.full((n_latents, k), -1, dtype=torch.int64, device=acts.device)
    scores = torch.full((n_latents, k), -math.inf, dtype=acts.dtype, device=acts.device)
    step = _chunk_size(chunk, max(n, n_items), n_latents)
    for lo in range(0, n_latents, step):
        hi = min(lo + step, n_latents)
        c = hi - lo
        x = acts[:, lo:hi]
        if positive_only:
            # Only firing entries matter: reduce over the positive ones (sparse for an SAE).
            flat_x = x.contiguous().view(-1)
            idx = torch.nonzero(flat_x > 0).squeeze(1)  # position * c + latent
            pos = torch.div(idx, c, rounding_mode="floor")
            target = (idx - pos * c) * n_items + torch.index_select(item_ids, 0, pos)
            best = torch.zeros(c * n_items, dtype=acts.dtype, device=acts.device)
            best.scatter_reduce_(0, target, torch.index_select(flat_x, 0, idx), reduce="amax", include_self=True)
            best = best.view(c, n_items)
            best[best <= 0] = -math.inf
        else:
            best = torch.full((n_items, c), -math.inf, dtype=acts.dtype, device=acts.device)
            best.scatter_reduce_(0, item_ids[:, None].expand_as(x), x, reduce="amax", include_self=True)
            best = best.t()
        v, i = torch.topk(best, kk, dim=1)
        keep = torch.isfinite(v) & ((v > 0) if positive_only else torch.ones_like(v, dtype=torch.bool))
        ids[lo:hi, :kk] = torch.where(keep, i, torch.full_like(i, -1))
        scores[lo:hi, :kk] = torch.where(keep, v, torch.full_like(v, -math.inf))
    return (ids, scores) if return_values else ids


@torch.no_grad()
def logit_lens(
    decoder_directions: torch.Tensor,
    item_embeddings: torch.Tensor,
    k: int,
    exclude_padding: bool = True,
    chunk: int = 256,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Items a latent's decoder direction promotes through the (tied) item-scoring head.

    ``scores = decoder_directions @ item_embeddings.T``; returns the top ``k``
    item ids ``[L, k]`` (int64) and their scores ``[L, k]``, best first.  With
    ``exclude_padding`` item 0 (RecBole's padding id) is never returned.
    """
    if decoder_directions.dim() != 2 or item_embeddings.dim() != 2:
        raise ValueError("decoder_directions must be [L, d] and item_embeddings [n_items, d]")
    if decoder_directions.shape[1] != item_embeddings.shape[1]:
        raise ValueError(
            f"decoder directions have width {decoder_directions.shape[1]} but item embeddings "
            f"{item_embeddings.shape[1]}: use the directions in the raw hidden space "
            "(decoder_directions(raw=True)) of the layer whose output feeds the item head"
        )
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    emb = item_embeddings.to(device=decoder_directions.device, dtype=torch.float32)
    first = 1 if exclude_padding else 0
    n_cand = emb.shape[0] - first
    if n_cand < 1:
        raise ValueError("no candidate items for the logit lens")
    kk = min(k, n_cand)
    n_latents = decoder_directions.shape[0]
    ids = torch.full((n_latents, k), -1, dtype=torch.int64, device=emb.device)
    vals = torch.full((n_latents, k), -math.inf, dtype=torch.float32, device=emb.device)
    cand = emb[first:]
    for lo in range(0, n_latents, max(1, int(chunk))):
        hi = min(lo + max(1, int(chunk)), n_latents)
        s = decoder_directions[lo:hi].to(torch.float32) @ cand.t()
        v, i = torch.topk(s, kk, dim=1)
        ids[lo:hi, :kk] = i + first
        vals[lo:hi, :kk] = v
    return ids, vals


# --------------------------------------------------------------------------- all together
def _r(x: Optional[float], nd: int = 4) -> Optional[float]:
    if x is None:
        return None
    x = float(x)
    return round(x, nd) if math.isfinite(x) else None


def _round_record(d: dict) -> dict:
    return {key: (_r(val) if isinstance(val, float) else val) for key, val in d.items()}


def _round_tree(obj):
    """Floats rounded (non-finite -> None) throughout nested dicts and lists."""
    if isinstance(obj, float):
        return _r(obj)
    if isinstance(obj, dict):
        return {key: _round_tree(val) for key, val in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_round_tree(val) for val in obj]
    return obj


def _value_slice(stats: Mapping[str, torch.Tensor], lo: int, hi: int) -> Dict[str, torch.Tensor]:
    """The stats of values ``lo:hi`` (per-latent entries unchanged)."""
    out = {}
    for key, val in stats.items():
        if key in ("support", "base_rate"):
            out[key] = val[lo:hi]
        elif val.dim() == 2:
            out[key] = val[:, lo:hi]
        else:
            out[key] = val
    return out


def _titles_of(ids: Sequence[int], titles: Optional[Sequence[str]]) -> List[str]:
    out = []
    for i in ids:
        if titles is not None and 0 <= i < len(titles) and titles[i] is not None:
            out.append(str(titles[i]))
        else:
            out.append(str(i))
    return out


@torch.no_grad()
def interpret(
    sae_acts: torch.Tensor,
    raw_acts: torch.Tensor,
    item_ids: torch.Tensor,
    attributes: Mapping[str, Tuple[Sequence[str], torch.Tensor]],
    titles: Optional[Sequence[str]] = None,
    decoder_directions: Optional[torch.Tensor] = None,
    item_embeddings: Optional[torch.Tensor] = None,
    k: int = 10,
    min_support: int = 10,
    min_corr: float = 0.1,
    label_top: int = 3,
    chunk: Optional[int] = None,
) -> dict:
    """Interpret SAE latents against item attributes, with raw hidden dims as baseline.

    Args:
        sae_acts: ``[N, L]`` SAE latent activations at N positions.
        raw_acts: ``[N, d]`` the hidden states the SAE was trained on (same positions).
        item_ids: ``[N]`` item at each position.
        attributes: field -> (value names ``[V]``, bool matrix ``[n_items, V]``).
        titles: item titles indexed by item id (``None``: ids as text).
        decoder_directions: ``[L, d]`` latent directions in the raw hidden space
            (``sae.decoder_directions(raw=True)``); with ``item_embeddings``
            ``[n_items, d]`` enables the logit lens (skipped if either is ``None``).
        k: items per latent (top-activating and logit lens).
        min_support: positions a value needs to count in the summaries.
        min_corr, label_top: labelling (see ``label_latents``).

    Returns a JSON-serialisable dict (ints for ids, floats rounded to 4 decimals)::

        {"n_positions", "n_latents", "n_alive", "n_dead", "n_raw_dims", "min_support", "k",
         "fields": {field: {
             "summary": <monosemanticity_summary with the raw dims' linear_probe_corr and the
                         held_out_best_corr of both, rounded>,
             "values": [{"value", "support", "base_rate",
                         "sae": {"latent", "corr", "auc", "precision", "recall"},   # best by |corr|
                         "sae_auc": {...same keys...},                             # best by AUC
                         "raw": {"latent", "corr", "auc", "precision", "recall"},   # best raw dim
                         "raw_auc": {...}}]}},
         "latents": [{"id", "label", "firing_rate",
                      "top_items": [ids], "top_titles": [str],
                      "logit_items": [ids], "logit_titles": [str], "logit_scores": [float],
                      "best_values": [{"field", "value", "corr", "auc", "precision"}]}]}

    ``latents`` lists the alive latents only (firing on at least one position),
    in id order.  With several fields the labels and best values name values as
    ``field=value``.
    """
    sae_acts = _check_acts(sae_acts, "sae_acts")
    raw_acts = _check_acts(raw_acts, "raw_acts")
    n, n_latents = sae_acts.shape
    if raw_acts.shape[0] != n:
        raise ValueError(f"sae_acts has {n} positions but raw_acts {raw_acts.shape[0]}")
    if not attributes:
        raise ValueError("no item attributes given: pass at least one field -> (values, matrix)")

    # One pass over the activations for all fields: their matrices side by side.
    all_names: List[str] = []
    all_fields: List[Tuple[str, str]] = []
    spans: List[Tuple[str, List[str], int, int]] = []
    matrices = []
    several = len(attributes) > 1
    for field, (values, matrix) in attributes.items():
        values = [str(v) for v in values]
        matrix = _check_attr(matrix)
        if matrix.shape[1] != len(values):
            raise ValueError(f"field {field!r}: {len(values)} value names for a matrix with {matrix.shape[1]} columns")
        if matrices and matrix.shape[0] != matrices[0].shape[0]:
            raise ValueError(f"field {field!r}: {matrix.shape[0]} item rows, the first field has {matrices[0].shape[0]}")
        spans.append((field, values, len(all_names), len(all_names) + len(values)))
        matrices.append(matrix)
        all_names += [f"{field}={v}" if several else v for v in values]
        all_fields += [(field, v) for v in values]
    joint_matrix = torch.cat(matrices, dim=1)
    joint = latent_attribute_stats(sae_acts, item_ids, joint_matrix, chunk=chunk)
    joint_raw = latent_attribute_stats(raw_acts, item_ids, joint_matrix, chunk=chunk)
    probe = held_out = None
    if _both_parities(item_ids):
        probe = linear_probe_corr(raw_acts, item_ids, joint_matrix)
        held_out = tuple(held_out_best_corr(a, item_ids, joint_matrix, chunk=chunk) for a in (sae_acts, raw_acts))
    firing_rate = joint["firing_rate"]

    fields_out = {}
    for field, values, lo, hi in spans:
        st_sae, st_raw = _value_slice(joint, lo, hi), _value_slice(joint_raw, lo, hi)
        summary = _round_tree(monosemanticity_summary(
            st_sae, st_raw, values, min_support=min_support, probe=None if probe is None else probe[lo:hi],
            held_out=None if held_out is None else (held_out[0][lo:hi], held_out[1][lo:hi])))
        per_value = []
        for s, r in zip(best_per_value(st_sae, values), best_per_value(st_raw, values)):
            per_value.append({
                "value": s["value"],
                "support": s["support"],
                "base_rate": _r(s["base_rate"]),
                "sae": _round_record(s["by_corr"]),
                "sae_auc": _round_record(s["by_auc"]),
                "raw": _round_record(r["by_corr"]),
                "raw_auc": _round_record(r["by_auc"]),
            })
        fields_out[field] = {"summary": summary, "values": per_value}

    labels = label_latents(joint, all_names, top=label_top, min_corr=min_corr, min_support=min_support)
    eligible = joint["corr"].clone()
    eligible[:, joint["support"] < min_support] = -math.inf
    top_c, top_v = _top_values(eligible, label_top, None)

    alive = (firing_rate > 0).nonzero().flatten().tolist()
    top_ids = top_items_by_activation(sae_acts, item_ids, k, positive_only=True, chunk=chunk)
    lens_ids = lens_scores = None
    if decoder_directions is not None and item_embeddings is not None:
        if decoder_directions.shape[0] != n_latents:
            raise ValueError(f"{decoder_directions.shape[0]} decoder directions for {n_latents} latents")
        lens_ids, lens_scores = logit_lens(decoder_directions, item_embeddings, k)

    latents = []
    for lat in alive:
        tops = [i for i in top_ids[lat].tolist() if i >= 0]
        best_values = []
        for c, j in zip(top_c[lat].tolist(), top_v[lat].tolist()):
            if not math.isfinite(c):
                continue
            field, value = all_fields[j]
            best_values.append({
                "field": field,
                "value": value,
                "corr": _r(c),
                "auc": _r(joint["auc"][lat, j]),
                "precision": _r(joint["precision"][lat, j]),
            })
        rec = {
            "id": int(lat),
            "label": labels[lat],
            "firing_rate": _r(firing_rate[lat]),
            "top_items": tops,
            "top_titles": _titles_of(tops, titles),
            "logit_items": [],
            "logit_titles": [],
            "logit_scores": [],
            "best_values": best_values,
        }
        if lens_ids is not None:
            li = [i for i in lens_ids[lat].tolist() if i >= 0]
            rec["logit_items"] = li
            rec["logit_titles"] = _titles_of(li, titles)
            rec["logit_scores"] = [_r(s) for s in lens_scores[lat, : len(li)].tolist()]
        latents.append(rec)

    return {
        "n_positions": int(n),
        "n_latents": int(n_latents),
        "n_alive": len(alive),
        "n_dead": int(n_latents - len(alive)),
        "n_raw_dims": int(raw_acts.shape[1]),
        "min_support": int(min_support),
        "k": int(k),
        "fields": fields_out,
        "latents": latents,
    }
