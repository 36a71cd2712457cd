import pytest

from recbole_sae import registry
from recbole_sae.cli import main
from recbole_sae.errors import UnknownModelError


def test_recbole_model_by_name():
    from recbole.model.sequential_recommender.sasrec import SASRec

    assert registry.get_model("SASRec") is SASRec


def test_plugin_model_resolves_before_recbole(monkeypatch):
    # A plugin model that shadows a RecBole name wins.
    monkeypatch.setitem(registry.PLUGIN_MODELS, "GRU4Rec", "recbole_sae.errors:ConfigError")
    from recbole_sae.errors import ConfigError

    assert registry.get_model("GRU4Rec") is ConfigError
    assert "GRU4Rec" in registry.plugin_model_names()


def test_plugin_trainer_first_then_recbole(monkeypatch):
    from recbole.trainer import Trainer
    from recbole.utils import ModelType

    assert registry.get_trainer(ModelType.SEQUENTIAL, "SASRec") is Trainer
    monkeypatch.setitem(registry.PLUGIN_MODELS, "Planted", "recbole_sae.errors:ConfigError")
    monkeypatch.setitem(registry.PLUGIN_TRAINERS, "Planted", "recbole_sae.errors:RecboleSAEError")
    from recbole_sae.errors import RecboleSAEError

    assert registry.get_trainer(ModelType.SEQUENTIAL, "Planted") is RecboleSAEError


def test_unknown_model_lists_plugin_and_recbole_models():
    with pytest.raises(UnknownModelError) as err:
        registry.get_model("NoSuchModel")
    message = str(err.value)
    assert "unknown model 'NoSuchModel'" in message
    assert "sasrec" in message and "bert4rec" in message
    for name in registry.plugin_model_names():
        assert name in message


def test_wrong_case_suggests_the_class_name():
    with pytest.raises(UnknownModelError, match="did you mean 'SASRec'"):
        registry.get_model("sasrec")


def test_cli_unknown_model_exits_2_without_traceback(capsys):
    assert main(["--model=NoSuchModel"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown model 'NoSuchModel'")
    assert "Traceback" not in err


def test_cli_rejects_arguments_that_are_not_key_value(capsys):
    assert main(["SASRec"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unrecognised argument 'SASRec' (expected --key=value") and err.count("\n") == 1
