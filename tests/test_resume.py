"""A run killed mid-training continues from its run folder and ends where an unbroken run ends."""

import json
import os
import re

import pytest
from conftest import INTENT_SMALL, SMALL

from recbole_sae import resume
from recbole_sae.benchmark import process, runner
from recbole_sae.benchmark import results as results_file
from recbole_sae.benchmark import spec as sweep_spec
from recbole_sae.cli import main
from recbole_sae.errors import ConfigError
from recbole_sae.quick_start import run_recbole_sae


class Killed(BaseException):
    """Stands for the process being killed: nothing in the pipeline catches it."""


def _kill_after(monkeypatch, epoch: int):
    """The run dies right after the resume state of validation epoch ``epoch`` is written."""
    save = resume.save

    def save_then_die(run_dir, trainer, train_data, epoch_idx, *args, **kwargs):
        save(run_dir, trainer, train_data, epoch_idx, *args, **kwargs)
        if epoch_idx == epoch:
            raise Killed()

    monkeypatch.setattr(resume, "save", save_then_die)


def _losses(run_dir) -> dict:
    text = re.sub(r"\x1b\[[0-9;]*m", "", open(os.path.join(run_dir, "run.log"), encoding="utf-8").read())
    return {
        int(e): loss for e, loss in re.findall(r"epoch (\d+) training \[time: [\d.]+s, train loss: ([\d.]+)\]", text)
    }


@pytest.mark.parametrize("model", ["SASRec", "SASRecPlus", "SAERec"])
def test_a_killed_run_resumes_to_the_result_of_an_unbroken_run(tiny_dataset, in_tmp, monkeypatch, model):
    data_path, name, yaml_file = tiny_dataset
    settings = {"data_path": data_path, **SMALL, "epochs": 5, "stopping_step": 10, "hidden_dropout_prob": 0.3}
    if model == "SAERec":
        settings.update(INTENT_SMALL, intent_cache_dir=str(in_tmp / "cache"))
    unbroken = run_recbole_sae(model, name, [yaml_file], settings)
    assert not resume.state_file(unbroken["run_dir"]).exists()  # deleted when a run finishes

    with monkeypatch.context() as patch:
        _kill_after(patch, 1)
        with pytest.raises(Killed):
            run_recbole_sae(model, name, [yaml_file], {**settings, "run_name": "r"})
    folder = in_tmp / "runs" / "r"
    assert resume.state_file(folder).is_file() and not (folder / "result.json").exists()
    assert sorted(_losses(folder)) == [0, 1]

    resumed = run_recbole_sae(model, name, [yaml_file], {**settings, "run_name": "r"})
    assert resumed["run_dir"] == str(folder) and resumed["resumed_at_epoch"] == 2
    for key in ("best_valid", "test", "best_epoch", "epochs_run"):
        assert resumed[key] == unbroken[key], key
    # the learning curve holds the epochs before the stop too (timings aside, they differ run to run)
    for key in ("metric", "protocol", "valid_epoch", "valid", "train_loss"):
        assert resumed["curve"][key] == unbroken["curve"][key], key
    assert len(resumed["curve"]["train_seconds"]) == 5
    # the epochs trained after the restart saw the same weights, batches and dropout masks
    assert _losses(folder) == _losses(unbroken["run_dir"]) and sorted(_losses(folder)) == [0, 1, 2, 3, 4]
    assert not resume.state_file(folder).exists()


def test_a_run_killed_between_validations_resumes_from_the_epoch_before_it(tiny_dataset, in_tmp, monkeypatch):
    """With validations every 2 epochs a kill used to lose up to 2 epochs (the state was written after
    validations only); with resume_every the state of the epoch before is written at the start of
    the next, and the run resumes from there to the unbroken run's result."""
    data_path, name, yaml_file = tiny_dataset
    settings = {"data_path": data_path, **SMALL, "epochs": 6, "eval_step": 2, "stopping_step": 10}
    settings.update(hidden_dropout_prob=0.3, resume_every=1e-9)  # any state is old enough: every epoch
    unbroken = run_recbole_sae("SASRec", name, [yaml_file], settings)

    written = []
    save = resume.save

    def save_and_note(run_dir, trainer, train_data, epoch_idx, *args, **kwargs):
        written.append(epoch_idx)
        save(run_dir, trainer, train_data, epoch_idx, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(resume, "save", save_and_note)
        _kill_after(patch, 2)  # epoch 2 has no validation (epochs 1, 3 and 5 have)
        with pytest.raises(Killed):
            run_recbole_sae("SASRec", name, [yaml_file], {**settings, "run_name": "r"})
    assert written == [0, 1, 2]  # epoch 0 at the start of 1, epoch 1 after its validation, epoch 2 at the start of 3
    folder = in_tmp / "runs" / "r"
    assert sorted(_losses(folder)) == [0, 1, 2]

    resumed = run_recbole_sae("SASRec", name, [yaml_file], {**settings, "run_name": "r"})
    assert resumed["resumed_at_epoch"] == 3
    for key in ("best_valid", "test", "best_epoch", "epochs_run"):
        assert resumed[key] == unbroken[key], key
    for key in ("valid_epoch", "valid", "train_loss"):
        assert resumed["curve"][key] == unbroken["curve"][key], key
    assert _losses(folder) == _losses(unbroken["run_dir"])


def test_the_resume_state_between_validations_waits_for_resume_every():
    """The writer writes after every validation, and between validations only once the last state
    is resume_every old, never for the epoch a (re)start begins at; 0 keeps validations only."""

    class Trainer:
        eval_step, start_epoch = 3, 0

        def _train_epoch(self, train_data, epoch_idx, show_progress=False):
            return 0.0

    def run(every, start_epoch=0):
        now, written = [0.0], []
        trainer = Trainer()
        trainer.start_epoch = start_epoch
        writer = resume.Writer(written.append, every, clock=lambda: now[0])
        writer.wrap(trainer)
        for epoch_idx in range(start_epoch, 9):
            trainer._train_epoch(None, epoch_idx)
            now[0] += 50.0  # an epoch takes 50 s
            if (epoch_idx + 1) % trainer.eval_step == 0:
                writer.after_validation(epoch_idx, 0.1)
        return written

    assert run(0) == [2, 5, 8]
    assert run(60) == [1, 2, 4, 5, 7, 8]  # 100 s after the last state at the starts of epochs 2, 5, 8
    assert run(120) == [2, 5, 8]  # never 120 s between validations 150 s apart at an epoch start
    assert run(1e-9) == [0, 1, 2, 3, 4, 5, 6, 7, 8]
    assert run(1e-9, start_epoch=4) == [4, 5, 6, 7, 8]  # epoch 3's state is the one resumed from


def test_a_run_that_died_after_training_tests_its_best_checkpoint_when_resumed(tiny_dataset, in_tmp, monkeypatch):
    """A run whose training had ended (early stopping) and that died in its reports was resumed at
    'epoch 200': RecBole's fit then saved the resumed last-epoch weights over the best checkpoint,
    and the result was the last epoch's (validation and test)."""
    from recbole_sae import quick_start

    data_path, name, yaml_file = tiny_dataset
    settings = {"data_path": data_path, **SMALL, "epochs": 40, "stopping_step": 2}
    unbroken = run_recbole_sae("SASRecPlus", name, [yaml_file], settings)
    assert unbroken["best_epoch"] < unbroken["epochs_run"] - 1  # stopped early: the best is not the last

    def die_in_reports(trainer):
        raise Killed()

    with monkeypatch.context() as patch:
        patch.setattr(quick_start, "run_view", die_in_reports)
        with pytest.raises(Killed):
            run_recbole_sae("SASRecPlus", name, [yaml_file], {**settings, "run_name": "r"})
    folder = in_tmp / "runs" / "r"
    best = (folder / "model.pth").read_bytes()
    resumed = run_recbole_sae("SASRecPlus", name, [yaml_file], {**settings, "run_name": "r"})
    assert resumed["resumed_at_epoch"] == 40  # nothing left to train
    for key in ("best_valid", "test", "best_epoch", "epochs_run"):
        assert resumed[key] == unbroken[key], key
    assert (folder / "model.pth").read_bytes() == best


def test_sasrecsae_resumes_its_sasrec_and_trains_the_same_sae(tiny_dataset, in_tmp, monkeypatch):
    data_path, name, yaml_file = tiny_dataset
    settings = {
        "data_path": data_path,
        **SMALL,
        "epochs": 4,
        "stopping_step": 10,
        "sae_expansion": 4,
        "sae_k": 4,
        "sae_epochs": 2,
        "sae_batch_size": 128,
        "sae_warmup_steps": 5,
        "interpretation_min_support": 5,
    }
    unbroken = run_recbole_sae("SASRecSAE", name, [yaml_file], settings)
    with monkeypatch.context() as patch:
        _kill_after(patch, 2)
        with pytest.raises(Killed):
            run_recbole_sae("SASRecSAE", name, [yaml_file], {**settings, "run_name": "r"})
    resumed = run_recbole_sae("SASRecSAE", name, [yaml_file], {**settings, "run_name": "r"})
    assert resumed["resumed_at_epoch"] == 3
    for key in ("best_valid", "test", "best_epoch", "epochs_run"):
        assert resumed[key] == unbroken[key], key
    assert resumed["sae"]["fidelity"] == unbroken["sae"]["fidelity"]
    assert resumed["sae"]["recovered"] == unbroken["sae"]["recovered"]


def test_resume_needs_the_runs_own_settings_and_an_unfinished_run(tiny_dataset, in_tmp, monkeypatch, capsys):
    data_path, name, yaml_file = tiny_dataset
    settings = {"data_path": data_path, **SMALL, "epochs": 3, "stopping_step": 10}
    args = ["--model=SASRec", f"--dataset={name}", f"--config_files={yaml_file}"]
    args += [f"--{k}={v}" for k, v in settings.items() if k != "show_progress"]
    with monkeypatch.context() as patch:
        _kill_after(patch, 0)
        with pytest.raises(Killed):
            main(args + ["--run_name=r", "--show_progress=False"])
    folder = in_tmp / "runs" / "r"

    # other settings: an error that says which and how the run was started
    with pytest.raises(ConfigError, match=r"other settings \(learning_rate: run 0.001, now 0.01\)") as caught:
        run_recbole_sae("SASRec", name, [yaml_file], {**settings, "learning_rate": 0.01, "run_name": "r"})
    assert "It was started with: " in str(caught.value) and "--run_name=r" in str(caught.value)
    # where the logs go and how they look may change
    capsys.readouterr()
    assert main(args + [f"--resume={folder}", "--show_progress=True"]) == 0
    result = json.loads(capsys.readouterr().out.split("RESULT ", 1)[1])
    assert result["resumed_at_epoch"] == 1 and result["epochs_run"] == 3 and result["run_dir"] == str(folder)

    # a finished run: nothing to resume; a folder that never validated: nothing to resume from
    assert main(args + [f"--resume={folder}"]) == 2
    assert "holds a finished run (result.json); there is nothing to resume" in capsys.readouterr().err
    assert main(args + [f"--resume={in_tmp}"]) == 2
    assert f"no resume.pth in {in_tmp}" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="holds a finished run"):
        run_recbole_sae("SASRec", name, [yaml_file], {**settings, "run_name": "r"})


def test_a_sweep_run_has_a_fixed_folder_and_a_finished_unrecorded_run_is_done_again(tiny_dataset, in_tmp):
    data_path, name, yaml_file = tiny_dataset
    spec = sweep_spec.RunSpec(
        model="SASRec",
        dataset=name,
        seed=1,
        grid={},
        grid_label="",
        overrides={"data_path": data_path, **SMALL, "seed": 1},
        config_files=[yaml_file],
        key="abc",
    )
    assert sweep_spec.run_folder_name(spec) == f"SASRec-{name}-seed1-abc"
    spec_file = in_tmp / "spec.json"
    spec_file.write_text(
        json.dumps(
            {
                "model": spec.model,
                "dataset": spec.dataset,
                "config_files": spec.config_files,
                "config_dict": {**spec.overrides, "run_name": sweep_spec.run_folder_name(spec)},
            }
        )
    )
    assert process.run_one(str(spec_file), str(in_tmp / "first.json")) == 0
    first = json.loads((in_tmp / "first.json").read_text())
    folder = in_tmp / "runs" / sweep_spec.run_folder_name(spec)
    assert first["result"]["run_dir"] == str(folder) and "replaced_run_dir" not in first

    # the folder holds a finished run that this results file does not (the sweep died before recording
    # it, or the file was deleted to run everything again): the run is done again, the old folder kept
    (folder / "result.json").write_text(json.dumps({**first["result"], "test": {"ndcg@10": 1.0}}))
    assert process.run_one(str(spec_file), str(in_tmp / "again.json")) == 0
    again = json.loads((in_tmp / "again.json").read_text())
    assert again["result"]["test"] == first["result"]["test"] and again["result"]["run_dir"] == str(folder)
    old = again["replaced_run_dir"]
    assert old.startswith(f"{folder}.replaced-") and json.loads(open(os.path.join(old, "result.json")).read())[
        "test"
    ] == {"ndcg@10": 1.0}


def test_a_sweep_started_again_resumes_its_killed_run(tiny_dataset, sweep_file, in_tmp, monkeypatch):
    """The run of a sweep killed mid-training (here: killed in this process, in its sweep run folder) goes on
    from its last validation when the sweep runs again, and its record says where."""
    data_path, _, _ = tiny_dataset
    sweep = sweep_spec.load_sweep(
        sweep_file(config={**SMALL, "data_path": data_path, "epochs": 3, "stopping_step": 10})
    )
    (spec,) = sweep_spec.plan_runs(sweep)
    with monkeypatch.context() as patch:
        _kill_after(patch, 0)
        with pytest.raises(Killed):
            run_recbole_sae(
                spec.model,
                spec.dataset,
                spec.config_files,
                {**spec.overrides, "run_name": sweep_spec.run_folder_name(spec)},
            )
    results = in_tmp / "results.jsonl"
    summary = runner.run_sweep(sweep, results, log=[].append)
    assert summary["executed"] == 1 and summary["errors"] == 0
    (record,) = results_file.read_results(results)
    assert record["resumed_at_epoch"] == 1 and record["epochs_run"] == 3
    assert record["run_dir"] == str(in_tmp / "runs" / sweep_spec.run_folder_name(spec))


def test_settings_that_change_training_are_not_free():
    """`shuffle` (whether RecBole shuffles the training rows) was among the keys a resume may change."""
    for key in (
        "shuffle",
        "learning_rate",
        "epochs",
        "seed",
        "train_batch_size",
        "MAX_ITEM_LIST_LENGTH",
        "train_mode",
        "full_sequence_batch",
        "hidden_dropout_prob",
        "stopping_step",
        "valid_metric",
    ):
        assert key not in resume.FREE_KEYS, key


def test_an_unreadable_state_is_a_clear_error(tmp_path):
    resume.state_file(tmp_path).write_bytes(b"half a file")
    with pytest.raises(
        ConfigError, match=r"cannot read the resume state .*resume.pth .*delete it to start the run afresh"
    ):
        resume.load(tmp_path)
