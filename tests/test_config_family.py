"""The full-sequence training keys the SASRec-family models share: their resolved values, which models
get them, and where the help and the key checks find them."""

from __future__ import annotations

import pytest

from recbole_sae.cli import main, parse_args
from recbole_sae.config import Config
from recbole_sae.errors import ConfigError

FAMILY = ("SASRecPlus", "SASRecSAE", "SAERec")
# the shared keys and the values every family model resolves them to (as each model's yaml had them)
SHARED = {
    "train_mode": "full_sequence",
    "length_bucketing": True,
    "full_sequence_stride": None,
    "full_sequence_batch": "targets",
    "sdpa_attention": True,
    "positions": "from_start",
    "loss_type": "CE",
}


@pytest.mark.parametrize("model", FAMILY)
def test_the_family_models_resolve_the_shared_keys_as_before(model):
    config = Config(model, "ml-100k")
    assert {key: config.final_config_dict[key] for key in SHARED} == SHARED


@pytest.mark.parametrize("model", FAMILY)
def test_a_model_yaml_or_the_command_line_still_overrides_a_shared_key(model):
    config = Config(model, "ml-100k", cmd_args=parse_args(["--train_mode=prefix", "--full_sequence_stride=5"]))
    assert config["train_mode"] == "prefix" and config["full_sequence_stride"] == 5
    assert config["full_sequence_batch"] == "targets"


@pytest.mark.parametrize("model", ["SASRec", "GRU4Rec", "SteerableSASRec"])
def test_models_outside_the_family_do_not_get_the_shared_keys(model):
    """SteerableSASRec takes the training keys of the SASRecSAE run it loads, not defaults."""
    config = Config(model, "ml-100k")
    assert [key for key in SHARED if key in config.final_config_dict] == ["loss_type"]  # overall.yaml's


@pytest.mark.parametrize("model", FAMILY)
def test_help_lists_the_shared_keys_with_their_defaults_and_comments(model, capsys):
    assert main(["--help", f"--model={model}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for key, default in [
        ("train_mode", "full_sequence"),
        ("length_bucketing", "True"),
        ("full_sequence_stride", "~"),
        ("full_sequence_batch", "targets"),
        ("sdpa_attention", "True"),
        ("positions", "from_start"),
        ("loss_type", "CE"),
    ]:
        shown = [line for line in lines if line.startswith(f"  --{key}={default} ")]
        assert len(shown) == 1, key
    stride = next(line for line in lines if line.startswith("  --full_sequence_stride="))
    assert "(int) Rows between two windows of a user (default MAX_ITEM_LIST_LENGTH // 4)" in stride


def test_a_shared_key_on_a_models_command_line_outside_the_family_names_the_family():
    with pytest.raises(ConfigError, match="key 'train_mode' is read by SAERec, SASRecPlus, SASRecSAE, not by SASRec"):
        Config("SASRec", "ml-100k", cmd_args=parse_args(["--train_mode=prefix"]))


def test_a_config_dict_with_the_shared_keys_is_accepted_for_any_model():
    """A sweep gives one config to SASRecPlus and to GRU4Rec alike."""
    config = Config("GRU4Rec", "ml-100k", config_dict={"train_mode": "prefix", "full_sequence_stride": 4})
    assert config["train_mode"] == "prefix"


def test_sweep_run_keys_of_recbole_models_leave_the_shared_keys_out():
    """A sweep's --train_mode=prefix does not make its RecBole baselines new runs; SASRecPlus's it does."""
    from recbole_sae.benchmark import spec as sweep_spec

    assert set(SHARED) - {"loss_type"} <= sweep_spec.plugin_only_settings()  # loss_type is RecBole's own key
    assert "loss_type" not in sweep_spec.plugin_only_settings()
    base = {"hidden_size": 16}
    shared = {key: value for key, value in SHARED.items() if key != "loss_type"}
    assert sweep_spec.run_key("SASRec", "tiny", 1, {**base, **shared}) == sweep_spec.run_key("SASRec", "tiny", 1, base)
    assert sweep_spec.run_key("SASRecPlus", "tiny", 1, {**base, "train_mode": "prefix"}) != sweep_spec.run_key(
        "SASRecPlus", "tiny", 1, base
    )
