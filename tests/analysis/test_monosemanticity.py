"""Best units, labels and the SAE-vs-raw summary on hand-made statistics; the held-out baselines on planted toys."""

from __future__ import annotations

import pytest
import torch

from recbole_sae.analysis import (
    best_per_value,
    held_out_best_corr,
    label_latents,
    latent_attribute_stats,
    linear_probe_corr,
    monosemanticity_summary,
)


def _stats(corr, auc, support, precision=None):
    corr = torch.tensor(corr, dtype=torch.float64)
    return {
        "corr": corr,
        "auc": torch.tensor(auc, dtype=torch.float64),
        "precision": torch.zeros_like(corr) if precision is None else torch.tensor(precision, dtype=torch.float64),
        "recall": torch.zeros_like(corr),
        "support": torch.tensor(support),
        "base_rate": torch.tensor(support, dtype=torch.float64) / 100,
        "firing_rate": torch.full((corr.shape[0],), 0.1, dtype=torch.float64),
    }


def test_best_per_value_and_monosemanticity_ratio():
    values = ["Western", "Horror", "Rare"]
    support = [30, 20, 2]
    # SAE: latent 1 is Western (0.8), latent 2 is Horror (0.6); latent 0 weakly negative.
    sae = _stats(
        corr=[[-0.1, -0.05, 0.0], [0.8, 0.0, 0.9], [0.1, 0.6, 0.0]],
        auc=[[0.45, 0.48, 0.5], [0.95, 0.5, 0.99], [0.55, 0.85, 0.5]],
        support=support,
        precision=[[0.0, 0.0, 0.0], [0.9, 0.0, 0.1], [0.2, 0.7, 0.0]],
    )
    # Raw dims: a negative correlation counts by its magnitude.
    raw = _stats(corr=[[-0.4, 0.1, 0.0], [0.2, 0.2, 0.0]], auc=[[0.3, 0.6, 0.5], [0.6, 0.7, 0.5]], support=support)
    best = best_per_value(sae, values)
    assert [b["value"] for b in best] == values
    assert best[0]["by_corr"] == {"latent": 1, "corr": 0.8, "auc": 0.95, "precision": 0.9, "recall": 0.0}
    assert best[1]["by_auc"]["latent"] == 2 and best[1]["by_auc"]["auc"] == 0.85
    assert best[0]["support"] == 30 and best[0]["base_rate"] == pytest.approx(0.3)
    raw_best = best_per_value(raw, values)
    assert raw_best[0]["by_corr"]["latent"] == 0 and raw_best[0]["by_corr"]["corr"] == -0.4
    assert best_per_value(raw, values, abs_corr=False)[0]["by_corr"]["latent"] == 1

    s = monosemanticity_summary(sae, raw, values, min_support=10)
    assert s["n_values"] == 2  # "Rare" has too little support
    assert s["sae"]["mean_best_abs_corr"] == pytest.approx((0.8 + 0.6) / 2)
    assert s["raw"]["mean_best_abs_corr"] == pytest.approx((0.4 + 0.2) / 2)
    assert s["ratio_corr"] == pytest.approx(0.7 / 0.3)
    assert s["sae"]["mean_best_auc"] == pytest.approx((0.95 + 0.85) / 2)
    assert s["raw"]["mean_best_auc"] == pytest.approx((0.6 + 0.7) / 2)
    assert s["ratio_auc"] == pytest.approx(0.9 / 0.65)
    assert s["ratio_auc_above_chance"] == pytest.approx(0.4 / 0.15)
    western = s["rows"][0]
    assert western["value"] == "Western"
    assert western["raw_best_abs_corr"] == pytest.approx(0.4) and western["raw_dim"] == 0
    assert western["sae_best_abs_corr"] == pytest.approx(0.8) and western["sae_latent"] == 1
    assert western["gain"] == pytest.approx(0.4)
    assert (western["raw_best_auc"], western["sae_best_auc"]) == (0.6, 0.95)

    # by frequency: Western is on 30% of the positions, Horror on 20%
    split = monosemanticity_summary(sae, raw, values, min_support=10, rare_rate=0.25)["by_frequency"]
    assert split["rare_rate"] == 0.25
    assert split["rare"] == {
        "n_values": 1,
        "sae_mean_best_abs_corr": pytest.approx(0.6),
        "raw_mean_best_abs_corr": pytest.approx(0.2),
        "ratio_corr": pytest.approx(3.0),
    }
    assert split["common"] == {
        "n_values": 1,
        "sae_mean_best_abs_corr": pytest.approx(0.8),
        "raw_mean_best_abs_corr": pytest.approx(0.4),
        "ratio_corr": pytest.approx(2.0),
    }
    assert s["by_frequency"]["rare"]["n_values"] == 0 and s["by_frequency"]["rare"]["ratio_corr"] is None

    empty = monosemanticity_summary(sae, raw, values, min_support=1000)
    assert empty["n_values"] == 0 and empty["ratio_corr"] is None and empty["sae"]["mean_best_abs_corr"] is None


def test_labels():
    values = ["Western", "Drama", "Horror"]
    st = _stats(
        corr=[[0.71, 0.12, -0.3], [0.05, 0.0, 0.02], [0.2, 0.5, 0.3]],
        auc=[[0.9, 0.6, 0.3], [0.5, 0.5, 0.5], [0.6, 0.8, 0.7]],
        support=[10, 10, 1],
    )
    assert label_latents(st, values, top=3, min_corr=0.1) == [
        "Western (0.71) · Drama (0.12)",
        "unlabelled",
        "Drama (0.50) · Horror (0.30) · Western (0.20)",
    ]
    assert label_latents(st, values, top=1, min_corr=0.1)[2] == "Drama (0.50)"
    assert label_latents(st, values, top=3, min_corr=0.1, min_support=5)[2] == "Drama (0.50) · Western (0.20)"


def test_linear_probe_finds_a_value_spread_over_several_dims():
    g = torch.Generator().manual_seed(0)
    n_items, n = 2000, 8000
    item_vec = torch.randn(n_items, 4, generator=g)
    # value 0: sign of dim0 + dim1 + dim2 (no single dim holds it); value 1: unrelated; value 2: every item
    attr = torch.stack(
        [item_vec[:, :3].sum(dim=1) > 0, torch.rand(n_items, generator=g) < 0.3, torch.ones(n_items, dtype=torch.bool)],
        dim=1,
    )
    item_ids = torch.randint(0, n_items, (n,), generator=g)
    acts = item_vec[item_ids] + 0.1 * torch.randn(n, 4, generator=g)
    probe = linear_probe_corr(acts, item_ids, attr)
    assert probe.shape == (3,) and probe.dtype == torch.float64
    single = latent_attribute_stats(acts, item_ids, attr)["corr"][:, 0].abs().max()
    assert probe[0] > 0.75 and probe[0] > single + 0.2  # the read-out of all dims beats the best one
    assert abs(float(probe[1])) < 0.1  # held out by item: no fit to per-item noise
    assert probe[2] == 0.0  # a constant value
    # the scale of a dim changes nothing
    scaled = acts * torch.tensor([1.0, 100.0, 0.01, 3.0])
    assert torch.allclose(linear_probe_corr(scaled, item_ids, attr), probe, atol=1e-6)

    s = monosemanticity_summary(
        latent_attribute_stats(acts, item_ids, attr),
        latent_attribute_stats(acts, item_ids, attr),
        ["sum", "noise", "all"],
        min_support=10,
        probe=probe,
    )
    assert [row["probe_corr"] for row in s["rows"]] == pytest.approx(probe.tolist())
    assert s["probe_mean_corr"] == pytest.approx(float(probe.mean()))
    with pytest.raises(ValueError, match="probe has shape"):
        monosemanticity_summary(
            latent_attribute_stats(acts, item_ids, attr), latent_attribute_stats(acts, item_ids, attr), probe=probe[:2]
        )
    with pytest.raises(ValueError, match="even and with odd"):
        linear_probe_corr(acts, item_ids * 2, torch.cat([attr, attr]))


def test_held_out_best_corr_scores_the_unit_on_items_it_was_not_chosen_on():
    # 8 items, ids 0..7; value 0 ("Western") on items 0, 1, 2, 3; value 1 ("Drama") on 4, 5.
    n_items = 8
    attr = torch.zeros(n_items, 2, dtype=torch.bool)
    attr[:4, 0] = True
    attr[4:6, 1] = True
    item_ids = torch.arange(n_items).repeat(5)
    west, drama = attr[item_ids, 0].double(), attr[item_ids, 1].double()
    even = (item_ids % 2 == 0).double()
    acts = torch.stack(
        [
            west * even,  # unit 0: the even Westerns only (item recognition)
            west,  # unit 1: every Western
            -drama,  # unit 2: Drama with a negative sign
            drama * (2 * even - 1),  # unit 3: +Drama on even items, -Drama on odd ones
        ],
        dim=1,
    )
    full = latent_attribute_stats(acts, item_ids, attr)["corr"]
    assert full[:, 0].abs().max() == pytest.approx(1.0)  # unit 1 on all positions
    h = held_out_best_corr(acts, item_ids, attr)
    # Western: chosen on the even items, units 0 and 1 tie at 1 and the lower id (0) wins; it never
    # fires on the odd items (correlation 0 there). Chosen on the odd items: unit 1, which scores 1 on
    # the even ones. Mean: (0 + 1) / 2.
    assert h[0].item() == pytest.approx(0.5)
    # Drama: unit 2 (-1 on both halves) is chosen on each half with the sign it has there: +1.
    assert h[1].item() == pytest.approx(1.0)
    # Without unit 2, unit 3 is chosen (|corr| 1 on each half) and its sign flips between halves: -1.
    h3 = held_out_best_corr(acts[:, [0, 1, 3]], item_ids, attr)
    assert h3.tolist() == pytest.approx([0.5, -1.0])

    s = monosemanticity_summary(
        latent_attribute_stats(acts, item_ids, attr),
        latent_attribute_stats(acts[:, [1, 3]], item_ids, attr),
        ["Western", "Drama"],
        min_support=1,
        held_out=(h, held_out_best_corr(acts[:, [1, 3]], item_ids, attr)),
    )
    assert [r["sae_held_out_corr"] for r in s["rows"]] == pytest.approx([0.5, 1.0])
    assert [r["raw_held_out_corr"] for r in s["rows"]] == pytest.approx([1.0, -1.0])
    assert s["sae_mean_held_out_corr"] == pytest.approx(0.75)
    assert s["raw_mean_held_out_corr"] == pytest.approx(0.0)
    assert s["ratio_held_out"] is None  # the raw mean is 0
    assert s["by_frequency"]["common"]["sae_mean_held_out_corr"] == pytest.approx(0.75)
    with pytest.raises(ValueError, match=r"held_out\[1\] has shape"):
        monosemanticity_summary(
            latent_attribute_stats(acts, item_ids, attr),
            latent_attribute_stats(acts, item_ids, attr),
            held_out=(h, h[:1]),
        )
    with pytest.raises(ValueError, match="even and with odd"):
        held_out_best_corr(acts, item_ids * 2, torch.cat([attr, attr]))
