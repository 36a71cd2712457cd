"""Attribute statistics of latents on planted toys where the answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recbole_sae.analysis import latent_attribute_stats

try:  # a RecBole dependency, so normally present
    from sklearn.metrics import roc_auc_score
except ImportError:  # pragma: no cover
    roc_auc_score = None


def brute_auc(score: np.ndarray, target: np.ndarray) -> float:
    """P(score of a positive > score of a negative) + 0.5 P(tie), over all pairs."""
    pos, neg = score[target], score[~target]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / (len(pos) * len(neg)))


@pytest.fixture
def planted():
    """6 items (0 = padding), attribute 'A' on items 1, 3, 5; 'B' on item 2 only."""
    g = torch.Generator().manual_seed(0)
    n = 600
    item_ids = torch.randint(1, 6, (n,), generator=g)
    attr = torch.zeros(6, 2, dtype=torch.bool)
    attr[[1, 3, 5], 0] = True
    attr[2, 1] = True
    indicator = attr[item_ids, 0].float()
    acts = torch.stack(
        [
            indicator,  # 0: exactly attribute A
            torch.relu(torch.randn(n, generator=g)),  # 1: noise, independent of items
            torch.zeros(n),  # 2: dead (constant)
            torch.full((n,), 0.3),  # 3: constant nonzero
            2.0 * (1 - indicator),  # 4: exactly "not A"
        ],
        dim=1,
    )
    return acts, item_ids, attr


def test_planted_latents_have_the_known_statistics(planted):
    acts, item_ids, attr = planted
    st = latent_attribute_stats(acts, item_ids, attr)
    for key in ("corr", "auc", "precision", "recall"):
        assert st[key].shape == (5, 2)
        assert not torch.isnan(st[key]).any()
    # Latent 0 is attribute A.
    assert st["corr"][0, 0].item() == pytest.approx(1.0, abs=1e-12)
    assert st["auc"][0, 0].item() == 1.0
    assert st["precision"][0, 0].item() == 1.0
    assert st["recall"][0, 0].item() == 1.0
    # Its complement: corr -1, AUC 0, never fires on A.
    assert st["corr"][4, 0].item() == pytest.approx(-1.0, abs=1e-12)
    assert st["auc"][4, 0].item() == 0.0
    assert st["precision"][4, 0].item() == 0.0
    # Noise: near 0 correlation, near 0.5 AUC.
    assert abs(st["corr"][1, 0].item()) < 0.15
    assert abs(st["auc"][1, 0].item() - 0.5) < 0.1
    # Constant latents: exactly 0 and 0.5, whatever the value.
    for lat in (2, 3):
        assert torch.equal(st["corr"][lat], torch.zeros(2, dtype=torch.float64))
        assert torch.equal(st["auc"][lat], torch.full((2,), 0.5, dtype=torch.float64))
    assert st["precision"][2].tolist() == [0.0, 0.0]  # never fires
    # Supports and rates.
    n_a = int(attr[item_ids, 0].sum())
    assert st["support"].tolist() == [n_a, int((item_ids == 2).sum())]
    assert st["base_rate"][0].item() == pytest.approx(n_a / 600)
    assert st["firing_rate"][0].item() == pytest.approx(n_a / 600)
    assert st["firing_rate"][2].item() == 0.0
    assert st["firing_rate"][3].item() == 1.0
    # The constant-nonzero latent fires everywhere: precision = base rate, recall 1.
    assert st["precision"][3, 0].item() == pytest.approx(n_a / 600)
    assert st["recall"][3].tolist() == [1.0, 1.0]


def test_value_without_positions_gives_numbers_not_nan(planted):
    acts, item_ids, attr = planted
    attr = torch.cat([attr, torch.zeros(6, 1, dtype=torch.bool), torch.ones(6, 1, dtype=torch.bool)], dim=1)
    st = latent_attribute_stats(acts, item_ids, attr)
    for v in (2, 3):  # never present / always present
        assert torch.equal(st["corr"][:, v], torch.zeros(5, dtype=torch.float64))
        assert torch.equal(st["auc"][:, v], torch.full((5,), 0.5, dtype=torch.float64))
    assert st["recall"][:, 2].tolist() == [0.0] * 5
    assert st["support"][2:].tolist() == [0, 600]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_auc_and_pearson_match_references_with_ties(dtype):
    g = torch.Generator().manual_seed(1)
    n, n_lat, n_items, n_val = 500, 6, 30, 4
    item_ids = torch.randint(0, n_items, (n,), generator=g)
    attr = torch.rand(n_items, n_val, generator=g) < 0.35
    acts = torch.empty(n, n_lat, dtype=dtype)
    acts[:, 0] = torch.randint(-2, 3, (n,), generator=g).to(dtype)  # ties, negatives
    acts[:, 1] = torch.relu(torch.randn(n, generator=g)).to(dtype) * (torch.rand(n, generator=g) < 0.2)
    acts[:, 2] = torch.randn(n, generator=g).to(dtype)  # dense, no ties
    acts[:, 3] = torch.randint(0, 3, (n,), generator=g).to(dtype) * 0.5 - 0.5  # -0.5, 0, 0.5
    acts[:, 4] = torch.where(torch.rand(n, generator=g) < 0.5, -1.5, 2.5).to(dtype)  # two values, no zero
    acts[:, 5] = torch.randn(n, generator=g).to(dtype) * attr[item_ids, 0] + attr[item_ids, 1].to(dtype)
    st = latent_attribute_stats(acts, item_ids, attr)
    a = acts.double().numpy()
    y = attr[item_ids].numpy()
    for lat in range(n_lat):
        for v in range(n_val):
            expected = brute_auc(a[:, lat], y[:, v])
            assert st["auc"][lat, v].item() == pytest.approx(expected, abs=1e-12)
            if roc_auc_score is not None:
                assert st["auc"][lat, v].item() == pytest.approx(roc_auc_score(y[:, v], a[:, lat]), abs=1e-12)
            assert st["corr"][lat, v].item() == pytest.approx(np.corrcoef(a[:, lat], y[:, v])[0, 1], abs=1e-9)
            fires = a[:, lat] > 0
            assert st["precision"][lat, v].item() == pytest.approx(y[fires, v].mean() if fires.any() else 0.0)
            assert st["recall"][lat, v].item() == pytest.approx(fires[y[:, v]].mean())


def test_chunking_does_not_change_the_result():
    g = torch.Generator().manual_seed(2)
    n, n_lat, n_items = 400, 13, 25
    item_ids = torch.randint(0, n_items, (n,), generator=g)
    attr = torch.rand(n_items, 5, generator=g) < 0.3
    acts = torch.relu(torch.randn(n, n_lat, generator=g) - 0.8)
    acts[:, 4] = 0.0
    whole = latent_attribute_stats(acts, item_ids, attr, chunk=n_lat)
    for chunk in (1, 3, 5, None):
        part = latent_attribute_stats(acts, item_ids, attr, chunk=chunk)
        for key, val in whole.items():
            assert torch.allclose(part[key], val, rtol=0, atol=1e-12), (chunk, key)
    # A non-contiguous view gives the same numbers too.
    wide = torch.zeros(n, 2 * n_lat)
    wide[:, ::2] = acts
    strided = latent_attribute_stats(wide[:, ::2], item_ids, attr, chunk=4)
    assert torch.allclose(strided["auc"], whole["auc"], rtol=0, atol=1e-12)


def test_input_errors():
    acts = torch.rand(10, 3)
    attr = torch.zeros(4, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match="rows"):
        latent_attribute_stats(acts, torch.full((10,), 4), attr)
    with pytest.raises(ValueError, match="one item per position"):
        latent_attribute_stats(acts, torch.zeros(9, dtype=torch.long), attr)
    bad = acts.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        latent_attribute_stats(bad, torch.zeros(10, dtype=torch.long), attr)
