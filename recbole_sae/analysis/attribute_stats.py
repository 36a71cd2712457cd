"""Statistics of every latent against every attribute value, over positions.

Every statistic here is computed over *positions*: row ``n`` of an activation
matrix ``acts [N, L]`` is one (sequence, position) pair whose item is
``item_ids[n]``.  For an attribute value ``v`` the binary target of row ``n`` is
``attr_matrix[item_ids[n], v]`` (e.g. "the item at this position is a
Western").  The same functions run on SAE latents and, as the baseline, on the
raw hidden dimensions of the recommender (a raw dimension is treated as a
"latent"), so the two can be compared side by side (the monosemanticity
ratio).  The module takes plain tensors; it knows nothing of RecBole.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch

from recbole_sae.analysis.checks import check_acts, check_attr, check_finite, check_item_ids, chunk_size

__all__ = ["latent_attribute_stats"]

take = torch.index_select  # much faster than advanced indexing for 1-D gathers


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


def _sorted_nonzeros(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The nonzero entries of ``x [N, c]`` sorted by (latent, value): (values, positions, latents)."""
    n = x.shape[0]
    # Latent-major layout: the nonzeros come out grouped by latent, so the sort below
    # only reorders within a latent's run and the gathers stay cache-friendly.
    flat_x = x.contiguous().t().contiguous().view(-1)  # (a row copy first: faster than a strided transpose)
    idx = torch.nonzero(flat_x).squeeze(1)  # idx = latent * N + position
    val = take(flat_x, 0, idx)
    check_finite(val)
    lat = torch.div(idx, n, rounding_mode="floor")
    # Sort by (latent, value) with one integer sort of a composite key.
    key, n_keys = _order_key(val)
    order = torch.argsort(lat * n_keys + key)
    val = take(val, 0, order)
    pos = take(idx, 0, order) - take(lat, 0, order) * n
    return val, pos, take(lat, 0, order)


def _tie_ranks(
    val: torch.Tensor, lat: torch.Tensor, nnz: torch.Tensor, n_neg: torch.Tensor, n_zero: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ranks of the sorted nonzeros in their latents' full columns, zeros included.

    Returns the average rank of the zeros per latent ``[c]``, each nonzero's average rank
    minus that ``[nnz]``, and the number of tie groups per latent ``[c]`` (zeros included).
    """
    c = nnz.shape[0]
    row_start = torch.cumsum(nnz, 0) - nnz
    # Tie groups among the nonzeros (a group never spans two latents).
    m = val.shape[0]
    new_group = torch.ones(m, dtype=torch.bool, device=val.device)
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
    n_groups = torch.bincount(g_lat, minlength=c) + (n_zero > 0).to(torch.int64)
    return zero_rank, delta, n_groups


def _moments(val64: torch.Tensor, lat: torch.Tensor, n: int, n_zero: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per latent, the sum of the activations and the sum of their squared deviations from the mean."""
    c = n_zero.shape[0]
    sum_x = torch.zeros(c, dtype=torch.float64, device=val64.device).index_add_(0, lat, val64)
    mean = sum_x / n
    dev_sq = (val64 - take(mean, 0, lat)) ** 2
    ss = torch.zeros(c, dtype=torch.float64, device=val64.device).index_add_(0, lat, dev_sq) + n_zero * mean * mean
    return sum_x, ss


def _per_item_sums(
    columns: Tuple[torch.Tensor, ...],
    lat: torch.Tensor,
    pos: torch.Tensor,
    item_ids: torch.Tensor,
    c: int,
    n_items: int,
) -> torch.Tensor:
    """``[len(columns), c, n_items]``: each per-nonzero column summed per (latent, item of the position)."""
    flat = lat * n_items + take(item_ids, 0, pos)
    per_item = torch.zeros(len(columns), c * n_items, dtype=torch.float64, device=lat.device)
    for row, column in zip(per_item, columns):
        row.index_add_(0, flat, column)
    return per_item.view(len(columns), c, n_items)


def _chunk_sums(x: torch.Tensor, item_ids: torch.Tensor, n_items: int) -> Dict[str, torch.Tensor]:
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
    val, pos, lat = _sorted_nonzeros(x)
    negative = val < 0
    nnz = torch.bincount(lat, minlength=c)
    n_neg = torch.bincount(lat, weights=negative.to(torch.float64), minlength=c).round().to(torch.int64)
    n_zero = n - nnz
    zero_rank, delta, n_groups = _tie_ranks(val, lat, nnz, n_neg, n_zero)
    val64 = val.to(torch.float64)
    sum_x, ss = _moments(val64, lat, n, n_zero)
    fires = ~negative
    per_item = _per_item_sums((val64, delta, fires.to(torch.float64)), lat, pos, item_ids, c, n_items)
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


def _value_totals(item_ids: torch.Tensor, attr64: torch.Tensor, n: int) -> Dict[str, torch.Tensor]:
    """Per attribute value ``[V]``: its support and the denominators that do not depend on the latent."""
    support = torch.bincount(item_ids, minlength=attr64.shape[0]).to(torch.float64) @ attr64  # [V], exact
    n_neg = n - support
    both = (support > 0) & (n_neg > 0)
    return {
        "support": support,
        "both": both,
        "sd_y": torch.sqrt(support * n_neg / n),  # sqrt(N * var(target))
        "auc_offset": support * (support + 1.0) * 0.5,
        "auc_den": torch.where(both, support * n_neg, torch.ones_like(support)),
        "safe_support": support.clamp_min(1.0),
    }


def _chunk_stats(
    cs: Dict[str, torch.Tensor], attr64: torch.Tensor, totals: Dict[str, torch.Tensor], n: int
) -> Dict[str, torch.Tensor]:
    """Correlation, AUC, precision, recall ``[c, V]`` and firing count ``[c]`` of a chunk, from its sums."""
    c, n_values = cs["sum_x"].shape[0], attr64.shape[1]
    support, both = totals["support"], totals["both"]
    sums = (torch.cat([cs["item_x"], cs["item_rank"], cs["item_fire"]]) @ attr64).view(3, c, n_values)
    sum_xy, rank_delta, fire_and_v = sums[0], sums[1], sums[2]

    mean = cs["sum_x"] / n
    cov = sum_xy - mean[:, None] * support[None, :]  # sum over positions of (x - mean) * y
    den = torch.sqrt(cs["ss_centred"])[:, None] * totals["sd_y"][None, :]
    ok = (~cs["constant"])[:, None] & both[None, :] & (den > 0)
    corr = torch.where(ok, cov / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(cov))

    rank_sum = cs["zero_rank"][:, None] * support[None, :] + rank_delta
    a = (rank_sum - totals["auc_offset"][None, :]) / totals["auc_den"][None, :]
    auc = torch.where(both[None, :], a, torch.full_like(a, 0.5))

    nf = cs["n_fire"]
    precision = torch.where(nf[:, None] > 0, fire_and_v / nf.clamp_min(1.0)[:, None], torch.zeros_like(fire_and_v))
    recall = fire_and_v / totals["safe_support"][None, :]
    return {"corr": corr, "auc": auc, "precision": precision, "recall": recall, "n_fire": nf}


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
    acts = check_acts(acts)
    attr = check_attr(attr_matrix)
    n, n_latents = acts.shape
    n_items, n_values = attr.shape
    item_ids = check_item_ids(item_ids, n, n_items).to(acts.device)
    attr64 = attr.to(device=acts.device, dtype=torch.float64)
    totals = _value_totals(item_ids, attr64, n)

    corr = torch.zeros(n_latents, n_values, dtype=torch.float64, device=acts.device)
    out = {
        "corr": corr,
        "auc": torch.full_like(corr, 0.5),
        "precision": torch.zeros_like(corr),
        "recall": torch.zeros_like(corr),
        "n_fire": torch.zeros(n_latents, dtype=torch.float64, device=acts.device),
    }
    step = chunk_size(chunk, max(n, n_items), n_latents)
    for lo in range(0, n_latents, step):
        hi = min(lo + step, n_latents)
        for key, value in _chunk_stats(_chunk_sums(acts[:, lo:hi], item_ids, n_items), attr64, totals, n).items():
            out[key][lo:hi] = value

    corr.clamp_(-1.0, 1.0)
    support = totals["support"]
    return {
        "corr": corr,
        "auc": out["auc"],
        "precision": out["precision"],
        "recall": out["recall"],
        "firing_rate": out["n_fire"] / n,
        "n_fire": out["n_fire"].round().to(torch.int64),
        "support": support.round().to(torch.int64),
        "base_rate": support / n,
    }
