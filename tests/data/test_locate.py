import pytest

from recbole_sae.data.locate import ENV_VAR, locate_dataset
from recbole_sae.errors import DatasetNotFoundError


def _make(folder, name="toy"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n1\t1\t0\n")
    return folder


def test_order_data_path_then_env_then_cwd(tmp_path, monkeypatch):
    explicit, env, cwd = tmp_path / "explicit", tmp_path / "env", tmp_path / "cwd"
    for base in (explicit, env, cwd / "dataset"):
        _make(base / "toy")
    monkeypatch.chdir(cwd)
    monkeypatch.setenv(ENV_VAR, str(env))
    assert locate_dataset("toy", str(explicit)) == str((explicit / "toy").resolve())
    assert locate_dataset("toy") == str((env / "toy").resolve())
    monkeypatch.delenv(ENV_VAR)
    assert locate_dataset("toy") == str((cwd / "dataset" / "toy").resolve())


def test_data_path_may_be_the_dataset_folder_itself(tmp_path):
    folder = _make(tmp_path / "anywhere")
    assert locate_dataset("toy", str(folder)) == str(folder.resolve())


def test_missing_dataset_names_every_place_and_how_to_build_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env"))
    with pytest.raises(DatasetNotFoundError) as err:
        locate_dataset("amazon-toys", str(tmp_path / "explicit"))
    message = str(err.value)
    for place in ["explicit/amazon-toys", "env/amazon-toys", "dataset/amazon-toys"]:
        assert place in message
    assert "python -m recbole_sae.data.amazon" in message and ENV_VAR in message


def test_a_mistyped_name_is_told_the_datasets_close_to_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env"))
    for name in ("amazon-beauty", "amazon-sports", "yelp"):
        _make(tmp_path / "env" / name, name)
    with pytest.raises(DatasetNotFoundError) as err:
        locate_dataset("amazon-beuty")
    assert "\nDid you mean 'amazon-beauty'?\n" in str(err.value)
    with pytest.raises(DatasetNotFoundError) as err:
        locate_dataset("ml-100")  # RecBole's bundled dataset counts too
    assert "Did you mean 'ml-100k'?" in str(err.value)
    with pytest.raises(DatasetNotFoundError) as err:
        locate_dataset("steam")  # nothing close: no guess
    assert "Did you mean" not in str(err.value)


def test_config_points_recbole_at_the_located_folder(tmp_path, monkeypatch):
    from recbole_sae.config import Config

    folder = _make(tmp_path / "env" / "toy")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env"))
    config = Config("SASRec", "toy")
    assert config["data_path"] == str(folder.resolve())


def test_config_with_unknown_dataset_fails_clearly(tmp_path, monkeypatch):
    from recbole_sae.config import Config

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(DatasetNotFoundError, match="dataset 'nowhere' not found"):
        Config("SASRec", "nowhere")
