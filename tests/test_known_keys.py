"""A key that nothing reads is an error naming the closest known key; extra_keys lets one through."""

from __future__ import annotations

from pathlib import Path

import conftest
import pytest
import yaml
from conftest import INTENT_SMALL, SMALL

from recbole_sae import known_keys
from recbole_sae.benchmark import SWEEP_KEYS, load_sweep
from recbole_sae.benchmark import main as sweep_main
from recbole_sae.cli import main, parse_args
from recbole_sae.config import PROPERTIES, Config
from recbole_sae.errors import ConfigError


def test_a_misspelt_key_on_the_command_line_exits_2_naming_the_closest_key(capsys):
    """--hiden_size=64 used to train the default size without a word."""
    assert main(["--model=SASRec", "--dataset=ml-100k", "--hiden_size=64"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown key 'hiden_size' (did you mean 'hidden_size'?) on the command line. ")
    assert "--extra_keys=hiden_size" in err and err.count("\n") == 1 and "Traceback" not in err


def test_extra_keys_lets_free_form_keys_through():
    config = Config(
        "SASRec", "ml-100k", cmd_args=parse_args(["--my_flag=3", "--other=x", "--extra_keys=my_flag,other"])
    )
    assert config["my_flag"] == 3 and config["other"] == "x"
    config = Config("SASRec", "ml-100k", config_dict={"my_flag": 1, "extra_keys": ["my_flag"]})
    assert config["my_flag"] == 1


def test_a_key_of_another_model_on_the_command_line_names_that_model():
    cmd_args = parse_args(["--sae_k=32"])
    with pytest.raises(ConfigError, match="key 'sae_k' is read by SASRecSAE, not by SASRec"):
        Config("SASRec", "ml-100k", cmd_args=cmd_args)
    assert Config("SASRecSAE", "ml-100k", cmd_args=cmd_args)["sae_k"] == 32


def test_config_dicts_and_files_may_hold_any_models_keys_but_no_unknown_key(tmp_path, monkeypatch):
    """A sweep gives one config to several models: a baseline gets SAERec's keys too. A typo is still an error."""
    config = Config("GRU4Rec", "ml-100k", config_dict={"sae_k": 8, "n_heads": 1, "intent_sae_k": 2})
    assert config["embedding_size"] == 64
    with pytest.raises(
        ConfigError, match=r"unknown key 'lerning_rate' \(did you mean 'learning_rate'\?\) in the config dict"
    ):
        Config("SASRec", "ml-100k", config_dict={"lerning_rate": 0.1})
    path = tmp_path / "c.yaml"
    path.write_text("stoping_step: 2\n", encoding="utf-8")
    with pytest.raises(
        ConfigError, match=r"unknown key 'stoping_step' \(did you mean 'stopping_step'\?\) in the config files"
    ):
        Config("SASRec", "ml-100k", [str(path)])


def test_recbole_keys_without_a_yaml_default_are_known():
    """RecBole reads some keys that no yaml declares (its data transforms, its trainer)."""
    known = known_keys.generic_keys()
    for key in (
        "MASK_ITEM_SEQ",
        "eval_type",
        "local_rank",
        "single_spec",
        "field_separator",
        "load_col",
        "user_inter_num_interval",
        "clip_grad_norm",
        "run_name",
        "resume",
        "config_files",
        "extra_keys",
    ):
        assert key in known, key
    assert "hiden_size" not in known and "backend" not in known


def test_every_key_the_project_reads_is_declared_in_a_yaml():
    """known_keys trusts the yamls for this project's keys: a key read in code but declared nowhere
    would be rejected on the command line."""
    package = Path(known_keys.__file__).resolve().parent
    declared = set(known_keys.generic_keys()) | set(known_keys.all_model_keys())
    runtime = {"model", "dataset", "device", "MODEL_TYPE", "local_rank", "run_dir"}  # set by Config / the pipeline
    read = set()
    for path in package.rglob("*.py"):
        read |= known_keys.read_keys(path)
    assert read - declared - runtime == set()


def _sweep_settings(sweep) -> set:
    keys = set(sweep.config) | set(sweep.grid)
    for section in (sweep.model_config, sweep.dataset_config, sweep.model_grid):
        for inner in section.values():
            keys |= set(inner)
    return keys


@pytest.mark.parametrize("path", sorted((PROPERTIES / "sweep").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_sweep_passes_the_key_check(path):
    sweep = load_sweep(path)
    assert _sweep_settings(sweep)  # the check below has keys to look at
    known_keys.check_sweep_keys(sweep, SWEEP_KEYS)


def test_the_test_suites_settings_pass_the_key_check(tiny_dataset):
    """SMALL, INTENT_SMALL, the tiny dataset's yaml and the sweep fixture's config are all known keys."""
    data_path, name, yaml_file = tiny_dataset
    for model, extra in [("SASRec", {}), ("SASRecPlus", {}), ("SASRecSAE", {}), ("SAERec", INTENT_SMALL)]:
        config = Config(model, name, [yaml_file], {**SMALL, **extra, "data_path": data_path})
        assert config["hidden_size"] == SMALL["hidden_size"]
    known = known_keys.generic_keys() | known_keys.all_model_keys()
    assert set(yaml.safe_load(open(yaml_file))) <= known
    assert set(conftest.SMALL) | set(conftest.INTENT_SMALL) <= known


def test_an_unknown_key_on_a_sweep_stops_it_before_any_run(sweep_file, in_tmp, capsys):
    """--executor=ray on a sweep (a key nothing reads) used to run the local pool without a word."""
    path = sweep_file()
    results = in_tmp / "r.jsonl"
    assert sweep_main({"sweep": str(path), "results": str(results), "executor": "ray"}) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown key 'executor' on the sweep's command line") and not results.exists()


def test_an_unknown_key_in_a_sweep_file_names_its_section(sweep_file, in_tmp, capsys):
    path = sweep_file(model_config={"GRU4Rec": {"embeding_size": 16}})
    assert sweep_main({"sweep": str(path), "results": str(in_tmp / "r.jsonl")}) == 2
    err = capsys.readouterr().err
    assert "unknown key 'embeding_size' (did you mean 'embedding_size'?) in model_config.GRU4Rec of the sweep" in err
    path = sweep_file()
    assert sweep_main({"sweep": str(path), "results": str(in_tmp / "r.jsonl"), "torch_threads": "2"}) == 2
    assert "'torch_threads' is a key of the sweep file, not of a run" in capsys.readouterr().err


def test_a_grid_key_naming_mapping_points_is_a_name_and_the_mappings_keys_are_checked(sweep_file, in_tmp, capsys):
    """A model_grid key whose points are mappings ('variant: [{intent_personal: False}, ...]') was
    refused as an unknown key, while a misspelt key inside a point must still be refused."""
    path = sweep_file(
        model_grid={"SASRecPlus": {"variant": [{"hidden_dropout_prob": 0.1}, {"attn_dropout_prob": 0.1}]}}
    )
    known_keys.check_sweep_keys(load_sweep(path), SWEEP_KEYS)
    path = sweep_file(model_grid={"SASRecPlus": {"variant": [{"hiden_dropout_prob": 0.1}]}})
    assert sweep_main({"sweep": str(path), "results": str(in_tmp / "r.jsonl")}) == 2
    assert (
        "unknown key 'hiden_dropout_prob' (did you mean 'hidden_dropout_prob'?) in model_grid.SASRecPlus"
        in capsys.readouterr().err
    )
