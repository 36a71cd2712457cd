"""Steering analysis: strengths, top-k lists ranked as RecBole ranks, list statistics, sweeps and their files."""

import contextlib
import csv
import json
import math

import pytest
import torch
from torch import nn

from recbole_sae.analysis.steering import (
    DEFAULT_STRENGTHS,
    NOISE_SE,
    edit_direction,
    list_statistics,
    parse_strengths,
    share_change,
    share_warning,
    steering_sweep,
    sweep_figure,
    sweep_warning,
    top_k_lists,
    write_sweep,
)
from recbole_sae.protocol import SeenTable


def test_parse_strengths():
    assert parse_strengths("-8,-4,0,4,8") == [-8.0, -4.0, 0.0, 4.0, 8.0]
    assert parse_strengths((-8, 0, 8)) == [-8.0, 0.0, 8.0]  # RecBole's reading of --strengths=-8,0,8
    assert parse_strengths("[-2.5; 1e1]") == [-2.5, 10.0]
    assert parse_strengths(4) == [4.0]
    assert parse_strengths(None) == list(DEFAULT_STRENGTHS)
    for bad in ("a,b", "1,inf", [True, "x"]):
        with pytest.raises(ValueError, match="strengths"):
            parse_strengths(bad)


class FakeModel(nn.Module):
    """Scores = a fixed table per user, plus ``bias`` on one item while steered."""

    USER_ID = "user_id"

    def __init__(self, table: torch.Tensor, boosted: int):
        super().__init__()
        self.table = table
        self.n_items = table.shape[1]
        self.boosted = boosted
        self.bias = 0.0
        self.item_embedding = nn.Embedding(self.n_items, 4)
        with torch.no_grad():
            self.item_embedding.weight.copy_(torch.eye(self.n_items, 4))

    def full_sort_predict(self, interaction):
        scores = self.table[interaction["user_id"]].clone()
        scores[:, self.boosted] += self.bias
        return scores

    @contextlib.contextmanager
    def steer(self, edits, positions=None):
        before = self.bias
        self.bias = edits
        try:
            yield
        finally:
            self.bias = before


def _loader(users, history_index=None, batch=2):
    from recbole.data.interaction import Interaction

    for lo in range(0, len(users), batch):
        chunk = torch.tensor(users[lo : lo + batch])
        hist = history_index if lo == 0 else None
        yield Interaction({"user_id": chunk}), hist, None, None


def test_top_k_lists_mask_padding_and_history_like_recbole():
    table = torch.tensor([[9.0, 1.0, 5.0, 4.0, 3.0], [9.0, 5.0, 1.0, 2.0, 4.0], [9.0, 1.0, 2.0, 3.0, 4.0]])
    model = FakeModel(table, boosted=1)
    history = (torch.tensor([0]), torch.tensor([2]))  # user 0 has seen item 2
    users, lists = top_k_lists(model, list(_loader([0, 1, 2], history)), k=2)
    assert users.tolist() == [0, 1, 2]
    assert lists.tolist() == [[3, 4], [1, 4], [4, 3]]  # item 0 never, seen item 2 not for user 0


def test_list_statistics_by_hand():
    # items 1..4; field values A, B; item 1: A, item 2: A+B, item 3: B, item 4: none
    attr = torch.tensor([[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]], dtype=torch.bool)
    emb = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 2.0]])
    lists = torch.tensor([[1, 2], [3, 4]])
    stats = list_statistics(lists, attr, emb, n_items=5, target_index=0)
    assert stats["target_share"] == pytest.approx(2 / 4)
    assert stats["shares"].tolist() == pytest.approx([2 / 4, 2 / 4])
    assert stats["coverage"] == pytest.approx(4 / 4)
    # cosines: (1, 2) parallel -> 1, (3, 4) parallel -> 1: no diversity from the embeddings
    assert stats["diversity"] == pytest.approx(0.0, abs=1e-6)
    # Jaccard: {A} vs {A, B} = 1/2; {B} vs {} = 0 -> diversity (1/2 + 1) / 2
    assert stats["diversity_attr"] == pytest.approx(0.75)
    other = list_statistics(torch.tensor([[1, 3]]), attr, emb, n_items=5)
    assert other["target_share"] is None and other["diversity"] == pytest.approx(1.0)
    assert other["coverage"] == pytest.approx(2 / 4)


def test_sweep_rows_and_files(tmp_path):
    torch.manual_seed(0)
    table = torch.rand(6, 8)
    table[:, 0] = 5.0  # padding, always masked
    model = FakeModel(table, boosted=3)
    attr = torch.zeros(8, 2, dtype=torch.bool)
    attr[3, 0] = True  # item 3 is the target value "Western"
    attr[[1, 2, 4, 5, 6, 7], 1] = True
    calls = []

    def evaluate():
        calls.append(model.bias)
        return {"ndcg@3": 0.5 - abs(model.bias) / 100, "hit@3": 0.6, "mrr@3": 0.1}

    rows = steering_sweep(
        model,
        list(_loader(list(range(6)))),
        [-100.0, 0.0, 100.0],
        edits_for=lambda s: s,
        evaluate=evaluate,
        values=["Western", "Drama"],
        attr_matrix=attr,
        target_index=0,
        k=3,
    )
    assert calls == [-100.0, 0.0, 100.0] and model.bias == 0.0  # each evaluation ran under its edit, then undone
    assert [r["target_share"] for r in rows] == pytest.approx([0.0, rows[1]["target_share"], 1 / 3], abs=1e-5)
    assert rows[2]["shares"] == {"Western": pytest.approx(1 / 3, abs=1e-5), "Drama": pytest.approx(2 / 3, abs=1e-5)}
    assert rows[0]["ndcg@3"] == pytest.approx(-0.5) and rows[1]["metrics"]["mrr@3"] == 0.1

    result = {
        "target": "genre=Western",
        "target_value": "Western",
        "rows": rows,
        "op": "add",
        "positions": "last",
        "latents": [{"latent": 7, "label": "Western (0.90)", "corr": 0.9}],
    }
    files = write_sweep(result, tmp_path / "steering", k=3)
    with open(files["csv"]) as f:
        table_rows = list(csv.reader(f))
    assert table_rows[0] == [
        "strength",
        "target_share",
        "ndcg@3",
        "hit@3",
        "coverage",
        "diversity",
        "diversity_attr",
        "share_change",
        "share_noise",
        "verdict",
        "share:Drama",
    ]
    # one user of six had item 3 unsteered: losing it is within the noise; all six gaining it is not
    assert [r[9] for r in table_rows[1:]] == ["within_noise", "no_edit", "as_expected"]
    assert [float(r[0]) for r in table_rows[1:]] == [-100.0, 0.0, 100.0]
    assert math.isclose(float(table_rows[3][1]), 1 / 3, rel_tol=1e-5)
    with open(files["json"]) as f:
        assert json.load(f)["rows"][2]["shares"]["Western"] == pytest.approx(1 / 3, rel=1e-5)
    with open(files["png"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(files["md"]) as f:
        assert "Latents: 7 (Western (0.90), corr 0.9)" in f.read()


def test_top_k_lists_remove_the_seen_items_of_the_headline_protocol():
    """With filter_seen the lists drop every item the user saw before (protocol.SeenTable), as NDCG does."""
    table = torch.tensor([[9.0, 1.0, 5.0, 4.0, 3.0], [9.0, 5.0, 1.0, 2.0, 4.0], [9.0, 1.0, 2.0, 3.0, 4.0]])
    model = FakeModel(table, boosted=1)
    seen = SeenTable(torch.tensor([0, 0, 2]), torch.tensor([2, 3, 4]), n_users=3, n_items=5)
    _, kept = top_k_lists(model, list(_loader([0, 1, 2])), k=2)
    _, removed = top_k_lists(model, list(_loader([0, 1, 2])), k=2, seen=seen)
    assert kept.tolist() == [[2, 3], [1, 4], [4, 3]]
    assert removed.tolist() == [[4, 1], [1, 4], [3, 2]]  # user 0 saw 2 and 3, user 2 saw 4


def _target_lists(n_users, k, with_target):
    """[n_users, k] lists of items >= 2 with item 1 (the target value) in the first slot of ``with_target`` users."""
    lists = torch.arange(2, 2 + k).repeat(n_users, 1)
    lists[list(with_target), 0] = 1
    return lists


ATTR = torch.zeros(20, 1, dtype=torch.bool)
ATTR[1, 0] = True  # item 1 has the target value


def test_a_raising_edit_that_lowers_its_share_warns_wrong_way():
    before, after = _target_lists(200, 10, range(60)), _target_lists(200, 10, range(20))
    check = share_change(before, after, ATTR, 0, direction=+1)
    # every changed user lost 0.1: change -40 * 0.1 / 200; sd of the per-user change by hand
    diffs = [-0.1] * 40 + [0.0] * 160
    mean = sum(diffs) / 200
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 199)
    assert check["change"] == pytest.approx(-0.02) and check["n_users"] == 200
    assert check["noise"] == pytest.approx(NOISE_SE * sd / math.sqrt(200), rel=1e-6)
    assert check["verdict"] == "wrong_way" and check["expected"] == 1
    line = share_warning("class=Western:+6", "class=Western", 10, 0.03, 0.01, check)
    assert line.startswith(
        "warning: class=Western:+6 was meant to raise the share of class=Western in the top-10 "
        "but lowered it (0.03 -> 0.01, change -0.02; noise +-0.00"
    )
    assert "2 standard errors of the per-user change over 200 users" in line and "\n" not in line
    assert share_change(before, after, ATTR, 0, direction=-1)["verdict"] == "as_expected"
    assert share_warning("x", "t", 10, 0.03, 0.01, share_change(before, after, ATTR, 0, -1)) is None


def test_the_issue_case_a_tiny_drop_is_within_the_noise_and_still_warns():
    """class=Western:+6 took the Western share 0.0003 -> 0.0001 (2 of 1000 users lost one Western)."""
    before, after = _target_lists(1000, 10, range(3)), _target_lists(1000, 10, range(1))
    check = share_change(before, after, ATTR, 0, direction=+1)
    assert check["change"] == pytest.approx(-0.0002)
    sd = math.sqrt((2 * (-0.1 + 0.0002) ** 2 + 998 * 0.0002**2) / 999)
    assert check["noise"] == pytest.approx(2 * sd / math.sqrt(1000), rel=1e-5) and check["noise"] > 0.0002
    assert check["verdict"] == "within_noise"
    line = share_warning("class=Western:+6", "class=Western", 10, 0.0003, 0.0001, check)
    assert line.startswith(
        "warning: class=Western:+6 moved the share of class=Western in the top-10 by no more "
        "than the noise (meant to raise it) (0.0003 -> 0.0001, change -0.0002; noise +-0.000283"
    )


def test_a_rise_within_the_spread_between_users_is_noise():
    # 51 users gain a target item, 49 lose one: mean +0.002, per-user sd about 0.1
    before = _target_lists(100, 10, range(51, 100))
    after = _target_lists(100, 10, range(51))
    check = share_change(before, after, ATTR, 0, direction=+1)
    assert check["change"] == pytest.approx(0.002) and check["verdict"] == "within_noise"
    assert check["noise"] == pytest.approx(
        NOISE_SE * float(torch.tensor([0.1] * 51 + [-0.1] * 49).std()) / 10, rel=1e-5
    )
    assert share_change(before, before, ATTR, 0, direction=0)["verdict"] == "no_edit"
    assert share_change(before, before, ATTR, 0, direction=+1) == {
        "change": 0.0,
        "noise": 0.0,
        "n_users": 100,
        "expected": 1,
        "verdict": "within_noise",
    }
    up = share_change(before, _target_lists(100, 10, range(100)), ATTR, 0, direction=None)
    assert up["verdict"] == "moved" and up["change"] == pytest.approx(0.051)


def test_edit_direction():
    assert [edit_direction("add", s) for s in (6, -4, 0)] == [1, -1, 0]
    assert [edit_direction("scale", s) for s in (2, 0.5, 1)] == [1, -1, 0]
    assert [edit_direction("clamp", s) for s in (10, 0)] == [1, -1]
    assert edit_direction("add", 6, sign=-1) == -1  # a latent whose best value correlates negatively


def test_a_sweep_that_moves_the_wrong_way_warns_once(tmp_path):
    torch.manual_seed(0)
    table = torch.rand(6, 8)
    table[:3, 3], table[3:, 3] = 0.999, 0.0  # item 3 is in the lists of users 0-2 only, unsteered
    model = FakeModel(table, boosted=3)
    attr = torch.zeros(8, 1, dtype=torch.bool)
    attr[3, 0] = True
    loader = list(_loader(list(range(6))))
    # planted: the edit is meant to lower the share (a negative latent), but +100 puts item 3 in every list
    rows = steering_sweep(
        model,
        loader,
        [-100.0, 0.0, 100.0],
        edits_for=lambda s: s,
        evaluate=lambda: {"ndcg@3": 0.5},
        values=["Western"],
        attr_matrix=attr,
        target_index=0,
        k=3,
        direction_for=lambda s: edit_direction("add", s, sign=-1),
    )
    _, base = top_k_lists(model, loader, 3)
    base_share = float(attr[base, 0].float().mean())
    assert base_share == pytest.approx(1 / 6)
    assert [r["verdict"] for r in rows] == ["wrong_way", "no_edit", "wrong_way"]
    # three users lose (gain) a third: mean 1/6, sd (1/6) sqrt(6/5), noise 2 sd / sqrt(6) < 1/6
    assert [r["share_change"] for r in rows] == pytest.approx([-1 / 6, 0.0, 1 / 6], abs=1e-6)
    assert rows[0]["share_noise"] == pytest.approx(2 * (1 / 6) * math.sqrt(6 / 5) / math.sqrt(6), abs=1e-6)
    line = sweep_warning("genre=Western", 3, rows, base_share)
    assert line.startswith(
        "warning: steering genre=Western: the share in the top-3 moved from the unsteered "
        "0.167 the wrong way at strength -100 (0, change -0.167, noise +-0.149), +100 (0.333, "
        "change +0.167, noise +-0.149) (noise = 2 standard errors of the per-user change)"
    )
    assert line.count("warning:") == 1
    right = steering_sweep(
        model,
        loader,
        [-100.0, 100.0],
        edits_for=lambda s: s,
        evaluate=lambda: {},
        values=["Western"],
        attr_matrix=attr,
        target_index=0,
        k=3,
    )
    assert [r["verdict"] for r in right] == ["as_expected"] * 2 and sweep_warning("g", 3, right, 0.1) is None

    result = {
        "target": "genre=Western",
        "target_value": "Western",
        "rows": rows,
        "unsteered": {"ndcg@3": 0.5},
        "unsteered_share": base_share,
        "warnings": [line],
    }
    files = write_sweep(result, tmp_path, k=3)
    assert f"**{line}**" in open(files["md"]).read()


def test_the_sweep_plot_draws_the_unsteered_base_rates():
    rows = [
        {"strength": -4.0, "target_share": 0.1, "ndcg@10": 0.2, "hit@10": 0.4},
        {"strength": 4.0, "target_share": 0.3, "ndcg@10": 0.25, "hit@10": 0.5},
    ]
    fig = sweep_figure(rows, "genre=Western", 10, base={"target_share": 0.2, "ndcg@10": 0.22, "hit@10": None})
    left, right = fig.axes
    bases = {
        line.get_label(): list(line.get_ydata())
        for ax in (left, right)
        for line in ax.get_lines()
        if line.get_label().startswith("unsteered")
    }
    assert bases == {"unsteered share (0.2)": [0.2, 0.2], "unsteered NDCG@10 (0.22)": [0.22, 0.22]}
    assert [line.get_label() for line in left.get_legend().get_lines()] == ["steered", "unsteered share (0.2)"]
    assert not [line for line in sweep_figure(rows, "t", 10).axes[0].get_lines() if "unsteered" in line.get_label()]
