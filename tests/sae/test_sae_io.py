import json

import pytest
import torch

from recbole_sae.sae import SAEConfig, SAETrainConfig, SparseAutoencoder, train_sae


def trained(activation="topk", dtype=torch.float32):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(512, 8, generator=g).to(dtype) * 2 + 0.5
    sae = SparseAutoencoder(SAEConfig(d_in=8, d_sae=32, k=3, activation=activation, dead_tokens_threshold=200))
    sae.to(dtype)
    train_sae(sae, x, SAETrainConfig(lr=1e-2, batch_size=64, n_steps=20, warmup_steps=2, show_progress=False))
    return sae, x


@pytest.mark.parametrize(
    "activation, dtype", [("topk", torch.float32), ("batchtopk", torch.float32), ("relu", torch.float64)]
)
def test_round_trip_is_bit_exact(tmp_path, activation, dtype):
    sae, x = trained(activation, dtype)
    assert sae.n_rows_seen.item() == 20 * 64  # training statistics hold state worth saving
    sae.save(tmp_path / "sae")
    assert sorted(p.name for p in (tmp_path / "sae").iterdir()) == ["cfg.json", "sae.safetensors"]
    loaded = SparseAutoencoder.load(tmp_path / "sae")
    assert not loaded.training
    assert loaded.cfg == sae.cfg
    ref = sae.state_dict()
    got = loaded.state_dict()
    assert set(ref) == set(got)
    assert {"norm_mean", "norm_scale", "rows_since_fired", "batchtopk_threshold", "W_enc", "W_dec"} <= set(got)
    for name in ref:
        assert got[name].dtype == ref[name].dtype, name
        assert torch.equal(got[name], ref[name]), name
    sae.eval()
    with torch.no_grad():
        assert torch.equal(loaded.encode(x), sae.encode(x))
        assert torch.equal(loaded(x)[0], sae(x)[0])


def test_no_pickle_in_files(tmp_path):
    sae, _ = trained()
    sae.save(tmp_path)
    raw = (tmp_path / "sae.safetensors").read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_len])
    assert "W_dec" in header and header["W_dec"]["shape"] == [32, 8]
    assert json.loads((tmp_path / "cfg.json").read_text())["d_sae"] == 32


def test_missing_directory_or_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SparseAutoencoder.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="sae.safetensors"):
        SparseAutoencoder.load(tmp_path / "empty")
    sae, _ = trained()
    sae.save(tmp_path / "s")
    (tmp_path / "s" / "cfg.json").unlink()
    with pytest.raises(FileNotFoundError, match="cfg.json"):
        SparseAutoencoder.load(tmp_path / "s")


def test_cfg_shape_mismatch(tmp_path):
    sae, _ = trained()
    sae.save(tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    cfg["d_sae"] = 48
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="d_sae=48"):
        SparseAutoencoder.load(tmp_path)


def test_invalid_cfg_json(tmp_path):
    sae, _ = trained()
    sae.save(tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    cfg["activation"] = "softmax"
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="activation"):
        SparseAutoencoder.load(tmp_path)
    (tmp_path / "cfg.json").write_text("{not json")
    with pytest.raises(ValueError, match="JSON"):
        SparseAutoencoder.load(tmp_path)


def test_round_trip_keeps_matryoshka_sizes(tmp_path):
    sae = SparseAutoencoder(SAEConfig(d_in=8, d_sae=32, k=3, matryoshka=[4, 12]))
    sae.save(tmp_path / "sae")
    assert json.loads((tmp_path / "sae" / "cfg.json").read_text())["matryoshka"] == [4, 12]
    assert SparseAutoencoder.load(tmp_path / "sae").cfg.matryoshka == [4, 12]


def test_a_safetensors_file_is_the_same_bytes_every_time_it_is_written(tmp_path):
    """safetensors orders the header's keys differently on every save (10 saves, 10 orders): the
    project's files get one canonical header, so that the same tensors give the same file digest
    (a text_embeddings file's SHA-256 is part of sweep run keys)."""
    import hashlib

    from safetensors.torch import load_file

    from recbole_sae.sae.io import save_tensors

    tensors = {"b": torch.ones(2, dtype=torch.int64), "a": torch.arange(3.0), "c": torch.ones(4)}
    metadata = {f"k{i}": str(i) for i in range(8)}
    digests = set()
    for i in range(10):
        path = save_tensors(tensors, tmp_path / f"t{i}.safetensors", metadata)
        digests.add(hashlib.sha256(path.read_bytes()).hexdigest())
    assert len(digests) == 1
    loaded = load_file(str(tmp_path / "t0.safetensors"))
    assert set(loaded) == set(tensors) and all(torch.equal(loaded[k], tensors[k]) for k in tensors)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "t0.safetensors"), "pt") as f:
        assert f.metadata() == metadata
