"""Items of a latent: those at the positions where it fires most, and those its direction promotes.

:func:`top_items_by_activation` reads the activations; :func:`logit_lens` scores the items through the
recommender's (tied) item head.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

from recbole_sae.analysis.checks import check_acts, check_item_ids, chunk_size

__all__ = ["logit_lens", "top_items_by_activation"]


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
    acts = check_acts(acts)
    n, n_latents = acts.shape
    item_ids = check_item_ids(item_ids, n, n_items).to(acts.device)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if n_items is None:
        n_items = int(item_ids.max()) + 1
    kk = min(k, n_items)
    ids = torch.full((n_latents, k), -1, dtype=torch.int64, device=acts.device)
    scores = torch.full((n_latents, k), -math.inf, dtype=acts.dtype, device=acts.device)
    step = chunk_size(chunk, max(n, n_items), n_latents)
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
