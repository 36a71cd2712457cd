"""Report writers: JSON, markdown table, and the interpretation report files."""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from recbole_sae.analysis import interpret, to_jsonable, write_interpretation_report, write_json
from recbole_sae.analysis.report import _figure, bar_axis_top, ratio_flags


def test_write_json_atomic_and_strict(tmp_path):
    obj = {
        "t": torch.tensor([1, 2]),
        "x": np.float32(0.5),
        "nan": float("nan"),
        "inf": [float("inf")],
        "path": tmp_path,
        "tuple": (1, "a"),
        3: "int key",
    }
    path = write_json(obj, tmp_path / "sub" / "out.json")
    assert path == tmp_path / "sub" / "out.json"
    loaded = json.loads(path.read_text())
    assert loaded == {
        "t": [1, 2],
        "x": 0.5,
        "nan": None,
        "inf": [None],
        "path": str(tmp_path),
        "tuple": [1, "a"],
        "3": "int key",
    }
    write_json({"a": 1}, path)  # overwrite in place
    assert json.loads(path.read_text()) == {"a": 1}
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.json"]  # no temporary left over
    assert to_jsonable({"a": torch.tensor(2.5)}) == {"a": 2.5}


def _result():
    g = torch.Generator().manual_seed(0)
    n_items, n = 8, 500
    item_ids = torch.randint(1, n_items, (n,), generator=g)
    genre = torch.zeros(n_items, 3, dtype=torch.bool)
    genre[[1, 2], 0] = True
    genre[[3, 4, 5], 1] = True
    genre[[6, 7], 2] = True
    sae = torch.stack(
        [genre[item_ids, v].float() * (1 + torch.rand(n, generator=g)) for v in range(3)] + [torch.zeros(n)], dim=1
    )
    raw = torch.randn(n, 4, generator=g) + 0.5 * genre[item_ids].float() @ torch.randn(3, 4, generator=g)
    titles = ["[PAD]", '<b>&"x"', "Plain & simple"] + [f"Movie {i}" for i in range(3, n_items)]
    emb = torch.randn(n_items, 4, generator=g)
    directions = torch.randn(4, 4, generator=g)
    return interpret(
        sae,
        raw,
        item_ids,
        {"genre": (["Western", "Drama", "Sci<Fi>"], genre)},
        titles,
        directions,
        emb,
        k=3,
        min_support=5,
    )


def test_interpretation_report_files(tmp_path):
    result = _result()
    paths = write_interpretation_report(result, tmp_path / "report", title="Toy <report>")
    assert set(paths) == {"json", "markdown", "plot", "html"}
    for key, name in [
        ("json", "interpretation.json"),
        ("markdown", "interpretation.md"),
        ("plot", "interpretation.png"),
        ("html", "latents.html"),
    ]:
        assert paths[key] == tmp_path / "report" / name
        assert paths[key].is_file() and paths[key].stat().st_size > 0

    # The JSON round-trips.
    assert json.loads(paths["json"].read_text()) == result

    # PNG signature.
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    md = paths["markdown"].read_text()
    assert md.startswith("# Toy <report>\n")
    s = result["fields"]["genre"]["summary"]
    raw_c, sae_c = s["raw"]["mean_best_abs_corr"], s["sae"]["mean_best_abs_corr"]
    assert f"| genre | {s['n_values']} | {raw_c:.4f} | {sae_c:.4f} |" in md
    assert "largest SAE gain" in md and "example latents" in md
    assert "(interpretation.png)" in md and "(latents.html)" in md
    common = s["by_frequency"]["common"]
    assert common["n_values"] + s["by_frequency"]["rare"]["n_values"] == s["n_values"]
    assert (
        f"| genre | common (>= 5% of positions) | {common['n_values']} | "
        f"{common['raw_mean_best_abs_corr']:.4f} | {common['sae_mean_best_abs_corr']:.4f} |"
    ) in md
    assert (
        f"| {s['raw_mean_held_out_corr']:.4f} | {s['sae_mean_held_out_corr']:.4f} | {s['ratio_held_out']:.4f} |"
    ) in md  # the held-out columns end the summary row

    page = paths["html"].read_text()
    assert page.startswith("<!DOCTYPE html>") and "<script>" in page and "<style>" in page
    assert "http" not in page  # self-contained: nothing fetched
    assert '<b>&"x"' not in page and "&lt;b&gt;&amp;&quot;x&quot;" in page
    assert "Sci&lt;Fi&gt;" in page and "Toy &lt;report&gt;" in page
    assert "Plain &amp; simple" in page
    alive = [lat["id"] for lat in result["latents"]]
    assert alive == [0, 1, 2]  # latent 3 is dead
    for lat in result["latents"]:
        assert f'<td class="num">{lat["id"]}</td>' in page
    assert page.count("<tr>") == len(alive) + 1  # + header row


def test_report_without_any_value_passing_support(tmp_path):
    result = _result()
    for fres in result["fields"].values():
        fres["summary"].update({"n_values": 0, "rows": [], "ratio_corr": None, "ratio_auc": None})
        fres["summary"]["sae"] = {"mean_best_abs_corr": None, "mean_best_auc": None}
        fres["summary"]["raw"] = {"mean_best_abs_corr": None, "mean_best_auc": None}
    paths = write_interpretation_report(result, tmp_path, title="empty")
    assert all(Path(p).is_file() for p in paths.values())
    md = paths["markdown"].read_text()
    assert "| genre | 0 |  |  |  |  |  |  |" in md  # missing means are empty cells
    assert "the 0 values with the largest SAE gain" in md


FIDELITY = {
    "fidelity": {
        "mse": 0.00123,
        "fvu": 0.0812,
        "explained_variance": 0.9188,
        "l0": 16.0,
        "dead_frac": 0.0234,
        "n_dead": 12.0,
        "n_rows": 4000.0,
    },
    "recovered": {
        "valid": {
            "metric": "ndcg@10",
            "original": 0.05,
            "spliced": 0.048,
            "spliced_error": 0.05,
            "ablated": 0.01,
            "recovered": 0.95,
        },
        "test": {
            "metric": "ndcg@10",
            "original": 0.06,
            "spliced": 0.035,
            "spliced_error": 0.06,
            "ablated": 0.02,
            "recovered": 0.375,
        },
    },
}


def test_reports_show_fidelity_and_flag_ratios_below_one(tmp_path):
    result = _result()
    summary = result["fields"]["genre"]["summary"]
    assert ratio_flags(result) == []  # the toy SAE beats the raw dimensions everywhere: nothing to flag
    summary["ratio_held_out"] = 0.78
    summary["by_frequency"]["common"]["ratio_corr"] = 0.5
    paths = write_interpretation_report(result, tmp_path, title="Toy", fidelity=FIDELITY)
    md = paths["markdown"].read_text()
    assert md.index("## SAE fidelity") < md.index("## Monosemanticity")
    assert (
        "On 4000 held-out states: FVU 0.0812 (explained variance 0.9188), MSE 0.001230, L0 16.0 active latents "
        "per state, dead latents 12 (0.023 of all)."
    ) in md
    assert "| valid | 0.0500 | 0.0480 | 0.0500 | 0.0100 | 0.9500 |" in md
    assert "| test | 0.0600 | 0.0350 | 0.0600 | 0.0200 | 0.3750 |" in md
    assert "- **Flag:** test: NDCG recovered 0.38 < 0.9: with the SAE's reconstruction" in md
    assert "valid: NDCG recovered" not in md
    held_out = (
        f"genre: held-out ratio 0.78 < 1 (in-sample ratio {summary['ratio_corr']:.2f}): with each value's "
        "best unit chosen on half of the items and scored on the other half, the best SAE latent tracks "
        "the value less well than the best raw dimension"
    )
    assert f"- **Ratio below 1:** {held_out}" in md
    assert "- **Ratio below 1:** genre, common values: ratio |corr| 0.50 < 1: the best SAE latent per value" in md
    assert md.count("**Ratio below 1:**") == 2
    page = paths["html"].read_text()
    assert "<h2>SAE fidelity</h2>" in page and "FVU 0.0812" in page and "NDCG recovered 0.375" in page
    assert '<li class="flag">Flag: test: NDCG recovered 0.38 &lt; 0.9' in page
    assert f'<li class="flag">Ratio below 1: {html.escape(held_out)}' in page and "held-out ratio 0.78" in page
    plain = write_interpretation_report(result, tmp_path / "plain", title="Toy")["markdown"].read_text()
    assert "SAE fidelity" not in plain and "**Ratio below 1:**" in plain  # no fidelity measured, flags still


def test_bar_chart_axis_fits_the_bars():
    assert bar_axis_top([0.1, 0.28, None]) == pytest.approx(0.35)  # 0.28 * 1.25 = 0.35
    assert bar_axis_top([0.21]) == pytest.approx(0.3) and bar_axis_top([0.9, float("nan")]) == 1.0
    assert bar_axis_top([]) == pytest.approx(0.05)
    result = _result()
    rows = result["fields"]["genre"]["summary"]["rows"]
    for r in rows:  # every bar below 0.3, as in the report the axis used to run to 1 for
        r["raw_best_abs_corr"], r["sae_best_abs_corr"] = 0.1, 0.26
    ax = _figure(result, "Toy").axes[0]
    assert ax.get_ylim() == pytest.approx((0.0, 0.35))
    heights = [patch.get_height() for patch in ax.patches]
    assert len(heights) == 2 * len(rows) and max(heights) == pytest.approx(0.26)
