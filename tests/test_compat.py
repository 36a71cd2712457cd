"""Each compatibility fix: the failure without it, the repair with it."""

import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import SMALL

from recbole_sae import compat


def test_numpy_aliases_restore_names_removed_in_numpy_2(monkeypatch):
    from recbole.config import Config as RecBoleConfig

    # numpy 2 has no np.float_ / np.complex_ / np.unicode_: RecBole's Config breaks on them.
    for name in ["float_", "complex_", "unicode_"]:
        if name in vars(np):
            monkeypatch.delattr(np, name)
    with pytest.raises(AttributeError):
        RecBoleConfig.compatibility_settings(None)
    added = compat.numpy_aliases()
    assert {"float_", "complex_", "unicode_"} <= set(added)
    RecBoleConfig.compatibility_settings(None)  # no error now
    assert np.float_ is np.float64 and np.unicode_ is np.str_


def test_numpy_aliases_serve_recbole_metrics():
    compat.numpy_aliases()
    from recbole.evaluator.metrics import NDCG

    pos_index = np.array([[True, False, False], [False, False, True]])
    pos_len = np.array([1, 1])
    ndcg = NDCG.__new__(NDCG)
    result = ndcg.metric_info(pos_index, pos_len)
    assert result[0].tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert result[1].tolist() == pytest.approx([0.0, 0.0, 0.5])


def _dataset_with_missing_values(tmp_path, with_item_file):
    from recbole_sae.config import Config

    folder = tmp_path / "holes"
    folder.mkdir(exist_ok=True)
    (folder / "holes.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        + "".join(f"{u}\t{i}\t{'' if (u + i) % 3 == 0 else 4.0}\t{i}\n" for u in range(1, 6) for i in range(1, 6))
    )
    load_col = {"inter": ["user_id", "item_id", "rating", "timestamp"]}
    if with_item_file:  # item 3 has no genres
        (folder / "holes.item").write_text(
            "item_id:token\tgenre:token_seq\n" + "".join(f"{i}\t{'' if i == 3 else 'A B'}\n" for i in range(1, 6))
        )
        load_col["item"] = ["item_id", "genre"]
    return Config(
        "SASRec", "holes", config_dict={"data_path": str(tmp_path), "load_col": load_col, "normalize_all": False}
    )


def _load_under_copy_on_write(config):
    from recbole.data.dataset import SequentialDataset

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pd.option_context("mode.copy_on_write", True):  # pandas 3's default
            return SequentialDataset(config)


def test_nan_imputation_under_copy_on_write(tmp_path, in_tmp, monkeypatch):
    from recbole.data.dataset import dataset as ds

    compat.apply()
    patched_fill_nan, patched_pandas = ds.Dataset._fill_nan, ds.pd
    assert getattr(patched_fill_nan, "_recbole_sae", False), "compat.apply() installs the fixed imputation"
    recbole_pandas, recbole_fill_nan = patched_fill_nan.recbole_originals

    # RecBole's own imputation: under copy-on-write the missing ratings silently stay NaN ...
    config = _dataset_with_missing_values(tmp_path, with_item_file=False)
    monkeypatch.setattr(ds.Dataset, "_fill_nan", recbole_fill_nan)
    monkeypatch.setattr(ds, "pd", recbole_pandas)
    assert np.isnan(np.asarray(_load_under_copy_on_write(config).inter_feat["rating"])).any()
    # ... and a missing sequence field breaks the load.
    config = _dataset_with_missing_values(tmp_path, with_item_file=True)
    with pytest.raises(AttributeError, match="split"):
        _load_under_copy_on_write(config)

    # The fix: every missing rating becomes the mean of the others (4.0); item 3 gets no genres.
    monkeypatch.setattr(ds.Dataset, "_fill_nan", patched_fill_nan)
    monkeypatch.setattr(ds, "pd", patched_pandas)
    data = _load_under_copy_on_write(config)
    ratings = np.asarray(data.inter_feat["rating"])
    assert not np.isnan(ratings).any() and ratings.tolist() == pytest.approx([4.0] * len(ratings))
    genres = data.item_feat["genre"]
    item3 = data.token2id("item_id", "3")
    assert len(genres[item3]) == 0 and len(genres[data.token2id("item_id", "1")]) == 2


def test_checkpoints_load_weights_only_and_rebuild_their_config(tiny_dataset, in_tmp):
    import recbole.trainer.trainer as trainer_module

    from recbole_sae.quick_start import load_data_and_model, run_recbole_sae

    data_path, name, yaml_file = tiny_dataset
    result = run_recbole_sae("SASRec", name, [yaml_file], {"data_path": data_path, **SMALL})
    checkpoint = f"{result['run_dir']}/model.pth"
    # RecBole's trainer pickles its Config; the project's checkpoint holds it as a plain dict, so the
    # file loads with plain torch.load(weights_only=True) and can run no code.
    state = torch.load(checkpoint, weights_only=True)
    assert isinstance(state["config"], dict) and state["config"]["model"] == "SASRec"
    assert state["config"]["MODEL_TYPE"] == "SEQUENTIAL" and state["config"]["hidden_size"] == 16
    assert compat.load_checkpoint(checkpoint)["config"]["eval_args"] == state["config"]["eval_args"]
    assert isinstance(trainer_module.torch, compat._TorchForTrainer)
    assert set(trainer_module.torch.load(checkpoint)) >= {"config", "state_dict"}
    config, model, _, _, _, test_data = load_data_and_model(result["run_dir"], expected_model="SASRec")
    assert (
        type(config).__name__ == "Config" and config["hidden_size"] == 16 and config["MODEL_TYPE"].name == "SEQUENTIAL"
    )
    assert str(config["device"]) == "cpu" and config["eval_type"].name == "RANKING"
    assert torch.equal(model.item_embedding.weight, state["state_dict"]["item_embedding.weight"])


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_anomaly_mode_is_switched_off():
    # Importing RecBole's sequential models turns anomaly detection on for the whole process ...
    assert _run("import torch, recbole.model.sequential_recommender; print(torch.is_anomaly_enabled())") == "True"
    # ... the project's pipeline switches it off again.
    assert _run("import torch, recbole_sae.quick_start; print(torch.is_anomaly_enabled())") == "False"


def test_ray_is_not_imported():
    assert _run("import sys, recbole_sae.quick_start, recbole_sae.cli; print('ray' in sys.modules)") == "False"


def test_bert4rec_mask_token_without_a_loop_over_the_batch(tiny_build):
    from recbole.model.sequential_recommender.bert4rec import BERT4Rec

    compat.apply()
    # RecBole's version writes one user at a time (a device sync per user on a GPU); the fix is in place ...
    assert BERT4Rec.reconstruct_test_data is compat.reconstruct_test_data
    original = compat.reconstruct_test_data.recbole_original
    assert original is not compat.reconstruct_test_data

    # ... and gives RecBole's output, full windows (len == max_len) and one-item histories included
    gen = torch.Generator().manual_seed(0)
    lengths = torch.tensor([1, 7, 8, 3, 8, 2])
    seq = torch.randint(1, 50, (6, 8), generator=gen) * (torch.arange(8) < lengths[:, None])
    model = BERT4Rec.__new__(BERT4Rec)
    model.mask_token = 50
    mine, theirs = compat.reconstruct_test_data(model, seq.clone(), lengths), original(model, seq.clone(), lengths)
    assert torch.equal(mine, theirs)
    assert mine[0].tolist() == [50] + [0] * 7  # the one item is dropped with the first column, as in RecBole
    assert mine[2].tolist() == seq[2, 1:].tolist() + [50]
    assert mine[1, 6] == 50 and mine[1, :6].tolist() == seq[1, 1:7].tolist()

    # an untrained BERT4Rec on the tiny dataset scores the same either way
    config, dataset, train_data, valid_data, test_data = tiny_build("BERT4Rec")
    model = BERT4Rec(config, train_data._dataset)
    batch = next(iter(test_data))[0]
    model.eval()
    with torch.no_grad():
        fixed = model.full_sort_predict(batch)
        BERT4Rec.reconstruct_test_data = original
        try:
            stock = model.full_sort_predict(batch)
        finally:
            BERT4Rec.reconstruct_test_data = compat.reconstruct_test_data
    assert fixed.shape == (batch.length, dataset.item_num) and torch.equal(fixed, stock)
