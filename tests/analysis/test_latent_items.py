"""Items of a latent: top-activating items and the logit lens."""

from __future__ import annotations

import pytest
import torch

from recbole_sae.analysis import logit_lens, top_items_by_activation


def test_top_items_by_activation_distinct_items():
    item_ids = torch.tensor([1, 2, 3, 2, 4, 1, 5])
    acts = torch.tensor(
        [
            [0.1, 0.0],
            [0.9, 0.0],
            [0.5, 0.0],
            [0.8, 0.0],  # item 2 again: must not appear twice
            [0.0, 0.0],
            [0.7, 3.0],
            [0.2, 0.0],
        ]
    )
    ids, vals = top_items_by_activation(acts, item_ids, k=3, return_values=True)
    assert ids[0].tolist() == [2, 1, 3]
    assert vals[0].tolist() == pytest.approx([0.9, 0.7, 0.5])
    # Latent 1 fires on item 1 only: with positive_only the rest is empty (-1).
    ids = top_items_by_activation(acts, item_ids, k=3, positive_only=True, chunk=1)
    assert ids[1].tolist() == [1, -1, -1]
    # More slots than distinct items.
    assert top_items_by_activation(acts[:2], item_ids[:2], k=4)[0].tolist() == [2, 1, -1, -1]


def test_logit_lens_finds_planted_items():
    g = torch.Generator().manual_seed(3)
    emb = torch.randn(12, 8, generator=g) * 0.1
    direction = torch.zeros(2, 8)
    direction[0, 0] = 1.0
    direction[1, 1] = 1.0
    emb[[4, 7], 0] = torch.tensor([2.0, 3.0])  # latent 0 promotes 7 then 4
    emb[[2, 9], 1] = torch.tensor([5.0, 4.0])  # latent 1 promotes 2 then 9
    emb[0] = 100.0  # padding row: huge, must be excluded
    ids, scores = logit_lens(direction, emb, k=2)
    assert ids.tolist() == [[7, 4], [2, 9]]
    assert scores[0].tolist() == pytest.approx([3.0, 2.0])
    assert logit_lens(direction, emb, k=1, exclude_padding=False)[0].tolist() == [[0], [0]]
    with pytest.raises(ValueError, match="raw=True"):
        logit_lens(torch.zeros(2, 5), emb, k=2)
