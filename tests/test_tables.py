"""The one place of rounding, number cells and markdown tables (recbole_sae.tables)."""

import math

import pytest

from recbole_sae.tables import fmt, markdown_table, round_float, round_metrics, round_tree


def test_markdown_table_exact():
    rows = [["Western", 12, 0.5], {"value": "a|b", "n": None, "x": 1.23456}]
    assert markdown_table(rows, ["value", "n", "x"]) == (
        "| value | n | x |\n| --- | --- | --- |\n| Western | 12 | 0.5000 |\n| a\\|b |  | 1.2346 |\n"
    )
    assert markdown_table([[1.0]], ["x"], float_digits=1) == "| x |\n| --- |\n| 1.0 |\n"
    with pytest.raises(ValueError, match="2 cells for 3 headers"):
        markdown_table([[1, 2]], ["a", "b", "c"])


def test_markdown_table_alignment_and_compact_rule():
    rows = [["SASRec", 0.5]]
    assert markdown_table(rows, ["Model", "NDCG"], align=["left", "right"]) == (
        "| Model | NDCG |\n| --- | ---: |\n| SASRec | 0.5000 |\n"
    )
    assert markdown_table(rows, ["Model", "NDCG"], align=["---", ":---:"], spaced_rule=False).splitlines()[1] == (
        "|---|:---:|"
    )
    with pytest.raises(ValueError, match="align needs one of"):
        markdown_table(rows, ["Model", "NDCG"], align=["left"])
    with pytest.raises(ValueError, match="align needs one of"):
        markdown_table(rows, ["Model", "NDCG"], align=["left", "middle"])


def test_fmt():
    assert fmt(None) == "n/a"
    assert fmt(0.123456) == "0.1235"
    assert fmt(2.5, 1) == "2.5"


def test_round_float_none_and_non_finite():
    assert round_float(None) is None
    assert round_float(1 / 3) == 0.333333
    assert round_float(1 / 3, 2) == 0.33
    assert round_float(float("nan")) is None and round_float(float("-inf"), 4) is None
    assert math.isnan(round_float(float("nan"), nonfinite_none=False))
    assert round_float(float("inf"), nonfinite_none=False) == float("inf")


def test_round_metrics():
    assert round_metrics({"ndcg@10": 0.12345678, "hit@10": 1}) == {"ndcg@10": 0.123457, "hit@10": 1.0}
    assert round_metrics(None) == {}
    assert round_metrics({"x": 2 / 3}, 2) == {"x": 0.67}


def test_round_tree():
    tree = {"a": 1 / 3, "b": [2 / 3, {"c": float("nan")}, (0.5, "s")], "n": 3, "none": None}
    assert round_tree(tree) == {"a": 0.3333, "b": [0.6667, {"c": None}, [0.5, "s"]], "n": 3, "none": None}
    assert round_tree(1 / 3, 2) == 0.33
