import sys

import pytest
import yaml
from recbole.model.sequential_recommender.sasrec import SASRec

from recbole_sae import config as config_module
from recbole_sae import registry
from recbole_sae.cli import parse_args
from recbole_sae.config import Config, project_layers
from recbole_sae.errors import ConfigError


class LayeredModel(SASRec):
    """A SASRec-derived plugin model for the layering test."""

    parent_model = "SASRec"


@pytest.fixture
def layered(tmp_path, monkeypatch):
    """A plugin model 'LayeredModel' with its own properties folder; each layer sets its own key."""
    props = tmp_path / "props"
    (props / "model").mkdir(parents=True)
    (props / "family").mkdir()
    (props / "dataset").mkdir()
    overall = yaml.safe_load(open(config_module.PROPERTIES / "overall.yaml"))
    overall.update({"layer_overall": "overall", "n_heads": 4, "inner_size": 99})
    yaml.safe_dump(overall, open(props / "overall.yaml", "w"))
    yaml.safe_dump(
        {"layer_model": "model", "inner_size": 77, "hidden_dropout_prob": 0.1, "attn_dropout_prob": 0.1},
        open(props / "model" / "LayeredModel.yaml", "w"),
    )
    yaml.safe_dump(
        {"layer_family": "family", "stopping_step": 5, "inner_size": 88}, open(props / "family" / "layered.yaml", "w")
    )
    dataset_yaml = yaml.safe_load(open(config_module.PROPERTIES / "dataset" / "ml-100k.yaml"))
    dataset_yaml.update({"layer_dataset": "dataset", "hidden_dropout_prob": 0.2})
    yaml.safe_dump(dataset_yaml, open(props / "dataset" / "ml-100k.yaml", "w"))
    monkeypatch.setattr(config_module, "PROPERTIES", props)
    monkeypatch.setitem(registry.PLUGIN_MODELS, "LayeredModel", f"{__name__}:LayeredModel")
    monkeypatch.setitem(registry.PLUGIN_FAMILIES, "LayeredModel", "layered")
    file_a, file_b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    # layer_file is read by nothing: declared as a free-form key (known_keys)
    yaml.safe_dump(
        {
            "layer_file": "a",
            "learning_rate": 0.5,
            "attn_dropout_prob": 0.3,
            "eval_batch_size": 11,
            "extra_keys": ["layer_file"],
        },
        open(file_a, "w"),
    )
    yaml.safe_dump({"layer_file": "b", "learning_rate": 0.4, "eval_batch_size": 12}, open(file_b, "w"))
    return [str(file_a), str(file_b)]


def test_layering_order(layered, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # works from any working directory
    config = Config(
        "LayeredModel",
        "ml-100k",
        layered,
        {"learning_rate": 0.3, "eval_batch_size": 14},
        parse_args(["--eval_batch_size=13"]),
    )
    # 1. RecBole's defaults (overall.yaml) where nobody overrides them
    assert config["learner"] == "adam" and config["clip_grad_norm"] is None
    # 2. parent model yaml (RecBole's SASRec.yaml): hidden_size 64, initializer_range 0.02
    assert config["hidden_size"] == 64 and config["initializer_range"] == 0.02
    # 3. the project's overall.yaml over the parent (n_heads 2 -> 4) and over RecBole's defaults
    assert config["n_heads"] == 4 and config["train_batch_size"] == 256
    assert config["valid_metric"] == "NDCG@10" and config["eval_args"]["split"] == {"LS": "valid_and_test"}
    # 4. the model's family yaml over overall.yaml (stopping_step 10 -> 5)
    assert config["stopping_step"] == 5
    # 5. model yaml over the family's and overall.yaml (inner_size 99 -> 88 -> 77)
    assert config["inner_size"] == 77
    # 6. dataset yaml over the model yaml (hidden_dropout_prob 0.1 -> 0.2)
    assert config["hidden_dropout_prob"] == 0.2
    # 7. config files over the dataset yaml, later file over earlier (attn 0.3 from a, layer_file b)
    assert config["attn_dropout_prob"] == 0.3 and config["layer_file"] == "b"
    # 8. dict over files; 9. command line over dict
    assert config["learning_rate"] == 0.3
    assert config["eval_batch_size"] == 13
    for key, value in [
        ("layer_overall", "overall"),
        ("layer_family", "family"),
        ("layer_model", "model"),
        ("layer_dataset", "dataset"),
    ]:
        assert config[key] == value


def test_project_layers_for_a_recbole_model_skip_the_parent():
    layers = [p.name for p in project_layers("SASRec", SASRec, "ml-100k")]
    assert layers == ["overall.yaml", "ml-100k.yaml"]


def test_protocol_of_the_project(in_tmp):
    config = Config("SASRec", "ml-100k")
    assert config["eval_args"]["order"] == "TO" and config["eval_args"]["mode"] == {"valid": "full", "test": "full"}
    assert config["topk"] == [5, 10, 20] and config["MAX_ITEM_LIST_LENGTH"] == 50
    assert config["loss_type"] == "CE" and config["train_neg_sample_args"]["distribution"] == "none"
    assert set(config["metrics"]) == {"Recall", "NDCG", "MRR", "Hit"}


def test_cli_only_keys_do_not_reach_the_config(in_tmp):
    config = Config("SASRec", "ml-100k", cmd_args=parse_args(["--config_files=x.yaml", "--epochs=3"]))
    assert config["epochs"] == 3 and config["config_files"] is None


def test_the_config_never_reads_the_process_arguments(in_tmp, monkeypatch):
    """RecBole's Config reads --key=value from the process's arguments into every Config built anywhere
    (a test, a notebook, a sweep's run); the project's takes the command line only as cmd_args."""
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "prog",
            "--epochs=99",
            "--learning_rate=0.5",
            "--no_such_key=1",
            "junk",
            "--model=GRU4Rec",
            "--steer=latent=1:+2",
        ],
    )
    config = Config("SASRec", "ml-100k", config_dict={"epochs": 2, "train_batch_size": 64})
    assert config["epochs"] == 2 and config["train_batch_size"] == 64
    assert config["learning_rate"] == 0.001 and config["model"] == "SASRec" and config["steer"] is None
    assert config.cmd_config_dict == {} and config.cmd_args == {} and config.command is None
    # the command line's layer is the dict handed down, over config_dict
    config = Config("SASRec", "ml-100k", config_dict={"epochs": 2}, cmd_args={"epochs": "3", "stopping_step": "4"})
    assert config["epochs"] == 3 and config["stopping_step"] == 4


def test_missing_config_file_is_a_clear_error(in_tmp):
    from recbole_sae.config import split_config_files

    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        split_config_files("nope.yaml")


def test_resolved_config_dumps_to_plain_yaml(in_tmp):
    config = Config("SASRec", "ml-100k", config_dict={"epochs": 2})
    plain = yaml.safe_load(config.to_yaml())
    assert plain["epochs"] == 2 and plain["model"] == "SASRec" and plain["MODEL_TYPE"] == "SEQUENTIAL"


def test_command_line_values_may_hold_equal_signs(in_tmp):
    # RecBole's own parser drops such arguments with a warning
    config = Config(
        "SteerableSASRec",
        "ml-100k",  # the model that reads steer
        cmd_args=parse_args(["--steer=latent=12:+6", "--epochs=4"]),
    )
    assert config["steer"] == "latent=12:+6" and config["epochs"] == 4


def test_conflicting_command_line_values_are_an_error(capsys):
    """The Config read the process's arguments and refused a key given twice with different values (as
    RecBole does); since the CLI alone parses the command line, its parser keeps that rule."""
    from recbole_sae.cli import UsageError, main

    with pytest.raises(UsageError, match="--epochs is given twice with different values"):
        parse_args(["--epochs=4", "--epochs=5"])
    assert parse_args(["--epochs=4", "--epochs=4"]) == {"epochs": "4"}
    assert main(["--model=SASRec", "--epochs=4", "--epochs=5"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: --epochs is given twice with different values ('4', '5'): keep one"
    ]


@pytest.mark.parametrize("text", ["NDCG,Hit", "[NDCG, Hit]", "NDCG;Hit"])
def test_metrics_as_text_are_a_list_of_names(in_tmp, text):
    """``--metrics=NDCG,Hit`` used to reach RecBole as one metric named 'NDCG,Hit' (a traceback)."""
    config = Config(model="SASRec", dataset="ml-100k", config_dict={"metrics": text, "valid_metric": "hit@10"})
    assert config["metrics"] == ["NDCG", "Hit"]
    assert config["valid_metric"] == "hit@10"
