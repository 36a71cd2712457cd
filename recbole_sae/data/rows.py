"""The rows of RecBole's sequential datasets: one row per prefix, consecutive per user in time order."""

from __future__ import annotations

import torch


def last_row_mask(user_ids: torch.Tensor) -> torch.Tensor:
    """``[n]`` bool: whether each row is its user's last (the rows of a user are consecutive)."""
    is_last = torch.ones(user_ids.numel(), dtype=torch.bool)
    is_last[:-1] = user_ids[1:] != user_ids[:-1]
    return is_last
