"""interpret: every statistic together, as one JSON-ready report."""

from __future__ import annotations

import json
import math

import pytest
import torch

from recbole_sae.analysis import (
    held_out_best_corr,
    interpret,
    latent_attribute_stats,
    monosemanticity_summary,
)


def test_interpret_end_to_end_is_json_ready():
    g = torch.Generator().manual_seed(4)
    n_items, n = 9, 800
    item_ids = torch.randint(1, n_items, (n,), generator=g)
    genre = torch.zeros(n_items, 2, dtype=torch.bool)
    genre[[1, 2, 3], 0] = True  # Western
    genre[[4, 5, 6, 7, 8], 1] = True  # Drama
    brand = torch.zeros(n_items, 1, dtype=torch.bool)
    brand[[2, 5], 0] = True
    western = genre[item_ids, 0].float()
    sae_acts = torch.stack(
        [
            western * (1 + item_ids.float() / 10),  # 0: the Western latent
            torch.zeros(n),  # 1: dead
            torch.relu(torch.randn(n, generator=g)),  # 2: noise
        ],
        dim=1,
    )
    raw = torch.randn(n, 4, generator=g) + 0.3 * western[:, None]
    d = 4
    directions = torch.zeros(3, d)
    directions[0, 0] = 1.0
    directions[2, 1] = 1.0
    emb = torch.zeros(n_items, d)
    emb[[3, 2, 1], 0] = torch.tensor([3.0, 2.0, 1.0])
    titles = ["[PAD]"] + [f"Movie {i}" for i in range(1, n_items)]
    result = interpret(
        sae_acts,
        raw,
        item_ids,
        {"genre": (["Western", "Drama"], genre), "brand": (["Acme"], brand)},
        titles,
        directions,
        emb,
        k=3,
        min_support=5,
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
    alone = monosemanticity_summary(
        latent_attribute_stats(sae_acts, item_ids, brand),
        latent_attribute_stats(raw, item_ids, brand),
        ["Acme"],
        min_support=5,
    )
    b_sum = result["fields"]["brand"]["summary"]
    assert b_sum["sae"]["mean_best_abs_corr"] == round(alone["sae"]["mean_best_abs_corr"], 4)
    assert b_sum["raw"]["mean_best_auc"] == round(alone["raw"]["mean_best_auc"], 4)
    assert b_sum["rows"][0]["sae_latent"] == alone["rows"][0]["sae_latent"]
    # Without directions or embeddings the logit lens is skipped, not an error.
    no_lens = interpret(sae_acts, raw, item_ids, {"genre": (["Western", "Drama"], genre)}, titles, k=2)
    assert no_lens["latents"][0]["logit_items"] == []
    assert no_lens["latents"][0]["label"].startswith("Western (")  # one field: plain value names


def test_interpret_reports_the_held_out_ratio():
    g = torch.Generator().manual_seed(1)
    n_items, n = 200, 4000
    attr = torch.rand(n_items, 3, generator=g) < 0.2
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
