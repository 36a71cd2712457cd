"""SAERec's faster network computes what it computed before: a reference implementation of the
first version (keys and values projected from the gathered [B, L, K, H] memory, einsum attention,
every position through the intent branches) against the model, same weights, same losses,
gradients and scores."""

import math

import pytest
import torch
import torch.nn.functional as F
from recbole.data.interaction import Interaction

from recbole_sae.model.layers import trim
from recbole_sae.model.saerec import PERSONAL_FIELD, IndexedMemory, MaskDropout

SEQ = torch.tensor([[3, 8, 13, 18, 23, 0], [5, 10, 15, 20, 25, 30], [7, 12, 0, 0, 0, 0]])
LENGTHS = torch.tensor([5, 6, 2])
# the targets of a later window: only some positions carry a loss target
TARGETS = torch.tensor([[0, 0, 18, 23, 28, 0], [10, 15, 20, 25, 30, 35], [12, 17, 0, 0, 0, 0]])


def reference_layer(layer, x, memory, keep=None):
    """IntentCrossAttention as first written."""
    b, length, hidden = x.shape
    heads, size = layer.heads, layer.size
    q = layer.query(x).view(b, length, heads, size)
    if memory.dim() == 2:
        k = layer.key(memory).view(-1, heads, size)
        v = layer.value(memory).view(-1, heads, size)
        scores = torch.einsum("blhd,khd->blhk", q, k)
    else:
        k = layer.key(memory).view(b, length, -1, heads, size)
        v = layer.value(memory).view(b, length, -1, heads, size)
        scores = torch.einsum("blhd,blkhd->blhk", q, k)
    scores = scores / math.sqrt(size)
    if keep is None:
        weights = torch.softmax(scores, dim=-1)
    else:
        mask = keep.unsqueeze(2)
        weights = torch.softmax(scores.masked_fill(~mask, torch.finfo(scores.dtype).min), dim=-1) * mask
    if memory.dim() == 2:
        context = torch.einsum("blhk,khd->blhd", weights, v)
    else:
        context = torch.einsum("blhk,blkhd->blhd", weights, v)
    context = layer.dense(context.reshape(b, length, hidden))
    return reference_feed_forward(layer.feed_forward, layer.LayerNorm(context + x)), weights


def reference_feed_forward(ff, x):
    """RecBole's FeedForward with its own gelu (no dropout: the tests' dropout is 0)."""
    h = ff.dense_1(x)
    h = h * 0.5 * (1.0 + torch.erf(h / math.sqrt(2.0)))
    return ff.LayerNorm(ff.dense_2(h) + x)


def reference_forward(model, item_seq, lengths, all_positions, personal_ids=None):
    """SAERec.forward as first written: every position through both branches."""
    item_seq = trim(item_seq, lengths)
    a = model.encode(item_seq)
    if not all_positions:
        a = model.gather_indexes(a, lengths - 1).unsqueeze(1)
    mem = model.memories(a, item_seq, lengths, all_positions, personal_ids)
    b = c = None
    if mem["personal"] is not None:
        personal = mem["personal"]
        dense = personal.dense() if isinstance(personal, IndexedMemory) else personal
        b = a
        for layer in model.personal_layers:
            b, _ = reference_layer(layer, b, dense, mem["personal_keep"])
    if mem["public"] is not None:
        c = a
        for layer in model.public_layers:
            c, _ = reference_layer(layer, c, mem["public"])
    return model.fuse(a, b, c)[0]


def reference_loss(model, interaction):
    personal = interaction[PERSONAL_FIELD] if PERSONAL_FIELD in interaction.interaction else None
    hidden = reference_forward(model, interaction["item_id_list"], interaction["item_length"], True, personal)
    targets = interaction["target_id_list"][:, : hidden.size(1)]
    real = targets > 0
    items = model.item_matrix() if model.items_enriched else model.item_embedding.weight
    return F.cross_entropy(hidden[real] @ items.t(), targets[real])


@pytest.fixture
def built(saerec_of):
    def make(**overrides):
        model = saerec_of(**{"hidden_dropout_prob": 0.0, "attn_dropout_prob": 0.0, **overrides})
        with torch.no_grad():  # weights far from the initialisation's: attention far from uniform
            for param in model.parameters():
                param.add_(0.3 * torch.randn_like(param))
        return model

    return make


MODES = {
    "text": {},
    "text_precomputed": {},
    "paper": {"intent_retrieval": "paper"},
    "paper_gate": {"intent_retrieval": "paper", "fusion": "gate"},
    "history_text": {"intent_memory": "history_text"},
    "codes_and_text": {"item_intent_codes": True, "item_text": True},
    "no_personal": {"intent_personal": False},
    "no_public": {"intent_public": False},
    "one_layer": {"intent_layers": 1},
}


def _grads(model, loss):
    model.zero_grad()
    loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_training_loss_and_gradients_equal_the_reference(built, mode):
    model = built(**MODES[mode]).train()
    fields = {"item_id_list": SEQ, "item_length": LENGTHS, "target_id_list": TARGETS}
    if mode == "text_precomputed":
        fields.update(model.precompute_rows(SEQ, LENGTHS))
        assert PERSONAL_FIELD in fields
    inter = Interaction(fields)
    if mode.startswith("paper"):  # a few batches into the df first: the IDF is not uniform
        for _ in range(2):
            reference_loss(model, inter)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    expected = reference_loss(model, inter)
    expected_grads = _grads(model, expected)
    after_reference = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(state)  # the paper mode's df as before the reference's batch
    loss = model.calculate_loss(inter)
    grads = _grads(model, loss)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    assert grads.keys() == expected_grads.keys() and len(grads) > 0
    for name in grads:
        torch.testing.assert_close(grads[name], expected_grads[name], rtol=1e-4, atol=1e-6, msg=name)
    for name, value in model.state_dict().items():  # the same df update
        torch.testing.assert_close(value, after_reference[name], rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("mode", sorted(set(MODES) - {"text_precomputed"}))
def test_scores_equal_the_reference(built, mode):
    model = built(**MODES[mode])
    if mode.startswith("paper"):
        model.train()
        model.calculate_loss(Interaction({"item_id_list": SEQ, "item_length": LENGTHS, "target_id_list": TARGETS}))
    model.eval()
    inter = Interaction({"item_id_list": SEQ, "item_length": LENGTHS})
    with torch.no_grad():
        items = model.item_matrix()
        expected = reference_forward(model, SEQ, LENGTHS, False).squeeze(1) @ items.t()
        torch.testing.assert_close(model.full_sort_predict(inter), expected, rtol=1e-5, atol=1e-5)
        every = reference_forward(model, SEQ, LENGTHS, True)
        torch.testing.assert_close(model.forward(SEQ, LENGTHS, all_positions=True), every, rtol=1e-5, atol=1e-5)


def test_the_layer_equals_the_reference_for_every_memory_form(built):
    layer = built().personal_layers[0].eval()
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, layer.heads * layer.size, generator=gen)
    table = torch.randn(9, x.size(-1), generator=gen)
    ids = torch.randint(0, 9, (2, 4, 3), generator=gen)
    keep = torch.rand(2, 4, 3, generator=gen) > 0.3
    keep[0, 0] = False  # a position with nothing kept: zero weights
    with torch.no_grad():
        for memory, dense in (
            (IndexedMemory(table, ids), table[ids]),
            (table[ids], table[ids]),
            (table[:3], table[:3]),
        ):
            for mask in (None, keep):
                out, weights = layer(x, memory, mask)
                ref_out, ref_weights = reference_layer(layer, x, dense, mask)
                torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-6)
                torch.testing.assert_close(weights, ref_weights, rtol=1e-5, atol=1e-6)
                assert weights.shape == (2, 4, layer.heads, 3)
        assert (layer(x, IndexedMemory(table, ids), keep)[1][0, 0] == 0).all()


def test_mask_dropout_keeps_with_probability_one_minus_p_and_scales():
    torch.manual_seed(0)
    drop = MaskDropout(0.3).train()
    x = torch.ones(200_000, requires_grad=True)
    out = drop(x)
    kept = out != 0
    assert torch.allclose(out[kept], torch.full_like(out[kept], 1 / 0.7))
    assert abs(kept.float().mean().item() - 0.7) < 0.005
    out.sum().backward()
    torch.testing.assert_close(x.grad, out.detach())  # the gradient is the same scaled mask
    assert torch.equal(drop.eval()(x), x)
    assert torch.equal(MaskDropout(0.0).train()(x), x)
    assert torch.equal(MaskDropout(1.0).train()(x), torch.zeros_like(x))
