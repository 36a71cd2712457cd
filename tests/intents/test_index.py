"""The FAISS intent index: exact search, persistence, GPU choice, leak-free personal intents, public intents."""

import logging
import math

import faiss
import pytest
import torch

from recbole_sae.intents import index as index_mod
from recbole_sae.intents.index import (
    IntentIndex,
    causal_recency_means,
    intent_idf,
    public_intents,
    recency_weighted_mean,
)


def _unit(x):
    return torch.nn.functional.normalize(x, dim=1)


def _brute(queries, directions, k):
    scores, ids = torch.topk(queries @ directions.T, k, dim=1)
    return scores, ids


def _assert_no_near_ties(queries, directions, k, gap=1e-4):
    """The construction must give a clear order around the first k+1 scores."""
    top = torch.topk(queries @ directions.T, k + 1, dim=1).values
    assert (top[:, :-1] - top[:, 1:]).min() > gap


@pytest.fixture
def toy():
    g = torch.Generator().manual_seed(0)
    directions = _unit(torch.randn(40, 12, generator=g))
    queries = torch.randn(37, 12, generator=g)
    _assert_no_near_ties(queries, directions, 5)
    return directions, queries


def test_search_equals_brute_force_topk(toy):
    directions, queries = toy
    index = IntentIndex(directions, use_gpu=False)
    assert index.ntotal == 40 and index.dim == 12 and not index.on_gpu
    scores, ids = index.search(queries, 5, batch_size=8)  # several batches
    ref_scores, ref_ids = _brute(queries, directions, 5)
    assert ids.dtype == torch.long and scores.dtype == torch.float32
    assert torch.equal(ids, ref_ids)
    assert scores.numpy() == pytest.approx(ref_scores.numpy(), abs=1e-5)
    # batching does not change anything
    scores_1, ids_1 = index.search(queries, 5, batch_size=1000)
    assert torch.equal(ids_1, ids) and torch.equal(scores_1, scores)
    assert torch.equal(index.directions, directions.float())


def test_search_rejects_bad_arguments(toy):
    directions, queries = toy
    index = IntentIndex(directions, use_gpu=False)
    with pytest.raises(ValueError, match="k must be in 1..40"):
        index.search(queries, 41)
    with pytest.raises(ValueError, match="width 5"):
        index.search(torch.zeros(2, 5), 3)


def test_save_load_round_trip(toy, tmp_path):
    directions, queries = toy
    center = torch.linspace(-1, 1, 12)
    index = IntentIndex(directions, use_gpu=False, center=center)
    index.set_public_intents(torch.tensor([[3, 4], [3, 5], [3, 4]]), k=2)
    path = index.save(tmp_path / "intents.faiss")
    loaded = IntentIndex.load(path, use_gpu=False)
    assert loaded.ntotal == 40 and loaded.dim == 12
    assert torch.equal(loaded.directions, index.directions)
    assert torch.equal(loaded.center, center)
    assert loaded.public_ids.tolist() == [3, 4]
    assert [torch.equal(a, b) for a, b in zip(loaded.search(queries, 5), index.search(queries, 5))] == [True, True]
    # a bare faiss file (no meta) loads too
    faiss.write_index(faiss.read_index(str(path)), str(tmp_path / "bare.faiss"))
    bare = IntentIndex.load(tmp_path / "bare.faiss", use_gpu=False)
    assert bare.center is None and bare.public_ids is None
    with pytest.raises(FileNotFoundError, match="does not exist"):
        IntentIndex.load(tmp_path / "missing.faiss")


def test_use_gpu_true_without_a_gpu_is_a_clear_error(toy, monkeypatch):
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 0)
    with pytest.raises(RuntimeError, match=r"use_gpu=True but faiss sees no GPU"):
        IntentIndex(toy[0], use_gpu=True)
    with pytest.raises(ValueError, match="use_gpu must be"):
        IntentIndex(toy[0], use_gpu="sometimes")


def test_auto_warns_when_torch_sees_a_gpu_that_faiss_cannot_use(toy, monkeypatch, caplog):
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 0)
    monkeypatch.delattr(faiss, "StandardGpuResources", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with caplog.at_level(logging.WARNING, logger=index_mod.__name__):
        index = IntentIndex(toy[0], use_gpu="auto")
    assert not index.on_gpu
    assert 'pip install -e ".[gpu]"' in caplog.text and "faiss-gpu" in caplog.text


# ---------------------------------------------------------------------- personal intents
@pytest.fixture
def sequences():
    g = torch.Generator().manual_seed(1)
    n_items, d = 30, 12
    emb = torch.randn(n_items, d, generator=g)
    emb[0] = 0.0
    lengths = torch.tensor([6, 1, 4, 8])
    seq = torch.randint(1, n_items, (4, 8), generator=g)
    seq[torch.arange(8)[None, :] >= lengths[:, None]] = 0  # RecBole pads at the end
    directions = _unit(torch.randn(20, d, generator=g))
    center = 0.1 * torch.randn(d, generator=g)
    return emb, seq, lengths, directions, center


def test_recency_weighted_mean_by_hand(sequences):
    emb, seq, lengths, _, _ = sequences
    decay = 0.5
    got = recency_weighted_mean(seq, lengths, emb, decay)
    for b in range(seq.shape[0]):
        n = int(lengths[b])
        w = torch.tensor([decay ** (n - 1 - s) for s in range(n)])
        ref = (w[:, None] * emb[seq[b, :n]]).sum(0) / w.sum()
        assert got[b].numpy() == pytest.approx(ref.numpy(), abs=1e-6)


def test_personal_intents_in_embedding_space_by_hand(sequences):
    emb, seq, lengths, directions, center = sequences
    index = IntentIndex(directions, use_gpu=False, center=center)
    ids, scores = index.personal_intents(seq, lengths, emb, k=3, recency_decay=0.7)
    assert ids.shape == (4, 3) and scores.shape == (4, 3)
    query = _unit(recency_weighted_mean(seq, lengths, emb, 0.7) - center)
    _assert_no_near_ties(query, directions, 3, gap=1e-5)
    ref_scores, ref_ids = _brute(query, directions, 3)
    assert torch.equal(ids, ref_ids)
    assert scores.numpy() == pytest.approx(ref_scores.numpy(), abs=1e-5)
    assert float(scores.max()) <= 1.0 + 1e-5  # cosines


def test_personal_intents_ignore_items_after_the_last_position(sequences):
    emb, seq, lengths, directions, center = sequences
    index = IntentIndex(directions, use_gpu=False, center=center)
    before = index.personal_intents(seq, lengths, emb, k=4, recency_decay=0.8)
    g = torch.Generator().manual_seed(7)
    changed = seq.clone()
    after_end = torch.arange(seq.shape[1])[None, :] >= lengths[:, None]
    changed[after_end] = torch.randint(1, emb.shape[0], (int(after_end.sum()),), generator=g)
    after = index.personal_intents(changed, lengths, emb, k=4, recency_decay=0.8)
    assert torch.equal(before.ids, after.ids) and torch.equal(before.scores, after.scores)
    # and a change inside the sequence does change the query
    inside = seq.clone()
    inside[0, 5] = 1 if seq[0, 5] != 1 else 2
    assert not torch.equal(recency_weighted_mean(inside, lengths, emb), recency_weighted_mean(seq, lengths, emb))


def test_per_position_intents_are_causal_and_end_at_the_per_sequence_ones(sequences):
    emb, seq, lengths, directions, center = sequences
    index = IntentIndex(directions, use_gpu=False, center=center)
    full = index.personal_intents_per_position(seq, emb, k=3, recency_decay=0.6, seq_batch=3)
    assert full.ids.shape == (4, 8, 3)
    g = torch.Generator().manual_seed(3)
    for t in range(seq.shape[1] - 1):
        changed = seq.clone()
        changed[:, t + 1 :] = torch.randint(1, emb.shape[0], (4, seq.shape[1] - t - 1), generator=g)
        other = index.personal_intents_per_position(changed, emb, k=3, recency_decay=0.6)
        assert torch.equal(other.ids[:, : t + 1], full.ids[:, : t + 1])
        assert torch.equal(other.scores[:, : t + 1], full.scores[:, : t + 1])
    # at each sequence's last real position: the per-sequence personal intents
    last = index.personal_intents(seq, lengths, emb, k=3, recency_decay=0.6)
    rows = torch.arange(4)
    assert torch.equal(full.ids[rows, lengths - 1], last.ids)
    assert full.scores[rows, lengths - 1].numpy() == pytest.approx(last.scores.numpy(), abs=1e-5)
    # every prefix by hand
    means = causal_recency_means(seq, emb, 0.6)
    for b in range(4):
        for t in range(int(lengths[b])):
            ref = recency_weighted_mean(seq[b : b + 1, : t + 1], torch.tensor([t + 1]), emb, 0.6)[0]
            assert means[b, t].numpy() == pytest.approx(ref.numpy(), abs=1e-5)


def test_item_embeddings_of_another_width_are_refused(sequences):
    emb, seq, lengths, directions, _ = sequences
    index = IntentIndex(directions, use_gpu=False)
    with pytest.raises(ValueError, match="item embeddings have width 11, the index holds width 12"):
        index.personal_intents(seq, lengths, emb[:, :11], k=2)
    with pytest.raises(ValueError, match="item embeddings have width 11"):
        index.personal_intents_per_position(seq, emb[:, :11], k=2)


# ---------------------------------------------------------------------- public intents
def test_public_intents_are_the_lowest_idf():
    # 10 users, 5 personal intents each (-1 = none). Intent 7 is in every row, 3 in 8 rows,
    # 5 in 6 rows (listed twice in one row: counts once), the rest are rare.
    rows = []
    for u in range(10):
        row = [7]
        row.append(3 if u < 8 else 10 + u)
        row.append(5 if u < 6 else 20 + u)
        row += [40 + u, -1]
        rows.append(row)
    rows[0][4] = 5
    ids = torch.tensor(rows)
    idf = intent_idf(ids, 50)
    assert float(idf[7]) == pytest.approx(0.0)
    assert float(idf[3]) == pytest.approx(math.log(11 / 9))
    assert float(idf[5]) == pytest.approx(math.log(11 / 7))
    assert float(idf[0]) == pytest.approx(math.log(11))  # never retrieved
    assert public_intents(ids, 50, k=3).tolist() == [7, 3, 5]
    index = IntentIndex(_unit(torch.randn(50, 4)), use_gpu=False)
    assert index.set_public_intents(ids, k=2).tolist() == [7, 3]
    assert index.public_ids.tolist() == [7, 3]
    with pytest.raises(ValueError, match="only 5 intents"):
        public_intents(ids, 5, k=2)


def test_a_save_that_fails_keeps_the_previous_index_and_meta(toy, tmp_path, monkeypatch):
    """The index and its meta json were written in place: a failed save left half of them."""
    from recbole_sae.intents import index as index_module

    directions, _ = toy
    index = IntentIndex(directions, use_gpu=False)
    index.set_public_intents(torch.tensor([[3, 4], [3, 5], [3, 4]]), k=2)
    path = index.save(tmp_path / "intents.faiss")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def failing_dumps(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(index_module.json, "dumps", failing_dumps)
    other = IntentIndex(directions[:10], use_gpu=False)
    with pytest.raises(RuntimeError, match="disk full"):
        other.save(path)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # both files as they were, no temp file
    loaded = IntentIndex.load(path, use_gpu=False)
    assert loaded.ntotal == 40 and loaded.public_ids.tolist() == [3, 4]
