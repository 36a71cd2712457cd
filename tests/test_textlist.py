"""List values from yaml and the command line read one way everywhere."""

import pytest

from recbole_sae.benchmark import commands
from recbole_sae.errors import ConfigError
from recbole_sae.model.sasrec_sae import _int_list
from recbole_sae.textlist import split_list


def test_split_list_forms():
    assert split_list("a,b") == ["a", "b"]
    assert split_list(" [a, b] ") == ["a", "b"]
    assert split_list("(32; 128)") == ["32", "128"]
    assert split_list(["a ", "", 3]) == ["a", 3]
    assert split_list((1, 2)) == [1, 2]
    assert split_list(4) == [4]
    assert split_list(None) == [] and split_list("  ") == [] and split_list("[]") == []


def test_int_list():
    assert _int_list("[32,128]") == [32, 128]
    assert _int_list(["32", 128]) == [32, 128]
    assert _int_list(64) == [64] and _int_list(None) is None
    with pytest.raises(ConfigError, match=r"list of integers such as \[32,128\]"):
        _int_list("[32,a]")


def test_sweep_list_overrides_accept_brackets(monkeypatch, tmp_path):
    """``--models=[SASRec,GRU4Rec]`` used to become the models '[SASRec' and 'GRU4Rec]'."""
    seen = {}

    def fake_run_sweep(sweep, results, report_dir):
        seen["sweep"] = sweep
        return {"errors": 0}

    monkeypatch.setattr(commands, "run_sweep", fake_run_sweep)
    args = {"sweep": "sweep/ci.yaml", "models": "[SASRec, GRU4Rec]", "seeds": "[7;8]", "datasets": "[ml-100k]"}
    assert commands.main(args) == 0
    sweep = seen["sweep"]
    assert (sweep.models, sweep.seeds, sweep.datasets) == (["SASRec", "GRU4Rec"], [7, 8], ["ml-100k"])
    assert commands.main({"sweep": "sweep/ci.yaml", "models": "[]"}) == 2  # empty list: a clear error, no run
