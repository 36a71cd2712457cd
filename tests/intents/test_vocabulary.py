"""The intent vocabulary on planted toys: embeddings built from known directions, attributes aligned to them."""

import json
import math

import pytest
import torch

from recbole_sae.intents.vocabulary import (
    IntentRules,
    IntentVocabulary,
    build_intent_vocabulary,
    text_words,
)
from recbole_sae.sae import SAEConfig, SAETrainConfig, SparseAutoencoder

GENRES = ["Western", "Horror", "Comedy", "Romance"]
WORDS = ["cowboy", "ghost", "joke", "love"]
N_ITEMS, DIM = 120, 8


def planted(generic: bool = False, seed: int = 0):
    """Items = (1..2) x one of 4 orthonormal group directions (+ noise); group g <-> genre g.

    With ``generic``, items also carry a fifth direction, on every item but each 20th.
    Returns (embeddings [1 + N, d] with a zero padding row, texts, attributes, basis [5, d], groups).
    """
    g = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(DIM, DIM, generator=g))[0][:, :5].T.contiguous()
    group = torch.arange(N_ITEMS) % 4
    x = (1 + torch.rand(N_ITEMS, generator=g))[:, None] * basis[group]
    if generic:
        amount = torch.where(
            torch.arange(N_ITEMS) % 20 != 0, 0.5 + torch.rand(N_ITEMS, generator=g), torch.zeros(N_ITEMS)
        )
        x = x + amount[:, None] * basis[4]
    x = x + 0.05 * torch.randn(N_ITEMS, DIM, generator=g)
    emb = torch.cat([torch.zeros(1, DIM), x])
    texts = [""] + [f"Item {i}: the {WORDS[group[i]]} story" for i in range(N_ITEMS)]
    matrix = torch.zeros(N_ITEMS + 1, 4, dtype=torch.bool)
    matrix[torch.arange(1, N_ITEMS + 1), group] = True
    return emb, texts, {"genre": (list(GENRES), matrix)}, basis, torch.cat([torch.tensor([-1]), group])


SAE_CFG = dict(d_in=DIM, d_sae=8, k=1, seed=0)
TRAIN_CFG = dict(lr=3e-3, batch_size=40, n_steps=150, warmup_steps=10, show_progress=False)
RULES = IntentRules(min_items=5, max_items_frac=0.5, min_coherence=0.6, top_items=10)


def _build_planted(emb, texts, attributes):
    """The vocabulary of the planted items with this file's SAE, training and rules."""
    titles = [""] + [f"Item {i}" for i in range(N_ITEMS)]
    return build_intent_vocabulary(
        emb, texts, attributes, SAEConfig(**SAE_CFG), SAETrainConfig(**TRAIN_CFG), RULES, titles=titles
    )


@pytest.fixture(scope="module")
def trained():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        emb, texts, attributes, basis, group = planted()
        vocab = _build_planted(emb, texts, attributes)
    finally:
        torch.set_num_threads(before)
    return vocab, emb, texts, attributes, basis, group


def test_the_planted_intents_are_kept_and_named(trained):
    vocab, emb, _, _, basis, group = trained
    assert vocab.n_latents == 8 and vocab.n_kept == 4 and vocab.n_alive >= 4
    assert vocab.directions.shape == (4, DIM)
    assert torch.linalg.vector_norm(vocab.directions, dim=1).numpy() == pytest.approx([1.0] * 4, abs=1e-6)
    found = set()
    for i in range(vocab.n_kept):
        # each intent's direction leans to one planted direction (seen from the SAE's center, which
        # the direction is relative to: its items minus the center line up with it)
        cos = vocab.directions[i] @ basis[:4].T
        g = int(cos.argmax())
        assert float(cos[g]) > 0.7 and float(cos.sort().values[-2]) < 0
        centred = torch.nn.functional.normalize(emb[vocab.top_items[i]] - vocab.center, dim=1)
        assert float((centred @ vocab.directions[i]).min()) > 0.9
        assert vocab.labels[i].startswith(f"{GENRES[g]} (1.0)")
        assert f"words: {WORDS[g]}" in vocab.labels[i]
        assert vocab.values[i] == [["genre", GENRES[g], 1.0]]
        assert vocab.words[i] == [WORDS[g]]  # "story"/"item" are on every item: zero IDF
        assert all(int(group[item]) == g for item in vocab.top_items[i])
        assert len(vocab.top_items[i]) == 10 and int(vocab.n_items_firing[i]) == 30
        assert float(vocab.coherence[i]) > 0.9 and float(vocab.purity[i]) == 1.0
        found.add(g)
    assert found == {0, 1, 2, 3}
    assert vocab.kept.tolist() == sorted(vocab.kept.tolist())


def test_item_codes_are_the_sae_activations_on_the_kept_intents(trained):
    vocab, emb, *_ = trained
    codes = vocab.item_codes()
    assert codes.shape == (N_ITEMS + 1, vocab.n_kept)
    assert torch.equal(codes[0], torch.zeros(vocab.n_kept))
    with torch.no_grad():
        ref = vocab.sae.encode(emb[1:])[:, vocab.kept]
    assert torch.equal(codes[1:], ref)
    assert int((codes[1:] > 0).sum(1).max()) <= 1  # k = 1: one intent per item at most


def test_save_load_round_trip(trained, tmp_path):
    vocab = trained[0]
    vocab.save(tmp_path / "vocab")
    assert {p.name for p in (tmp_path / "vocab").iterdir()} == {"sae", "intents.json", "directions.safetensors"}
    meta = json.loads((tmp_path / "vocab" / "intents.json").read_text())
    assert meta["n_kept"] == 4 and meta["intents"][0]["label"] == vocab.labels[0]
    loaded = IntentVocabulary.load(tmp_path / "vocab")
    assert loaded.labels == vocab.labels and loaded.top_items == vocab.top_items
    assert loaded.top_titles == vocab.top_titles and loaded.values == vocab.values
    for name in ("kept", "directions", "center", "coherence", "n_items_firing", "latent_items"):
        assert torch.equal(getattr(loaded, name), getattr(vocab, name)), name
    assert torch.equal(loaded.item_codes(), vocab.item_codes())
    assert (loaded.n_latents, loaded.n_alive, loaded.n_kept) == (vocab.n_latents, vocab.n_alive, vocab.n_kept)
    for key, value in vocab.sae.state_dict().items():
        assert torch.equal(loaded.sae.state_dict()[key], value)
    assert loaded.table(n=3) == vocab.table(n=3)
    with pytest.raises(FileNotFoundError, match="lacks"):
        IntentVocabulary.load(tmp_path)


def test_table(trained):
    vocab = trained[0]
    table = vocab.table(n=2)
    lines = table.strip().splitlines()
    assert lines[0].startswith("Intents: 4 kept of")
    assert lines[2] == "| intent | latent | label | n items | coherence | top items |"
    assert len(lines) == 4 + 2
    best = int(torch.argmax(vocab.coherence))
    assert lines[4].startswith(f"| {best} | {int(vocab.kept[best])} | {vocab.labels[best]} | 30 | ")
    assert f"Item {vocab.top_items[best][0] - 1}" in lines[4]


def test_same_seed_same_vocabulary(trained):
    vocab, emb, texts, attributes, *_ = trained
    again = _build_planted(emb, texts, attributes)
    assert again.labels == vocab.labels and again.top_items == vocab.top_items
    assert torch.equal(again.directions, vocab.directions) and torch.equal(again.kept, vocab.kept)


def _hand_built_sae(basis):
    """ReLU SAE whose latents are: the 4 planted groups, the generic direction, a mix of groups 0
    and 1, and a direction no item has (dead)."""
    spare = torch.linalg.qr(torch.cat([basis, torch.eye(DIM)]).T)[0][:, 5]
    dirs = torch.stack([*basis, torch.nn.functional.normalize(basis[0] + basis[1], dim=0), spare])
    sae = SparseAutoencoder(SAEConfig(d_in=DIM, d_sae=7, activation="relu", normalize="none", b_dec_init="zeros"))
    with torch.no_grad():
        sae.W_dec.copy_(dirs)
        sae.W_enc.copy_(dirs.T)
        sae.b_enc.fill_(-0.3)
        sae.b_dec.zero_()
    return sae.eval()


def test_rules_drop_a_latent_on_almost_all_items_an_incoherent_one_and_dead_ones():
    emb, texts, attributes, basis, group = planted(generic=True)
    sae = _hand_built_sae(basis)

    def build(rules):
        return build_intent_vocabulary(emb, texts, attributes, sae.cfg, rules=rules, sae=sae)

    everything = build(IntentRules(min_items=1, max_items_frac=1.0, min_coherence=-1.0))
    assert everything.n_alive == 6 and everything.n_kept == 6  # latent 6 is dead
    assert everything.latent_items.tolist() == [30, 30, 30, 30, 114, 60, 0]
    assert everything.n_items_firing.tolist() == [30, 30, 30, 30, 114, 60]
    generic, mixed = 4, 5
    assert float(everything.coherence[generic]) < 0.6 and float(everything.coherence[mixed]) < 0.6
    assert all(float(c) > 0.8 for c in everything.coherence[:4])
    assert everything.labels[mixed].startswith("Horror (0.5) · Western (0.5)") or everything.labels[mixed].startswith(
        "Western (0.5) · Horror (0.5)"
    )

    # max_items_frac drops the latent that fires on 95% of the items; min_coherence the mixed one
    frac = build(IntentRules(min_items=1, max_items_frac=0.9, min_coherence=-1.0))
    assert frac.kept.tolist() == [0, 1, 2, 3, 5]
    coherent = build(IntentRules(min_items=1, max_items_frac=1.0, min_coherence=0.8))
    assert coherent.kept.tolist() == [0, 1, 2, 3]
    few = build(IntentRules(min_items=31, max_items_frac=1.0, min_coherence=-1.0))
    assert few.kept.tolist() == [4, 5]
    # the kept intents' labels still name the planted genres
    for i, g in enumerate(coherent.kept.tolist()):
        assert coherent.labels[i].startswith(f"{GENRES[g]} (1.0)")
    # directions: raw decoder rows, normalised; codes: the activations
    assert torch.allclose(coherent.directions, sae.W_dec[:4], atol=1e-6)
    assert torch.equal(coherent.item_codes()[1:], torch.relu(emb[1:] @ sae.W_enc + sae.b_enc)[:, :4].detach())


def test_specific_attribute_values_outrank_generic_ones():
    emb, texts, _, basis, group = planted()
    # a second field: every item is "Movie", the genre's own value is specific
    kinds = ["Movie", *GENRES]
    matrix = torch.zeros(N_ITEMS + 1, 5, dtype=torch.bool)
    matrix[1:, 0] = True
    matrix[torch.arange(1, N_ITEMS + 1), 1 + group[1:]] = True
    sae = _hand_built_sae(basis)
    vocab = build_intent_vocabulary(
        emb,
        texts,
        {"kind": (kinds, matrix)},
        sae.cfg,
        rules=IntentRules(min_items=1, max_items_frac=1.0, min_coherence=0.8, label_values=1),
        sae=sae,
    )
    assert [v[0][1] for v in vocab.values] == GENRES


def test_text_words_and_argument_checks():
    assert text_words("The Cowboy's 2 big-hats, and a ghost!") == {"cowboy's", "big-hats", "ghost"}
    emb, texts, attributes, *_ = planted()
    with pytest.raises(ValueError, match="texts has 3 entries"):
        build_intent_vocabulary(emb, texts[:3], attributes, SAEConfig(**SAE_CFG))
    with pytest.raises(ValueError, match="does not match the embedding width"):
        build_intent_vocabulary(emb, texts, attributes, SAEConfig(d_in=4, d_sae=8, k=1))
    with pytest.raises(ValueError, match="max_items_frac"):
        IntentRules(max_items_frac=0.0)
    assert math.isclose(IntentRules.from_dict(RULES.to_dict()).min_coherence, 0.6)


def test_a_save_that_fails_keeps_the_previous_intents_json(trained, tmp_path):
    """intents.json was written in place: a save that failed while serialising left it empty."""
    vocab = trained[0]
    vocab.save(tmp_path / "vocab")
    before = (tmp_path / "vocab" / "intents.json").read_bytes()
    words = vocab.words[0]
    vocab.words[0] = object()  # an intent whose words do not serialise
    try:
        with pytest.raises(TypeError, match="not JSON serializable"):
            vocab.save(tmp_path / "vocab")
    finally:
        vocab.words[0] = words
    assert (tmp_path / "vocab" / "intents.json").read_bytes() == before
    assert IntentVocabulary.load(tmp_path / "vocab").labels == vocab.labels
