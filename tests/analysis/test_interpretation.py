"""Interpretation statistics on planted toys where the answer is known."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from recbole_sae.analysis import (
    best_per_value,
    interpret,
    label_latents,
    latent_attribute_stats,
    logit_lens,
    held_out_best_corr,
    linear_probe_corr,
    monosemanticity_summary,
    top_items_by_activation,
)

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
    acts = torch.stack([
        indicator,                                             # 0: exactly attribute A
        torch.relu(torch.randn(n, generator=g)),               # 1: noise, independent of items
        torch.zeros(n),                                        # 2: dead (constant)
        torch.full((n,), 0.3),                                 # 3: constant nonzero
        2.0 * (1 - indicator),                                 # 4: exactly "not A"
    ], dim=1)
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
    acts[:, 0] = torch.randint(-2, 3, (n,), generator=g).to(dtype)                      # ties, negatives
    acts[:, 1] = torch.relu(torch.randn(n, generator=g)).to(dtype) * (torch.rand(n, generator=g) < 0.2)
    acts[:, 2] = torch.randn(n, generator=g).to(dtype)                                  # dense, no ties
    acts[:, 3] = torch.randint(0, 3, (n,), generator=g).to(dtype) * 0.5 - 0.5           # -0.5, 0, 0.5
    acts[:, 4] = torch.where(torch.rand(n, generator=g) < 0.5, -1.5, 2.5).to(dtype)     # two values, no zero
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
    assert split["rare"] == {"n_values": 1, "sae_mean_best_abs_corr": pytest.approx(0.6),
                             "raw_mean_best_abs_corr": pytest.approx(0.2), "ratio_corr": pytest.approx(3.0)}
    assert split["common"] == {"n_values": 1, "sae_mean_best_abs_corr": pytest.approx(0.8),
                               "raw_mean_best_abs_corr": pytest.approx(0.4), "ratio_corr": pytest.approx(2.0)}
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


def test_top_items_by_activation_distinct_items():
    item_ids = torch.tensor([1, 2, 3, 2, 4, 1, 5])
    acts = torch.tensor([
        [0.1, 0.0],
        [0.9, 0.0],
        [0.5, 0.0],
        [0.8, 0.0],   # item 2 again: must not appear twice
        [0.0, 0.0],
        [0.7, 3.0],
        [0.2, 0.0],
    ])
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
    emb[[4, 7], 0] = torch.tensor([2.0, 3.0])   # latent 0 promotes 7 then 4
    emb[[2, 9], 1] = torch.tensor([5.0, 4.0])   # latent 1 promotes 2 then 9
    emb[0] = 100.0                              # padding row: huge, must be excluded
    ids, scores = logit_lens(direction, emb, k=2)
    assert ids.tolist() == [[7, 4], [2, 9]]
    assert scores[0].tolist() == pytest.approx([3.0, 2.0])
    assert logit_lens(direction, emb, k=1, exclude_padding=False)[0].tolist() == [[0], [0]]
    with pytest.raises(ValueError, match="raw=True"):
        logit_lens(torch.zeros(2, 5), emb, k=2)


def test_interpret_end_to_end_is_json_ready():
    g = torch.Generator().manual_seed(4)
    n_items, n = 9, 800
    item_ids = torch.randint(1, n_items, (n,), generator=g)
    genre = torch.zeros(n_items, 2, dtype=torch.bool)
    genre[[1, 2, 3], 0] = True           # Western
    genre[[4, 5, 6, 7, 8], 1] = True     # Drama
    brand = torch.zeros(n_items, 1, dtype=torch.bool)
    brand[[2, 5], 0] = True
    western = genre[item_ids, 0].float()
    sae_acts = torch.stack([
        western * (1 + item_ids.float() / 10),   # 0: the Western latent
        torch.zeros(n),                          # 1: dead
        torch.relu(torch.randn(n, generator=g)),  # 2: noise
    ], dim=1)
    raw = torch.randn(n, 4, generator=g) + 0.3 * western[:, None]
    d = 4
    directions = torch.zeros(3, d)
    directions[0, 0] = 1.0
    directions[2, 1] = 1.0
    emb = torch.zeros(n_items, d)
    emb[[3, 2, 1], 0] = torch.tensor([3.0, 2.0, 1.0])
    titles = ["[PAD]"] + [f"Movie {i}" for i in range(1, n_items)]
    result = interpret(
        sae_acts, raw, item_ids, {"genre": (["Western", "Drama"], genre), "brand": (["Acme"], brand)},
        titles, directions, emb, k=3, min_support=5,
    )
    json.loads(json.dumps(result, allow_nan=False))  # strict JSON
    assert (result["n_latents"], result["n_alive"], result["n_dead"], result["n_raw_dims"]) == (3, 2, 1, 4)
    assert [lat["id"] for lat in result["latents"]] == [0, 2]
    lat0 = result["latents"][0]
    assert lat0["label"].startswith("genre=Western (1.0") or lat0["label"].startswith("genre=Western (0.9")
    assert lat0["top_items"] == [3, 2, 1] and lat0["top_titles"] == ["Movie 3", "Movie 2", "Movie 1"]
    assert lat0["logit_items"] == [3, 2, 1] and lat0["logit_scores"] == [3.0, 2.0, 1.0]
    assert lat0["best_values"][0]["field"] == "genre" and lat0["best_values"][0]["value"] == "Western"
    assert isinstance(lat0["id"], int) and all(isinstance(i, int) for i in lat0["top_items"])
    assert lat0["firing_rate"] == round(float(western.mean()), 4)
    g_sum = result["fields"]["genre"]["summary"]
    assert g_sum["n_values"] == 2 and g_sum["sae"]["mean_best_abs_corr"] > g_sum["raw"]["mean_best_abs_corr"]
    assert g_sum["ratio_corr"] > 1
    west = result["fields"]["genre"]["values"][0]
    assert west["value"] == "Western" and west["sae"]["latent"] == 0 and west["sae_auc"]["auc"] == 1.0
    assert set(west["raw"]) == {"latent", "corr", "auc", "precision", "recall"}
    for rec in [west["sae"], west["raw"], g_sum["sae"]]:
        for val in rec.values():
            if isinstance(val, float):
                assert val == round(val, 4) and math.isfinite(val)
    # Fields are computed together; each equals its own separate computation.
    alone = monosemanticity_summary(latent_attribute_stats(sae_acts, item_ids, brand),
                                    latent_attribute_stats(raw, item_ids, brand), ["Acme"], min_support=5)
    b_sum = result["fields"]["brand"]["summary"]
    assert b_sum["sae"]["mean_best_abs_corr"] == round(alone["sae"]["mean_best_abs_corr"], 4)
    assert b_sum["raw"]["mean_best_auc"] == round(alone["raw"]["mean_best_auc"], 4)
    assert b_sum["rows"][0]["sae_latent"] == alone["rows"][0]["sae_latent"]
    # Without directions or embeddings the logit lens is skipped, not an error.
    no_lens = interpret(sae_acts, raw, item_ids, {"genre": (["Western", "Drama"], genre)}, titles, k=2)
    assert no_lens["latents"][0]["logit_items"] == []
    assert no_lens["latents"][0]["label"].startswith("Western (")  # one field: plain value names


def test_linear_probe_finds_a_value_spread_over_several_dims():
    g = torch.Generator().manual_seed(0)
    n_items, n = 2000, 8000
    item_vec = torch.randn(n_items, 4, generator=g)
    # value 0: sign of dim0 + dim1 + dim2 (no single dim holds it); value 1: unrelated; value 2: every item
    attr = torch.stack([item_vec[:, :3].sum(dim=1) > 0, torch.rand(n_items, generator=g) < 0.3,
                        torch.ones(n_items, dtype=torch.bool)], dim=1)
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
        latent_attribute_stats(acts, item_ids, attr), latent_attribute_stats(acts, item_ids, attr),
        ["sum", "noise", "all"], min_support=10, probe=probe)
    assert [row["probe_corr"] for row in s["rows"]] == pytest.approx(probe.tolist())
    assert s["probe_mean_corr"] == pytest.approx(float(probe.mean()))
    with pytest.raises(ValueError, match="probe has shape"):
        monosemanticity_summary(latent_attribute_stats(acts, item_ids, attr),
                                latent_attribute_stats(acts, item_ids, attr), probe=probe[:2])
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
    acts = torch.stack([
        west * even,         # unit 0: the even Westerns only (item recognition)
        west,                # unit 1: every Western
        -drama,              # unit 2: Drama with a negative sign
        drama * (2 * even - 1),  # unit 3: +Drama on even items, -Drama on odd ones
    ], dim=1)
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

    s = monosemanticity_summary(latent_attribute_stats(acts, item_ids, attr),
                                latent_attribute_stats(acts[:, [1, 3]], item_ids, attr),
                                ["Western", "Drama"], min_support=1,
                                held_out=(h, held_out_best_corr(acts[:, [1, 3]], item_ids, attr)))
    assert [r["sae_held_out_corr"] for r in s["rows"]] == pytest.approx([0.5, 1.0])
    assert [r["raw_held_out_corr"] for r in s["rows"]] == pytest.approx([1.0, -1.0])
    assert s["sae_mean_held_out_corr"] == pytest.approx(0.75)
    assert s["raw_mean_held_out_corr"] == pytest.approx(0.0)
    assert s["ratio_held_out"] is None  # the raw mean is 0
    assert s["by_frequency"]["common"]["sae_mean_held_out_corr"] == pytest.approx(0.75)
    with pytest.raises(ValueError, match=r"held_out\[1\] has shape"):
        monosemanticity_summary(latent_attribute_stats(acts, item_ids, attr),
                                latent_attribute_stats(acts, item_ids, attr), held_out=(h, h[:1]))
    with pytest.raises(ValueError, match="even and with odd"):
        held_out_best_corr(acts, item_ids * 2, torch.cat([attr, attr]))


def test_interpret_reports_the_held_out_ratio():
    g = torch.Generator().manual_seed(1)
    n_items, n = 200, 4000
    attr = (torch.rand(n_items, 3, generator=g) < 0.2)
    item_ids = torch.randint(0, n_items, (n,), generator=g)
    raw = attr[item_ids].double() + torch.randn(n, 3, generator=g)
    sae = torch.relu(attr[item_ids].double() * 2 + 0.1 * torch.randn(n, 3, generator=g))
    res = interpret(sae, raw, item_ids, {"v": (["a", "b", "c"], attr)})
    s = res["fields"]["v"]["summary"]
    expect_sae = held_out_best_corr(sae, item_ids, attr)
    expect_raw = held_out_best_corr(raw, item_ids, attr)
    assert [r["sae_held_out_corr"] for r in s["rows"]] == pytest.approx(expect_sae.tolist(), abs=1e-4)
    assert s["ratio_held_out"] == pytest.approx(float(expect_sae.mean() / expect_raw.mean()), abs=1e-3)
    assert s["ratio_held_out"] > 1.5  # the clean units beat the noisy dims on unseen items too
