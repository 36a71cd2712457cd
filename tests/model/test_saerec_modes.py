"""SAERec's retrieval modes (text, paper), the paper's IDF statistics, and the ablation switches."""

import pytest
import torch
from recbole.data.interaction import Interaction

from recbole_sae.errors import ConfigError
from recbole_sae.model.saerec import IndexedMemory

SEQ = torch.tensor([[3, 8, 13, 18, 23, 0], [5, 10, 15, 20, 25, 30]])
LENGTHS = torch.tensor([5, 6])
TARGETS = torch.tensor([[8, 13, 18, 23, 28, 0], [10, 15, 20, 25, 30, 35]])


@pytest.fixture
def built(saerec_of):
    """``make(**overrides) -> model``: SAERec models over one shared intent stage (built once)."""
    return lambda **overrides: saerec_of(**overrides).eval()


def _no_dropout(model):
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


def _train_steps(model, steps=3):
    """A few training batches (updates the paper mode's df)."""
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(steps):
        opt.zero_grad()
        model.calculate_loss(
            Interaction({"item_id_list": SEQ, "item_length": LENGTHS, "target_id_list": TARGETS})
        ).backward()
        opt.step()
    return model.eval()


MODES = {
    "text": {},
    "paper": {"intent_retrieval": "paper"},
    "history_text": {"intent_memory": "history_text"},
    "item_intent_codes": {"item_intent_codes": True},
    "item_text": {"item_text": True},
    "codes_and_text": {"item_intent_codes": True, "item_text": True},
    "paper_gate": {"intent_retrieval": "paper", "fusion": "gate"},
    "random_directions": {"intent_directions": "random"},
    "no_personal": {"intent_personal": False},
    "no_public": {"intent_public": False},
}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_mode_is_causal_in_training_and_evaluation(built, mode):
    model = _train_steps(_no_dropout(built(**MODES[mode])))
    changed = SEQ.clone()
    changed[:, 3:5] = torch.tensor([4, 9])  # change the items after position 2
    for training in (False, True):
        model.train(training)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        out = model.forward(SEQ, LENGTHS, all_positions=True)
        model.load_state_dict(state)  # the same df for both calls
        out2 = model.forward(changed, LENGTHS, all_positions=True)
        torch.testing.assert_close(out[:, :3], out2[:, :3], rtol=0, atol=1e-6)
        assert not torch.allclose(out[:, 3:5], out2[:, 3:5])
    model.eval()
    # the last-position forward is the per-position one at each sequence's end
    with torch.no_grad():
        full = model.forward(SEQ, LENGTHS, all_positions=True)
        last = model.forward(SEQ, LENGTHS)
    torch.testing.assert_close(last, full[torch.arange(2), LENGTHS - 1], rtol=1e-5, atol=1e-5)


def test_paper_df_is_an_exponential_moving_average_of_planted_batches(built):
    model = built(intent_retrieval="paper", idf_momentum=0.9)
    n = model.intent_df.numel()
    active1 = torch.zeros(2, 3, n, dtype=torch.bool)
    active1[0, :, 0] = True  # intent 0: 3 positions of row 0
    active1[1, 0, 1] = True  # intent 1: 1 position of row 1 ...
    active1[1, 2, 1] = True  # ... and one padding position: not counted
    valid1 = torch.tensor([[True, True, True], [True, True, False]])
    model.update_df(active1, valid1)
    expected = torch.zeros(n, dtype=torch.float64)
    expected[0], expected[1] = 3.0, 1.0
    assert torch.equal(model.intent_df, expected) and float(model.intent_docs) == 5.0
    active2 = torch.zeros(1, 2, n, dtype=torch.bool)
    active2[0, :, 1] = True
    model.update_df(active2, torch.ones(1, 2, dtype=torch.bool))
    expected[0], expected[1] = 0.9 * 3.0, 0.9 * 1.0 + 0.1 * 2.0
    torch.testing.assert_close(model.intent_df, expected, rtol=0, atol=1e-12)
    assert float(model.intent_docs) == pytest.approx(0.9 * 5 + 0.1 * 2, abs=1e-12)
    assert int(model.df_updates) == 2
    idf = model.idf()
    torch.testing.assert_close(idf[1], torch.tensor((1 + 4.7) / (1 + 1.1)).log().float())
    torch.testing.assert_close(idf[2], torch.tensor(1 + 4.7).log().float())
    # public intents: the lowest IDF (the most frequent), ties to the lower id
    assert model.current_public_ids().tolist() == [0, 1]
    # the statistics are saved with the model
    assert {"intent_df", "intent_docs", "df_updates"} <= set(model.state_dict())


def test_paper_personal_intents_rank_by_tf_times_idf(built):
    model = built(intent_retrieval="paper")
    intents = torch.eye(4, 16)[:, :16]  # planted intent embeddings: basis vectors
    query = torch.zeros(1, 1, 16)
    query[0, 0, :3] = torch.tensor([3.0, 2.0, 1.0])  # TF: intent 0 > 1 > 2, intent 3: 0
    model.intent_df = torch.zeros(4, dtype=torch.float64)
    model.intent_df[0] = 99.0  # intent 0 is in nearly every prefix: IDF ~ 0
    model.intent_docs = torch.tensor(99.0, dtype=torch.float64)
    model.df_updates = torch.tensor(1)
    ids, scores = model.paper_personal_intents(query, torch.ones(1, 1, dtype=torch.bool), intents)
    assert ids[0, 0].tolist() == [1, 2, 0]
    tf1 = 2.0 / (14.0**0.5)
    assert float(scores[0, 0, 0]) == pytest.approx(tf1 * torch.tensor(100.0).log().item(), rel=1e-5)


def test_paper_df_moves_in_training_and_is_frozen_in_evaluation(built):
    model = _no_dropout(built(intent_retrieval="paper"))
    assert int(model.df_updates) == 0
    inter = Interaction({"item_id_list": SEQ, "item_length": LENGTHS, "target_id_list": TARGETS})
    model.train()
    model.calculate_loss(inter)
    assert int(model.df_updates) == 1 and float(model.intent_docs) == 11.0  # 5 + 6 real positions
    df = model.intent_df.clone()
    assert df.sum() > 0
    model.eval()
    with torch.no_grad():
        model.calculate_loss(inter)
        model.full_sort_predict(Interaction({"item_id_list": SEQ, "item_length": LENGTHS}))
    assert int(model.df_updates) == 1 and torch.equal(model.intent_df, df)


# --------------------------------------------------------------------------- ablation switches
def _dense(memory):
    return memory.dense() if isinstance(memory, IndexedMemory) else memory


def _same_shapes(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].shape == sb[k].shape for k in sa)


def test_no_personal_and_no_public_drop_one_branch_and_keep_the_other(built):
    full = _no_dropout(built())
    for switch, gone, kept in (("intent_personal", 0, 1), ("intent_public", 1, 0)):
        model = _no_dropout(built(**{switch: False}))
        assert _same_shapes(model, full)
        model.load_state_dict(full.state_dict())
        with torch.no_grad():
            a = model.encode(SEQ)
            mem_full = full.memories(a, SEQ, LENGTHS, True)
            mem = model.memories(a, SEQ, LENGTHS, True)
            out, weights, *_ = model.branches(a, mem)
        name = ("personal", "public")[gone]
        other = ("personal", "public")[kept]
        assert mem[name] is None and torch.equal(_dense(mem[other]), _dense(mem_full[other]))
        assert torch.equal(mem[f"{other}_ids"], mem_full[f"{other}_ids"])
        assert (weights[..., gone] == 0).all() and torch.allclose(weights[..., kept], torch.ones(()))
        # out = a + the remaining branch, as the full model computes that branch
        layers = full.personal_layers if kept == 0 else full.public_layers
        x = a
        with torch.no_grad():
            for layer in layers:
                x, _ = layer(x, mem_full[other])
        torch.testing.assert_close(out, a + x)
    both = built(intent_personal=False, intent_public=False)
    with torch.no_grad():
        torch.testing.assert_close(both.forward(SEQ, LENGTHS, all_positions=True), both.encode(SEQ))


def test_random_directions_keep_norms_are_seeded_and_change_nothing_else(built):
    sae = built()
    rand = built(intent_directions="random")
    again = built(intent_directions="random")
    other = built(intent_directions="random", seed=7)
    assert not torch.allclose(rand.intent_directions, sae.intent_directions)
    torch.testing.assert_close(rand.intent_directions.norm(dim=1), sae.intent_directions.norm(dim=1))
    assert torch.equal(rand.intent_directions, again.intent_directions)
    assert not torch.equal(rand.intent_directions, other.intent_directions)
    # retrieval searches the random directions; the text embeddings and labels stay
    torch.testing.assert_close(rand.index.directions, rand.intent_directions)
    assert torch.equal(rand.item_text_embeddings, sae.item_text_embeddings)
    assert rand.intent_labels == sae.intent_labels and _same_shapes(rand, sae)


def test_history_text_memory_holds_the_last_items_text(built):
    model = built(intent_memory="history_text")
    full = built()
    model.load_state_dict(full.state_dict())
    ids, keep = model.history_memory(SEQ, LENGTHS, all_positions=True)
    k = model.n_personal
    assert ids.shape == (2, 6, k)
    assert ids[0, 2].tolist() == [13, 8, 3] and keep[0, 2].tolist() == [True, True, True]
    assert ids[0, 0].tolist()[0] == 3 and keep[0, 0].tolist() == [True, False, False]
    last, last_keep = model.history_memory(SEQ, LENGTHS, all_positions=False)
    assert last[0, 0].tolist() == [23, 18, 13] and last[1, 0].tolist() == [30, 25, 20]
    with torch.no_grad():
        a = model.encode(SEQ)
        mem = model.memories(a, SEQ, LENGTHS, True)
        mem_full = full.memories(a, SEQ, LENGTHS, True)
    torch.testing.assert_close(mem["personal"], model.intent_proj(model.item_text_embeddings[ids]))
    assert torch.equal(mem["public"], mem_full["public"])  # the public branch is unchanged
    assert model.precompute_rows(SEQ, LENGTHS) == {}


def test_item_intent_codes_add_the_items_intent_mix_and_nothing_else(built):
    model = built(item_intent_codes=True)
    plain = built()
    model.load_state_dict(plain.state_dict())
    assert _same_shapes(model, plain)
    codes = model.vocabulary.item_codes()
    weights = codes / codes.sum(1, keepdim=True).clamp_min(1e-12)
    with torch.no_grad():
        expected = model.item_embedding.weight + weights @ model.intent_embeddings()
        torch.testing.assert_close(model.item_matrix(), expected)
        no_code = codes.sum(1) == 0
        assert no_code[0]  # padding
        torch.testing.assert_close(model.item_matrix()[no_code], model.item_embedding.weight[no_code])
        # with the projection zeroed the model is the plain one
        model.intent_proj.weight.zero_()
        model.intent_proj.bias.zero_()
        plain.intent_proj.weight.zero_()
        plain.intent_proj.bias.zero_()
        inter = Interaction({"item_id_list": SEQ, "item_length": LENGTHS})
        torch.testing.assert_close(model.full_sort_predict(inter), plain.full_sort_predict(inter))


def test_item_text_adds_the_projected_text_embedding_except_to_the_padding_row(built):
    model = built(item_text=True)
    plain = built()
    with torch.no_grad():
        text = model.item_text_embeddings @ model.item_text_proj.weight.t()
        expected = model.item_embedding.weight + text
        expected[0] = model.item_embedding.weight[0]
        torch.testing.assert_close(model.item_matrix(), expected)
        assert model.item_text_proj.bias is None and not torch.equal(text[1:], torch.zeros_like(text[1:]))
        # with the projection zeroed the model scores as the plain one with the same weights
        model.item_text_proj.weight.zero_()
        model.load_state_dict({**plain.state_dict(), "item_text_proj.weight": model.item_text_proj.weight})
        inter = Interaction({"item_id_list": SEQ, "item_length": LENGTHS})
        torch.testing.assert_close(model.full_sort_predict(inter), plain.full_sort_predict(inter))


def test_item_feature_dropout_drops_the_enrichments_inputs_in_training_only(built):
    both = {"item_intent_codes": True, "item_text": True}
    model, plain = built(**both, item_feature_dropout=0.5), built(**both)
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        # evaluation: no mask, the model without the key
        torch.testing.assert_close(model.item_matrix(), plain.item_matrix(), rtol=0, atol=0)
        model.train()
        torch.manual_seed(1)
        dropped = model.item_matrix()
        # the mask is drawn on the fixed inputs (kept elements scaled by 1 / (1 - p)), then projected
        torch.manual_seed(1)
        mix, sums = model._code_mix()
        mix = torch.nn.functional.dropout(mix, 0.5)
        text = torch.nn.functional.dropout(model.item_text_embeddings, 0.5)
        expected = (
            model.item_embedding.weight
            + mix @ model.intent_proj.weight.t()
            + sums[:, None] * model.intent_proj.bias
            + (text @ model.item_text_proj.weight.t()) * model.item_text_rows
        )
        torch.testing.assert_close(dropped, expected)
        assert not torch.allclose(dropped, plain.item_matrix())
        # the padding row keeps its ID embedding alone; the ID embeddings are never dropped
        torch.testing.assert_close(dropped[0], model.item_embedding.weight[0])
        # 0 draws no mask: training with the key at 0 leaves the random stream untouched
        off = built(**both, item_feature_dropout=0.0).train()
        torch.manual_seed(2)
        off.item_matrix()
        after = torch.rand(3)
        torch.manual_seed(2)
        torch.testing.assert_close(after, torch.rand(3))
    with pytest.raises(ConfigError, match=r"item_feature_dropout=1.0: it must be a number in \[0, 1\)"):
        built(**both, item_feature_dropout=1.0)


def test_bad_switches_are_clear_errors(built):
    for key, value, match in (
        ("intent_retrieval", "faiss", "intent_retrieval='faiss': it must be one of text, paper"),
        ("intent_memory", "items", "intent_memory='items': it must be one of intents, history_text"),
        ("intent_directions", "pca", "intent_directions='pca': it must be one of sae, random"),
        ("idf_momentum", 1.0, r"idf_momentum=1.0: it must be a number in \[0, 1\)"),
    ):
        with pytest.raises(ConfigError, match=match):
            built(**{key: value})
