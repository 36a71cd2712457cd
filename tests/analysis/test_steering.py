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
    list_statistics,
    parse_strengths,
    steering_sweep,
    top_k_lists,
    write_sweep,
)


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

    rows = steering_sweep(model, list(_loader(list(range(6)))), [-100.0, 0.0, 100.0], edits_for=lambda s: s,
                          evaluate=evaluate, values=["Western", "Drama"], attr_matrix=attr, target_index=0, k=3)
    assert calls == [-100.0, 0.0, 100.0] and model.bias == 0.0  # each evaluation ran under its edit, then undone
    assert [r["target_share"] for r in rows] == pytest.approx([0.0, rows[1]["target_share"], 1 / 3], abs=1e-5)
    assert rows[2]["shares"] == {"Western": pytest.approx(1 / 3, abs=1e-5), "Drama": pytest.approx(2 / 3, abs=1e-5)}
    assert rows[0]["ndcg@3"] == pytest.approx(-0.5) and rows[1]["metrics"]["mrr@3"] == 0.1

    result = {"target": "genre=Western", "target_value": "Western", "rows": rows, "op": "add", "positions": "last",
              "latents": [{"latent": 7, "label": "Western (0.90)", "corr": 0.9}]}
    files = write_sweep(result, tmp_path / "steering", k=3)
    with open(files["csv"]) as f:
        table_rows = list(csv.reader(f))
    assert table_rows[0] == ["strength", "target_share", "ndcg@3", "hit@3", "coverage", "diversity", "diversity_attr",
                             "share:Drama"]
    assert [float(r[0]) for r in table_rows[1:]] == [-100.0, 0.0, 100.0]
    assert math.isclose(float(table_rows[3][1]), 1 / 3, rel_tol=1e-5)
    with open(files["json"]) as f:
        assert json.load(f)["rows"][2]["shares"]["Western"] == pytest.approx(1 / 3, rel=1e-5)
    with open(files["png"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(files["md"]) as f:
        assert "Latents: 7 (Western (0.90), corr 0.9)" in f.read()
