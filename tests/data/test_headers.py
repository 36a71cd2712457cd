"""A dataset folder of atomic files without a dataset yaml: columns from the headers, a yaml to start from."""

from __future__ import annotations

import random

import pytest
import yaml
from conftest import SMALL

from recbole_sae.config import Config
from recbole_sae.data import init_yaml
from recbole_sae.data.headers import infer, read_header
from recbole_sae.errors import ConfigError
from recbole_sae.quick_start import run_recbole_sae


def write_folder(root, name="mine", time_column="timestamp:float", item=True):
    """A small dataset folder (no yaml): .inter with the given time column, .item with title and tags."""
    rng = random.Random(1)
    folder = root / name
    folder.mkdir(parents=True)
    columns = ["user_id:token", "item_id:token"] + ([time_column] if time_column else [])
    with open(folder / f"{name}.inter", "w", encoding="utf-8") as f:
        f.write("\t".join(columns) + "\n")
        for user in range(1, 41):
            for t in range(8):
                f.write("\t".join([str(user), str(rng.randint(1, 25))] + ([str(t)] if time_column else [])) + "\n")
    if item:
        with open(folder / f"{name}.item", "w", encoding="utf-8") as f:
            f.write("item_id:token\ttitle:token\ttags:token_seq\tprice:float\n")
            for i in range(1, 26):
                f.write(f"{i}\tThing {i}\tred|big\t{i}.5\n")
    return folder


def test_columns_of_a_folder_without_yaml_come_from_its_headers(tmp_path, in_tmp):
    """Such a folder used to stop with RecBole's '[timestamp] is not exist in interaction'."""
    write_folder(tmp_path / "data")
    config = Config("SASRec", "mine", config_dict={"data_path": str(tmp_path / "data")})
    assert config["load_col"] == {
        "inter": ["user_id", "item_id", "timestamp"],
        "item": ["item_id", "title", "tags", "price"],
    }
    assert (config["USER_ID_FIELD"], config["ITEM_ID_FIELD"], config["TIME_FIELD"]) == (
        "user_id",
        "item_id",
        "timestamp",
    )
    assert config["RATING_FIELD"] is None
    result = run_recbole_sae("SASRec", "mine", config_dict={**SMALL, "data_path": str(tmp_path / "data")})
    assert 0.0 <= result["test"]["ndcg@10"] <= 1.0 and result["dataset"] == "mine"


def test_a_folder_without_a_time_column_says_what_is_missing(tmp_path, in_tmp):
    write_folder(tmp_path / "data", time_column="when_seen:float")
    data_path = str(tmp_path / "data")
    with pytest.raises(ConfigError) as caught:
        Config("SASRec", "mine", config_dict={"data_path": data_path})
    message = str(caught.value)
    assert "no timestamp column in mine.inter (columns: user_id:token, item_id:token, when_seen:float)" in message
    assert "leave-one-out needs each user's items in time order" in message
    assert "--TIME_FIELD=when_seen" in message
    assert f"python -m recbole_sae.data.init_yaml --dataset={tmp_path / 'data' / 'mine'}" in message
    # naming the column is enough
    config = Config("SASRec", "mine", config_dict={"data_path": data_path, "TIME_FIELD": "when_seen"})
    assert config["load_col"]["inter"] == ["user_id", "item_id", "when_seen"]
    with pytest.raises(ConfigError, match="TIME_FIELD=seen is not a column of mine.inter"):
        Config("SASRec", "mine", config_dict={"data_path": data_path, "TIME_FIELD": "seen"})


def test_settings_the_user_gives_are_kept(tiny_dataset, in_tmp):
    """A dataset with load_col in its yaml (the test suite's tiny dataset) is left as it is."""
    data_path, name, yaml_file = tiny_dataset
    config = Config("SASRec", name, [yaml_file], {"data_path": data_path})
    assert config["load_col"] == {"inter": ["user_id", "item_id", "timestamp"], "item": ["item_id", "title", "genre"]}


def test_a_header_cell_without_a_type_is_a_clear_error(tmp_path):
    path = tmp_path / "x.inter"
    path.write_text("user_id\titem_id:token\n1\t2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="the header cell 'user_id' is not 'name:type'"):
        read_header(path)


def test_init_yaml_writes_a_commented_yaml_that_runs(tmp_path, in_tmp, capsys, monkeypatch):
    folder = write_folder(tmp_path / "data")
    assert init_yaml.main([f"--dataset={folder}"]) == 0
    out = capsys.readouterr().out
    path = folder / "mine.yaml"
    assert out.startswith(f"wrote {path}") and f"--config_files={path}" in out
    text = path.read_text(encoding="utf-8")
    settings = yaml.safe_load(text)
    assert settings == {
        "USER_ID_FIELD": "user_id",
        "ITEM_ID_FIELD": "item_id",
        "RATING_FIELD": None,
        "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"], "item": ["item_id", "title", "tags", "price"]},
        "item_title_field": "title",
        "item_attributes": ["tags"],
        "item_text_fields": ["title", "tags"],
        "item_text_template": "{title}. Tags: {tags}.",
        "seq_separator": "|",
    }
    # a comment on every key, as in RecBole's yamls
    keys = [line for line in text.splitlines() if line and not line.startswith(("#", " "))]
    assert len(keys) == len(settings) and all(" # (" in line for line in keys)
    # the file is kept unless --force
    assert init_yaml.main([f"--dataset={folder}"]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    config = Config("SAERec", "mine", [str(path)], {"data_path": str(folder.parent)})
    assert config["item_text_template"] == "{title}. Tags: {tags}." and config["seq_separator"] == "|"


def test_init_yaml_marks_what_it_could_not_find(tmp_path, capsys):
    folder = write_folder(tmp_path, time_column=None, item=False)
    assert init_yaml.main([f"--dataset={folder}", f"--out={tmp_path / 'm.yaml'}"]) == 0
    out = capsys.readouterr().out
    assert "TIME_FIELD: NOT FOUND: no timestamp column in mine.inter" in out
    text = (tmp_path / "m.yaml").read_text(encoding="utf-8")
    line = next(line for line in text.splitlines() if line.startswith("TIME_FIELD:"))
    assert line.startswith("TIME_FIELD: ~") and "NOT FOUND" in line
    assert "item_text_fields: ~" in text
    found = infer(folder, "mine")
    assert set(found.missing) == {"TIME_FIELD"}
    # the yaml as written (TIME_FIELD: ~) is an error that says so, not RecBole's KeyError
    with pytest.raises(ConfigError, match="TIME_FIELD is not set"):
        Config("SASRec", "mine", [str(tmp_path / "m.yaml")], {"data_path": str(tmp_path)})


def test_init_yaml_without_the_inter_file_names_what_is_there(tmp_path, capsys):
    folder = write_folder(tmp_path, name="other")
    target = tmp_path / "renamed"
    folder.rename(target)
    assert init_yaml.main([f"--dataset={target}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: no renamed.inter in {target} (it holds other.inter: pass --name=NAME)")
