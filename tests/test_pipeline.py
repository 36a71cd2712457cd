"""The single-run pipeline: CLI, run folder, reproducibility, reload."""

import json
import os

import pytest
from conftest import SMALL, shared_dataset_available

from recbole_sae.cli import main
from recbole_sae.errors import CheckpointMismatchError, TrainingDivergedError
from recbole_sae.quick_start import load_data_and_model, run_recbole_sae


@pytest.fixture
def tiny_run(tiny_dataset, in_tmp):
    data_path, name, yaml_file = tiny_dataset
    return run_recbole_sae("SASRec", name, [yaml_file], {"data_path": data_path, **SMALL, "epochs": 2})


def test_run_folder_and_result(tiny_run):
    run_dir = tiny_run["run_dir"]
    assert sorted(os.listdir(run_dir)) == [
        ".recbole-sae-run",
        "config.yaml",
        "log_tensorboard",
        "model.pth",
        "result.json",
        "run.log",
    ]
    assert json.load(open(os.path.join(run_dir, "result.json"))) == tiny_run
    assert tiny_run["model"] == "SASRec" and tiny_run["dataset"] == "tiny"
    assert tiny_run["epochs_run"] == 2 and tiny_run["best_epoch"] in (0, 1)
    for split in ("best_valid", "test"):
        assert set(tiny_run[split]) == {f"{m}@{k}" for m in ("recall", "ndcg", "mrr", "hit") for k in (5, 10, 20)}
        assert all(0.0 <= v <= 1.0 for v in tiny_run[split].values())
    assert "epoch 1 training" in open(os.path.join(run_dir, "run.log")).read()


def test_result_holds_the_learning_curve(tiny_run):
    curve = tiny_run["curve"]
    assert curve["metric"] == "ndcg@10" and curve["protocol"] == tiny_run["protocol"] == "seen_removed"
    assert curve["valid_epoch"] == [0, 1] and len(curve["train_loss"]) == len(curve["train_seconds"]) == 2
    # the best validation is the tested one, at best_epoch
    best = curve["valid_epoch"][len(curve["valid"]) - 1 - curve["valid"][::-1].index(max(curve["valid"]))]
    assert best == tiny_run["best_epoch"]
    assert round(max(curve["valid"]), 4) == tiny_run["best_valid"]["ndcg@10"]
    assert all(loss > 0 for loss in curve["train_loss"]) and all(s > 0 for s in curve["train_seconds"])
    log = open(os.path.join(tiny_run["run_dir"], "run.log")).read()
    assert f"train loss: {curve['train_loss'][0]:.4f}" in log  # the loss RecBole logged for epoch 0


def test_the_result_line_leaves_the_curve_to_result_json(tiny_run):
    from recbole_sae import console

    compact = console.compact_result(tiny_run, "ndcg@10")
    assert "curve" not in compact and compact["epochs_run"] == 2


def test_same_seed_same_metrics(tiny_dataset, tiny_run):
    data_path, name, yaml_file = tiny_dataset
    again = run_recbole_sae("SASRec", name, [yaml_file], {"data_path": data_path, **SMALL, "epochs": 2})
    assert again["test"] == tiny_run["test"] and again["best_valid"] == tiny_run["best_valid"]


def test_reload_gives_the_same_test_metrics(tiny_run):
    from recbole.trainer import Trainer

    config, model, _, _, _, test_data = load_data_and_model(tiny_run["run_dir"])
    assert type(model).__name__ == "SASRec"
    result = Trainer(config, model).evaluate(test_data, load_best_model=False)
    # RecBole's own Trainer ranks with seen items kept; the run's headline has them removed
    assert {k: round(float(v), 6) for k, v in result.items()} == tiny_run["seen_kept"]["test"]


def test_reload_refuses_a_checkpoint_of_another_model(tiny_run, tmp_path):
    with pytest.raises(CheckpointMismatchError, match="holds a SASRec model, not SASRecSAE"):
        load_data_and_model(tiny_run["run_dir"], expected_model="SASRecSAE")
    junk = tmp_path / "junk.pth"
    import torch

    torch.save({"weights": torch.zeros(2)}, junk)
    with pytest.raises(CheckpointMismatchError, match="not a RecBole/recbole-sae checkpoint"):
        load_data_and_model(str(junk))


def test_cli_prints_one_result_line(tiny_dataset, in_tmp, capsys):
    data_path, name, yaml_file = tiny_dataset
    args = ["--model=GRU4Rec", f"--dataset={name}", f"--config_files={yaml_file}", f"--data_path={data_path}"]
    # GRU4Rec's own keys only: SASRec's n_heads, inner_size, n_layers are errors on its command line
    args += [f"--{k}={v}" for k, v in SMALL.items() if k not in ("n_heads", "inner_size", "n_layers")] + [
        "--num_layers=1"
    ]
    assert main(args) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1
    result = json.loads(lines[0][len("RESULT ") :])
    assert result["model"] == "GRU4Rec" and os.path.isfile(os.path.join(result["run_dir"], "model.pth"))
    assert set(result) >= {"model", "dataset", "best_valid", "test", "run_dir", "seconds"}


@pytest.mark.skipif(not shared_dataset_available(), reason="amazon-beauty not found (set RECBOLE_SAE_DATA)")
def test_amazon_beauty_end_to_end(in_tmp):
    from recbole_sae.config import Config

    config = Config("SASRec", "amazon-beauty")
    assert config["seq_separator"] == "|"
    result = run_recbole_sae("SASRec", "amazon-beauty", config_dict={**SMALL, "train_batch_size": 1024})
    assert result["dataset"] == "amazon-beauty" and 0.0 < result["test"]["hit@20"] < 1.0


@pytest.mark.parametrize(
    "model, overrides, says",
    [
        (
            "SASRec",
            {"learning_rate": 1e30},
            "the training loss is NaN (RecBole's trainer). Lower learning_rate (now 1e+30)",
        ),
        ("SASRecPlus", {"learning_rate": 1e30}, "training loss is nan at epoch 0: lower learning_rate"),
        ("SASRecSAE", {"sae_lr": 1e30}, "SAE training loss is"),
    ],
)
def test_nan_in_training_is_a_clear_error(tiny_dataset, in_tmp, capsys, model, overrides, says):
    """A loss that turns NaN used to end the CLI in a traceback (RecBole's bare ValueError, the plugin's
    FloatingPointError); now one line that says which run stopped and what to change, exit code 2."""
    data_path, name, yaml_file = tiny_dataset
    settings = {**SMALL, "epochs": 2, **overrides}
    args = [f"--model={model}", f"--dataset={name}", f"--config_files={yaml_file}", f"--data_path={data_path}"]
    assert main(args + [f"--{k}={v}" for k, v in settings.items()]) == 2
    err = capsys.readouterr().err
    # the run's console (header, epochs) comes first, on stderr; the error is its one last line
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert errors == [err.splitlines()[-1]] and "Traceback" not in err
    assert errors[0].startswith(f"error: {model} on {name} stopped: ") and says in errors[0] and "(log: " in errors[0]
    with pytest.raises(TrainingDivergedError) as caught:  # the Python API raises it too
        run_recbole_sae(model, name, [yaml_file], {"data_path": data_path, **settings})
    assert isinstance(caught.value, FloatingPointError)


@pytest.mark.parametrize("bigger", [True, False])
def test_best_epoch_is_the_epoch_recbole_kept_on_ties(bigger):
    """RecBole keeps the last of tied validation scores (its scores are rounded to 4 decimals, so ties
    happen): the reported best epoch is the checkpoint's, the one the test metrics come from."""
    from recbole.utils import early_stopping

    from recbole_sae.quick_start import _best_epoch

    scores = [0.0100, 0.0708, 0.0703, 0.0708, 0.0701, 0.0708, 0.0690]
    if not bigger:
        scores = [-s for s in scores]
    best, cur, kept = -float("inf") if bigger else float("inf"), 0, None
    for i, score in enumerate(scores):
        best, cur, _, update = early_stopping(score, best, cur, max_step=10, bigger=bigger)
        kept = i if update else kept
    assert kept == 5
    assert _best_epoch(scores, eval_step=5, bigger=bigger) == (kept + 1) * 5 - 1 == 29
    assert _best_epoch(scores, eval_step=1, bigger=bigger) == 5
    assert _best_epoch([], eval_step=1) is None
