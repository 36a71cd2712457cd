"""Files written through a temporary file get the user's usual mode (they used to be 0o600)."""

import os
import stat

import pytest
import torch

from recbole_sae.analysis.report import write_json
from recbole_sae.fileio import write_text_atomic
from recbole_sae.intents.encoder import save_safetensors_atomic
from recbole_sae.sae import SAEConfig, SparseAutoencoder, save_sae


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
    save_safetensors_atomic({"embeddings": torch.zeros(3, 2)}, tmp_path / "emb.safetensors", {"model": "m"})
    paths.append(tmp_path / "emb.safetensors")
    assert {p.name: _mode(p) for p in paths} == {p.name: expected for p in paths}
    assert sorted(f.name for f in tmp_path.iterdir()) == ["emb.safetensors", "page.html", "r.json", "sae"]  # no temp files left
