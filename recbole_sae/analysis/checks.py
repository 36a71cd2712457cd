"""Argument checks and chunk sizes shared by the interpretation statistics.

Every statistic takes ``acts [N positions, L latents]``, ``item_ids [N]`` and an attribute matrix
``[n_items, V values]``; these functions check and normalise them, and size the chunks of latents
the statistics process at once.
"""

from __future__ import annotations

from typing import Optional

import torch

# Number of (position, latent) entries handled at once by the chunked
# computations.  Dense chunks need about 80 bytes of working memory per entry
# (indices, sort permutations, float64 copies), sparse ones a fraction of it.
DEFAULT_ELEMENT_BUDGET = 1 << 22


def check_acts(acts: torch.Tensor, name: str = "acts") -> torch.Tensor:
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


def check_finite(val: torch.Tensor) -> None:
    # Called on the nonzero entries only (NaN and inf are nonzero), which is cheap.
    if not bool(torch.isfinite(val).all()):
        raise ValueError("activations contain NaN or infinite values")


def check_item_ids(item_ids: torch.Tensor, n: int, n_items: Optional[int] = None) -> torch.Tensor:
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


def check_attr(attr_matrix: torch.Tensor) -> torch.Tensor:
    if not isinstance(attr_matrix, torch.Tensor) or attr_matrix.dim() != 2:
        shape = tuple(attr_matrix.shape) if isinstance(attr_matrix, torch.Tensor) else type(attr_matrix).__name__
        raise ValueError(f"attr_matrix must be a 2-D tensor [n_items, V values], got {shape}")
    if attr_matrix.dtype != torch.bool:
        if not bool(((attr_matrix == 0) | (attr_matrix == 1)).all()):
            raise ValueError("attr_matrix must be boolean (or hold only 0 and 1)")
        attr_matrix = attr_matrix != 0
    return attr_matrix


def chunk_size(chunk: Optional[int], n_rows: int, n_cols: int) -> int:
    if chunk is None:
        return max(1, min(n_cols, DEFAULT_ELEMENT_BUDGET // max(n_rows, 1)))
    if int(chunk) < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    return int(chunk)


def both_parities(item_ids: torch.Tensor) -> bool:
    """Whether the positions hold items with even and with odd ids (the held-out statistics' two folds)."""
    return torch.unique(item_ids.long() % 2).numel() == 2
