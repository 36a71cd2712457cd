"""Files written through a temporary file: never half-written, and with the user's usual mode (they
used to be 0o600)."""

import hashlib
import os
import stat

import pytest
import torch

from recbole_sae.analysis.report import write_json
from recbole_sae.fileio import (
    file_sha256,
    write_atomic,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)
from recbole_sae.sae import SAEConfig, SparseAutoencoder, save_sae
from recbole_sae.sae.io import save_tensors


@pytest.fixture
def umask():
    def set_mask(mask):
        os.umask(mask)

    before = os.umask(0o022)
    os.umask(before)
    yield set_mask
    os.umask(before)


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_follow_the_umask(umask, tmp_path, mask, expected):
    umask(mask)
    paths = [
        write_json({"a": 1}, tmp_path / "r.json"),
        write_text_atomic("<p>x</p>", tmp_path / "page.html"),
        save_sae(SparseAutoencoder(SAEConfig(d_in=4, d_sae=8, k=2)), tmp_path / "sae") / "sae.safetensors",
    ]
    save_tensors({"embeddings": torch.zeros(3, 2)}, tmp_path / "emb.safetensors", {"model": "m"})
    paths.append(tmp_path / "emb.safetensors")
    assert {p.name: _mode(p) for p in paths} == {p.name: expected for p in paths}
    assert sorted(f.name for f in tmp_path.iterdir()) == [
        "emb.safetensors",
        "page.html",
        "r.json",
        "sae",
    ]  # no temp files left


class Interrupted(Exception):
    pass


def test_an_interrupted_write_leaves_the_previous_file(tmp_path):
    path = write_text_atomic("old\n", tmp_path / "f.txt")

    def half_then_fail(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise Interrupted

    with pytest.raises(Interrupted):
        write_atomic(half_then_fail, path)
    assert path.read_text() == "old\n"
    with pytest.raises(Interrupted):
        write_atomic(half_then_fail, tmp_path / "new.txt")
    assert sorted(f.name for f in tmp_path.iterdir()) == ["f.txt"]  # no new file, no temp file


def test_bytes_json_and_digest(tmp_path):
    path = write_bytes_atomic(b"abc", tmp_path / "sub" / "b.bin")
    assert path.read_bytes() == b"abc"
    assert file_sha256(path) == hashlib.sha256(b"abc").hexdigest()
    assert write_json_atomic({"b": 1, "a": [1]}, tmp_path / "j.json", sort_keys=True).read_text() == (
        '{"a": [1], "b": 1}\n'
    )


@pytest.mark.parametrize("broken", ["weights", "config"])
def test_an_interrupted_save_sae_keeps_the_previous_sae(tmp_path, monkeypatch, broken):
    """save_sae wrote straight into its files: a save killed mid-way left a half-written SAE."""
    from recbole_sae.sae import io as sae_io

    old = SparseAutoencoder(SAEConfig(d_in=4, d_sae=8, k=2))
    folder = save_sae(old, tmp_path / "sae")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    new = SparseAutoencoder(SAEConfig(d_in=4, d_sae=16, k=3))
    if broken == "weights":

        def write_bytes_atomic(data, path):  # the weights' write dies half-way through the file
            def partial(tmp):
                with open(tmp, "wb") as f:
                    f.write(data[: len(data) // 2])
                raise Interrupted

            return write_atomic(partial, path)

        monkeypatch.setattr(sae_io, "write_bytes_atomic", write_bytes_atomic)
    else:

        def write_json_atomic(obj, path, **dumps):
            raise Interrupted

        monkeypatch.setattr(sae_io, "write_json_atomic", write_json_atomic)
    with pytest.raises(Interrupted):
        save_sae(new, folder)
    after = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert set(after) == set(before)  # no temp file left
    if broken == "weights":
        assert after == before
        assert SparseAutoencoder.load(folder).cfg == old.cfg
    else:
        assert after["cfg.json"] == before["cfg.json"]
