"""SAERec's removal attributions, the faithfulness figure and the HTML pages."""

import pytest
import torch
from conftest import INTENT_SMALL
from recbole.data.interaction import Interaction
from torch import nn

from recbole_sae.intents.explain import explanation_records, faithfulness, item_code_contributions, write_html
from recbole_sae.intents.stage import IntentStage
from recbole_sae.model.saerec import SAERec

SEQ = torch.tensor([[5, 10, 15, 20, 25], [3, 8, 13, 18, 23]])  # internal item ids
LENGTHS = torch.tensor([5, 5])
PLANTED_ITEM = 33


@pytest.fixture
def model_of(tiny_build, tmp_path):
    def make(**overrides):
        config, _, train_data, *_ = tiny_build(
            "SAERec", intent_cache_dir=str(tmp_path / "cache"), **{**INTENT_SMALL, **overrides}
        )
        torch.manual_seed(0)
        return SAERec(config, train_data.dataset, IntentStage.build(config, train_data.dataset)).eval()

    return make


def _planted(model, scale=300.0):
    """One personal cross-attention layer made linear (b = a + mean of the kept slots' values) and one
    retrieved intent ``p`` given a large embedding ``v``, every other intent the zero vector; item
    ``PLANTED_ITEM`` points along ``v``. Returns ``(p, v)`` for the first row of ``SEQ``."""
    layer = model.personal_layers[0]
    layer.LayerNorm, layer.feed_forward = nn.Identity(), nn.Identity()
    hidden = model.hidden_size
    with torch.no_grad():
        for lin, weight in ((layer.query, 0.0), (layer.key, 0.0), (layer.value, 1.0), (layer.dense, 1.0)):
            lin.weight.copy_(weight * torch.eye(hidden))
            lin.bias.zero_()
        ids, _ = model.personal_intents(SEQ, LENGTHS, all_positions=False)
        p = int(ids[0, 0, 1])  # the second retrieved intent of the first user
        u = torch.zeros(model.intent_directions.size(1))
        u[0] = 1.0
        model.intent_directions.zero_()
        model.intent_directions[p] = u
        v = torch.randn(hidden, generator=torch.Generator().manual_seed(1))
        v = scale * v / v.norm()
        model.intent_proj.weight.copy_(torch.outer(v, u))
        model.intent_proj.bias.zero_()
        model.item_embedding.weight[PLANTED_ITEM] = 20.0 * v / v.norm()
    return p, v


def test_attribution_names_the_planted_intent(model_of):
    model = model_of(intent_layers=1, intent_public=False)
    p, v = _planted(model)
    k = model.n_personal
    records = explanation_records(
        model, Interaction({"item_id_list": SEQ[:1], "item_length": LENGTHS[:1]}), k=3, n_intents=k
    )
    top = records[0]["items"][0]
    assert top["item"] == PLANTED_ITEM
    assert top["intents"][0]["intent"] == p and top["intents"][0]["branch"] == "personal"
    # exact: removing p takes v / K out of the output; removing another raises p's share to 1 / (K - 1)
    assert top["intents"][0]["attribution"] == pytest.approx(20.0 * v.norm().item() / k, rel=1e-4)
    for other in top["intents"][1:]:
        assert other["attribution"] == pytest.approx(-20.0 * v.norm().item() * (1 / (k - 1) - 1 / k), rel=1e-4)
    assert records[0]["fusion"] == {"personal": 1.0, "public": 0.0}

    figure = faithfulness(model, [Interaction({"item_id_list": SEQ[:1], "item_length": LENGTHS[:1]})], k=1)
    assert figure["users"] == 1 and figure["items"] == 1 and figure["share_top_above_random"] == 1.0
    assert figure["mean_drop_top"] == pytest.approx(20.0 * v.norm().item() / k, rel=1e-4)
    assert figure["mean_drop_random"] < 0 and figure["ratio"] is None


def test_attribution_goes_through_the_public_branch_and_the_fusion(model_of):
    model = model_of()
    with torch.no_grad():
        att = model.attribute(SEQ, LENGTHS, k=4)
        base = model.forward(SEQ, LENGTHS)
        # masking public slot 0 by hand: the drop of the top item
        a = model.gather_indexes(model.encode(SEQ), LENGTHS - 1).unsqueeze(1)
        mem = model.memories(a, SEQ, LENGTHS, all_positions=False)
        keep = torch.ones(2, 1, model.n_public, dtype=torch.bool)
        keep[:, :, 0] = False
        out, *_ = model.branches(a, mem, public_keep=keep)
    item = att["top_items"][:, 0]
    expected = ((base - out.squeeze(1)) * model.item_embedding.weight[item]).sum(-1)
    torch.testing.assert_close(att["drops"][:, 0, model.n_personal], expected, rtol=1e-4, atol=1e-5)
    assert att["drops"].shape == (2, 4, model.n_personal + model.n_public)
    torch.testing.assert_close(att["top_scores"][:, 0], (base * model.item_embedding.weight[item]).sum(-1))


def test_two_users_with_different_histories_get_different_explanations(model_of, tmp_path):
    model = model_of()
    records = explanation_records(model, Interaction({"item_id_list": SEQ, "item_length": LENGTHS}), k=5)
    first, second = records
    assert [i["intent"] for i in first["personal_intents"]] != [i["intent"] for i in second["personal_intents"]]
    explained = [[(i["item"], [x.get("intent") for x in i["intents"]]) for i in r["items"]] for r in records]
    assert explained[0] != explained[1]
    # the page shows history and recommendations by title, and the intents with their attributions
    titles = [f"title {i}" for i in range(model.n_items)]
    first["user_token"] = "u<1>"
    path = write_html(first, titles, tmp_path / "pages")
    page = open(path, encoding="utf-8").read()
    assert path.endswith("user-u_1_.html") and "u&lt;1&gt;" in page
    assert all(titles[i] in page for i in first["history"] + first["top_items"])
    assert first["items"][0]["intents"][0]["label"].split(" (")[0] in page
    assert f"{first['items'][0]['intents'][0]['attribution']:+.4f}" in page


def test_history_text_memory_is_explained_by_history_items(model_of):
    model = model_of(intent_memory="history_text")
    records = explanation_records(model, Interaction({"item_id_list": SEQ, "item_length": LENGTHS}), k=2)
    assert [s["item"] for s in records[0]["personal_intents"]] == [25, 20, 15]
    assert all("intent" in s for s in records[0]["public_intents"])


def test_item_code_attributions_are_exact_and_name_each_items_own_intents(model_of, tmp_path):
    """item_intent_codes with both branches off: no memory, so the explanations used to be empty
    ("fewer than two intents in the memory"); now each item is explained by its own intents."""
    model = model_of(item_intent_codes=True, intent_personal=False, intent_public=False)
    att = model.attribute(SEQ, LENGTHS, k=5)
    assert att["drops"].size(-1) == 0  # no memory
    ids, contributions = item_code_contributions(model, att["state"], att["top_items"])
    codes = model.vocabulary.item_codes()
    weights = codes / codes.sum(1, keepdim=True).clamp_min(1e-12)
    intents = model.intent_embeddings().detach()
    items = model.item_matrix().detach()
    for row in range(2):
        state = att["state"][row]
        for rank, item in enumerate(att["top_items"][row].tolist()):
            own = ids[row, rank][ids[row, rank] >= 0].tolist()
            assert sorted(own) == codes[item].nonzero().flatten().tolist()
            for slot, j in enumerate(own):  # removing intent j from the item's vector loses exactly its term
                without = items[item] - weights[item, j] * intents[j]
                dropped = float(state @ items[item] - state @ without)
                assert contributions[row, rank, slot].item() == pytest.approx(dropped, abs=1e-5)
            mix = items[item] - model.item_embedding.weight[item].detach()
            assert float(contributions[row, rank].sum()) == pytest.approx(float(state @ mix), abs=1e-5)
    inter = Interaction({"item_id_list": SEQ, "item_length": LENGTHS, "user_id": torch.tensor([1, 2])})
    records = explanation_records(model, inter, k=5, n_intents=3)
    for row, record in enumerate(records):
        for rank, item in enumerate(record["items"]):
            own = set(codes[item["item"]].nonzero().flatten().tolist())
            assert item["intents"] and all(it["branch"] == "item" and it["intent"] in own for it in item["intents"])
            assert len(item["intents"]) == min(3, len(own))
            attributions = [it["attribution"] for it in item["intents"]]
            assert attributions == sorted(attributions, reverse=True)
            assert attributions[0] == round(float(contributions[row, rank].max()), 4)
    figure = faithfulness(model, [inter], n_users=2, k=5)
    assert figure["users"] == 2 and figure["items"] > 0
    assert figure["mean_drop_top"] >= figure["mean_drop_random"]
    assert figure["share_attention_agrees"] is None and figure["mean_drop_attention_top"] is None
    page = open(write_html({**records[0], "user": 1}, {i: f"item {i}" for i in range(model.n_items)}, tmp_path)).read()
    assert "(item, attribution" in page


def test_with_a_memory_and_item_codes_both_kinds_compete(model_of):
    model = model_of(item_intent_codes=True)
    inter = Interaction({"item_id_list": SEQ, "item_length": LENGTHS, "user_id": torch.tensor([1, 2])})
    att = model.attribute(SEQ, LENGTHS, k=5)
    ids, contributions = item_code_contributions(model, att["state"], att["top_items"])
    records = explanation_records(model, inter, k=5, n_intents=50)
    for row, record in enumerate(records):
        for rank, item in enumerate(record["items"]):
            n_own = int((ids[row, rank] >= 0).sum())
            assert len(item["intents"]) == att["drops"].size(-1) + n_own  # every candidate, ranked
            assert {it["branch"] for it in item["intents"]} <= {"personal", "public", "item"}
            attributions = [it["attribution"] for it in item["intents"]]
            assert attributions == sorted(attributions, reverse=True)
    figure = faithfulness(model, [inter], n_users=2, k=5)
    assert figure["items"] == 10 and figure["share_top_above_random"] > 0.5
