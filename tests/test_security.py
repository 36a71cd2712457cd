"""Nothing the project loads runs code; one writer per run folder and results file; run folders stay
under checkpoint_dir; bad input ends with one ``error:`` line and exit code 2."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SMALL

from recbole_sae import compat, resume, runfiles, runlock
from recbole_sae.benchmark import commands
from recbole_sae.benchmark import results as results_file
from recbole_sae.benchmark import spec as sweep_spec
from recbole_sae.benchmark import stats as report_stats
from recbole_sae.cli import main, parse_args
from recbole_sae.errors import CheckpointMismatchError, ConfigError


class _Payload:
    """Unpickling this object runs ``touch MARKER`` (as a crafted checkpoint would run anything)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _evil_pickle(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"config": {"model": "SASRecSAE", "dataset": "tiny"}, "state_dict": {}, "payload": _Payload(marker)}, path
    )
    return path


def _cli(args: list[str], capsys) -> tuple[int, str]:
    code = main(args)
    err = capsys.readouterr().err
    return code, err


def _tiny_args(tiny_dataset, model="SASRec", config_files=(), **keys) -> list[str]:
    """The command line of a tiny run; ``config_files`` are layered over the tiny data's yaml."""
    data_path, name, yaml_file = tiny_dataset
    settings = {**SMALL, **keys}
    return [
        f"--model={model}",
        f"--dataset={name}",
        "--config_files=" + ",".join(map(str, [yaml_file, *config_files])),
        f"--data_path={data_path}",
        *[f"--{k}={v}" for k, v in settings.items()],
    ]


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# --------------------------------------------------------------------------------------------
# (1) checkpoints and resume states load weights-only


def test_a_crafted_pickle_runs_no_code_through_any_loader(tiny_dataset, in_tmp, capsys):
    from recbole_sae.quick_start import load_data_and_model

    marker = in_tmp / "PWNED"
    evil = _evil_pickle(in_tmp / "evil" / "model.pth", marker)
    (in_tmp / "evil" / "sae").mkdir()
    with pytest.raises(CheckpointMismatchError, match="could run code; set trust_checkpoint: True"):
        compat.load_checkpoint(str(evil))
    with pytest.raises(CheckpointMismatchError, match="not loaded"):
        load_data_and_model(str(evil.parent))
    code, err = _cli(_tiny_args(tiny_dataset, "SASRecSAE", sasrec_checkpoint=evil), capsys)
    assert code == 2 and "trust_checkpoint" in _one_error_line(err)
    code, err = _cli(_tiny_args(tiny_dataset, "SteerableSASRec", sae_run=evil.parent), capsys)
    assert code == 2 and "trust_checkpoint" in _one_error_line(err)
    # a resume state found through run_name: refused, never unpickled
    run_dir = runlock.claim(str(in_tmp / "runs" / "r1"))
    _evil_pickle(resume.state_file(run_dir), marker)
    code, err = _cli(_tiny_args(tiny_dataset, run_name="r1", checkpoint_dir=in_tmp / "runs"), capsys)
    assert code == 2 and "resume state" in _one_error_line(err)
    assert not marker.exists()
    # the explicit opt-in unpickles it (and so runs its code): that is what trusting means
    state = compat.load_checkpoint(str(evil), trust=True)
    assert state["config"]["model"] == "SASRecSAE" and marker.exists()


@pytest.mark.parametrize("content", [b"", b"\x93\x8a random bytes \x00\x01", b"a text file\n"])
def test_unreadable_checkpoints_are_one_error_line(tiny_dataset, in_tmp, capsys, content):
    path = in_tmp / "bad.pth"
    path.write_bytes(content)
    code, err = _cli(_tiny_args(tiny_dataset, "SASRecSAE", sasrec_checkpoint=path), capsys)
    assert code == 2 and f"cannot read the checkpoint {path}" in _one_error_line(err)
    code, err = _cli(_tiny_args(tiny_dataset, "SASRecSAE", sasrec_checkpoint=in_tmp / "missing.pth"), capsys)
    assert code == 2 and "checkpoint not found" in _one_error_line(err)


def test_a_truncated_checkpoint_is_a_clear_error(tiny_dataset, in_tmp, capsys):
    data_path, name, yaml_file = tiny_dataset
    from recbole_sae.quick_start import run_recbole_sae

    result = run_recbole_sae("SASRec", name, [yaml_file], {"data_path": data_path, **SMALL})
    checkpoint = Path(result["run_dir"]) / "model.pth"
    assert set(torch.load(checkpoint, weights_only=True)) >= {"config", "state_dict", "optimizer"}
    checkpoint.write_bytes(checkpoint.read_bytes()[:200])
    with pytest.raises(CheckpointMismatchError, match="cannot read the checkpoint .*truncated, corrupt"):
        compat.load_checkpoint(str(checkpoint))


def test_resume_state_loads_weights_only(tiny_dataset, in_tmp):
    from recbole_sae.quick_start import run_recbole_sae

    data_path, name, yaml_file = tiny_dataset
    states = []
    save = resume.save

    def keep(run_dir, *args, **kwargs):
        save(run_dir, *args, **kwargs)
        states.append(torch.load(resume.state_file(run_dir), weights_only=True))

    resume.save = keep
    try:
        run_recbole_sae("SASRec", name, [yaml_file], {"data_path": data_path, **SMALL, "epochs": 2})
    finally:
        resume.save = save
    assert len(states) == 2 and states[1]["epoch"] == 1
    rng = states[1]["rng"]
    assert rng["numpy"]["keys"].shape == (624,) and len(rng["python"]["internal"]) == 625
    assert isinstance(states[1]["best_valid_score"], float)


# --------------------------------------------------------------------------------------------
# (2) values are parsed as literals, never eval'd


def _payload(marker: Path) -> str:
    return f"__import__('os').system('touch {marker}')"


def test_literal_parsing_of_command_line_and_config_dict_values(in_tmp):
    from recbole_sae.config import Config, literal

    assert literal("5") == 5 and literal("-5") == -5 and literal("1e-3") == 0.001 and literal("[10, 20]") == [10, 20]
    assert literal("{'max_norm': 5}") == {"max_norm": 5} and literal("None") is None
    assert literal("true") is True and literal("False") is False and literal("ml-100k") == "ml-100k"
    assert literal("2**10") == "2**10" and literal("{1, 2}") == "{1, 2}"
    marker = in_tmp / "PWNED"
    config = Config(
        "SASRec",
        "ml-100k",
        config_dict={"log_wandb": "False", "state": _payload(marker).replace("PWNED", "P2")},
        cmd_args=parse_args([f"--wandb_project={_payload(marker)}", "--epochs=3"]),
    )
    assert config["wandb_project"] == _payload(marker) and config["epochs"] == 3 and config["log_wandb"] is False
    assert not marker.exists() and not (in_tmp / "P2").exists()


def test_an_eval_payload_from_the_command_line_or_a_sweep_runs_nothing(tiny_dataset, sweep_file, in_tmp, capsys):
    marker = in_tmp / "PWNED"
    code, _ = _cli(_tiny_args(tiny_dataset, wandb_project=_payload(marker)), capsys)
    assert code == 0 and not marker.exists()
    data_path = tiny_dataset[0]
    path = sweep_file(config={**SMALL, "data_path": data_path, "wandb_project": _payload(marker)})
    assert main([f"--sweep={path}", f"--results={in_tmp / 'r.jsonl'}"]) == 0
    record = results_file.read_results(in_tmp / "r.jsonl")[0]
    assert record["status"] == "ok" and record["config"]["wandb_project"] == _payload(marker)
    assert not marker.exists()


def test_config_files_are_read_safely_and_named_in_errors(tiny_dataset, in_tmp, capsys):
    marker = in_tmp / "PWNED"
    cases = {
        "apply.yaml": f"epochs: !!python/object/apply:os.system ['touch {marker}']\n",
        "broken.yaml": "epochs: [1, 2\n",
        "list.yaml": "- epochs\n- 5\n",
    }
    for file_name, text in cases.items():
        path = in_tmp / file_name
        path.write_text(text)
        code, err = _cli(_tiny_args(tiny_dataset, config_files=[path]), capsys)
        assert code == 2 and f"config file {path}" in _one_error_line(err), err
    assert not marker.exists()


# --------------------------------------------------------------------------------------------
# (4) run folders only under checkpoint_dir, and only the project's own


def test_run_name_may_not_leave_checkpoint_dir_or_take_a_foreign_folder(tiny_dataset, in_tmp, capsys):
    runs = in_tmp / "runs"
    code, err = _cli(_tiny_args(tiny_dataset, run_name="../escape", checkpoint_dir=runs), capsys)
    assert code == 2 and "outside checkpoint_dir" in _one_error_line(err) and not (in_tmp / "escape").exists()
    other = in_tmp / "elsewhere"
    code, err = _cli(_tiny_args(tiny_dataset, run_name=other, checkpoint_dir=runs), capsys)
    assert code == 2 and "outside checkpoint_dir" in _one_error_line(err) and not other.exists()
    foreign = runs / "mine"
    foreign.mkdir(parents=True)
    (foreign / "notes.txt").write_text("keep me")
    code, err = _cli(_tiny_args(tiny_dataset, run_name="mine", checkpoint_dir=runs), capsys)
    assert code == 2 and "not made by recbole-sae" in _one_error_line(err)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    code, _ = _cli(_tiny_args(tiny_dataset, run_name=runs / "inside", checkpoint_dir=runs), capsys)
    assert code == 0 and (runs / "inside" / "result.json").is_file() and (runs / "inside" / runfiles.MARKER).is_file()


# --------------------------------------------------------------------------------------------
# (3) one writer per run folder and results file; runs die with their sweep


def test_a_second_writer_of_a_run_folder_or_results_file_is_refused(tiny_dataset, sweep_file, in_tmp, capsys):
    runs = in_tmp / "runs"
    run_dir = runlock.claim(str(runs / "busy"))
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import fcntl, sys, time; f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX); "
                "f.write('pid 4242 (the first run)'); f.flush(); print('held', flush=True); time.sleep(60)"
            ),
            os.path.join(run_dir, runfiles.MARKER),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        code, err = _cli(_tiny_args(tiny_dataset, run_name="busy", checkpoint_dir=runs), capsys)
        assert code == 2 and "in use by pid 4242 (the first run)" in _one_error_line(err)
        assert sorted(os.listdir(run_dir)) == [runfiles.MARKER]  # no config.yaml, no run.log
    finally:
        holder.kill()
        holder.wait()
    results = in_tmp / "r.jsonl"
    with runlock.lock_results(results):
        code, err = _cli([f"--sweep={sweep_file()}", f"--results={results}"], capsys)
        assert code == 2 and f"the results file {results} is in use by pid {os.getpid()}" in _one_error_line(err)
    assert not results.exists()


def test_sigkill_of_a_sweep_takes_its_run_along_and_a_restart_resumes_alone(sweep_file, tiny_dataset, in_tmp):
    data_path = tiny_dataset[0]
    path = sweep_file(
        config={
            **SMALL,
            "data_path": data_path,
            "epochs": 15,
            "stopping_step": 1000,
            "checkpoint_dir": str(in_tmp / "runs"),
        }
    )
    results = in_tmp / "r.jsonl"
    command = [
        sys.executable,
        str(Path(sweep_spec.PACKAGE_ROOT) / "run_recbole_sae.py"),
        f"--sweep={path}",
        f"--results={results}",
    ]
    env = {**os.environ, "PYTHONPATH": str(sweep_spec.PACKAGE_ROOT)}
    sweep = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 120
    states = []
    while not states and time.monotonic() < deadline:
        states = list((in_tmp / "runs").glob(f"*/{runfiles.RESUME}"))
        time.sleep(0.1)
    assert states, "the run never validated"
    run_dir = states[0].parent
    run_pid = int((run_dir / runfiles.MARKER).read_text().split()[1])
    sweep.kill()
    sweep.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(run_pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the run process outlived its sweep")
    restarted = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert restarted.returncode == 0, restarted.stderr[-2000:]
    records = results_file.read_results(results)
    assert len(records) == 1 and records[0]["status"] == "ok" and records[0]["resumed_at_epoch"] >= 1
    log = (run_dir / "run.log").read_text()
    resumed = records[0]["resumed_at_epoch"]
    # the killed process may have finished (and logged) the epoch it was in before its state was saved:
    # that epoch is trained again, so only the epochs after the restart's own line count
    before, restart_line, after_restart = log.partition(f"(RecBole's log counts from 0: its epoch {resumed})")
    assert restart_line
    after = [int(epoch) for epoch in re.findall(r"epoch (\d+) training", after_restart)]
    assert after == list(range(resumed, 15))
    assert all(int(e) < resumed + 1 for e in re.findall(r"epoch (\d+) training", before))


# --------------------------------------------------------------------------------------------
# (5) one error line, exit code 2, before any data is read where the value alone is wrong


@pytest.mark.parametrize(
    "key, value",
    [
        ("hidden_size", "abc"),
        ("hidden_size", "-5"),
        ("n_layers", "1.5"),
        ("hidden_dropout_prob", "2"),
        ("learning_rate", "0"),
        # each of the next four was a traceback (nproc, seed, weight_decay) or silent nonsense (stopping_step)
        ("nproc", "abc"),
        ("seed", "abc"),
        ("weight_decay", "-1"),
        ("stopping_step", "-1"),
        # RecBole warned and filtered nothing
        ("user_inter_num_interval", "abc"),
        ("item_inter_num_interval", "[10,5]"),
        ("filter_seen", "maybe"),  # was the text 'maybe', taken as true: seen items silently removed
        ("show_progress", "1"),
    ],
)
def test_bad_numbers_and_switches_are_refused_before_any_data_or_run_folder(tiny_dataset, in_tmp, capsys, key, value):
    runs = in_tmp / "runs"
    code, err = _cli(_tiny_args(tiny_dataset, checkpoint_dir=runs, **{key: value}), capsys)
    assert code == 2 and _one_error_line(err).startswith(f"error: {key}=")
    assert not runs.exists()


@pytest.mark.parametrize(
    "keys, start",
    [
        # each was a traceback from RecBole's config (ValueError, NotImplementedError) or, for the
        # valid_metric, a KeyError after the first epoch's training
        ({"topk": "[0]"}, "error: topk must be a positive integer"),
        # a textual or negative interval: a ValueError from the progress meter, or a state never written between validations
        ({"progress_seconds": "abc"}, "error: progress_seconds='abc': it must be a number of at least 0"),
        ({"resume_every": "-1"}, "error: resume_every=-1: it must be a number of at least 0"),
        ({"metrics": "[Foo]"}, "error: unknown metric(s) Foo: use RecBole's metric names (auc,"),
        ({"valid_metric": "Foo@10"}, "error: valid_metric=Foo@10: no evaluation computes it"),
        ({"valid_metric": "NDCG@7", "topk": "[5,10]"}, "error: valid_metric=NDCG@7: no evaluation computes it"),
        # sampled candidates: an IndexError from RecBole's collector after training
        (
            {"eval_args": "{'split': {'LS': 'valid_and_test'}, 'order': 'TO', 'mode': 'uni100'}"},
            "error: eval_args mode {'valid': 'uni100', 'test': 'uni100'}: sequential models here",
        ),
    ],
)
def test_bad_evaluation_settings_are_refused_before_any_data(tiny_dataset, in_tmp, capsys, keys, start):
    runs = in_tmp / "runs"
    code, err = _cli(_tiny_args(tiny_dataset, checkpoint_dir=runs, **keys), capsys)
    assert code == 2 and _one_error_line(err).startswith(start)
    assert not runs.exists()


@pytest.mark.parametrize(
    "model, key, value, start",
    [
        # a bad fusion surfaced from the model's constructor, after the text was embedded and the
        # intent SAE trained; a bad intent_sae_k was a traceback
        ("SAERec", "fusion", "sum", "error: fusion='sum': it must be one of attention, gate"),
        ("SAERec", "intent_sae_k", "abc", "error: intent_sae_k='abc': it must be a whole number of at least 1"),
        ("SAERec", "recency_decay", "5", "error: recency_decay=5: it must be a number in (0, 1]"),
        # read only when the SAE stage starts, after the SASRec stage has trained: a traceback then
        ("SASRecSAE", "sae_lr", "abc", "error: sae_lr='abc': it must be a number above 0"),
        ("SASRecSAE", "sae_k", "0", "error: bad SAE setting: SAEConfig.k must be a positive integer"),
    ],
)
def test_bad_model_settings_are_refused_before_any_data(tiny_dataset, in_tmp, capsys, model, key, value, start):
    runs = in_tmp / "runs"
    code, err = _cli(_tiny_args(tiny_dataset, model=model, checkpoint_dir=runs, **{key: value}), capsys)
    assert code == 2 and _one_error_line(err).startswith(start)
    assert not runs.exists()


def test_a_sweep_checks_every_runs_settings_before_its_first_run(sweep_file, in_tmp, capsys):
    """A bad value of the second grid point stopped the sweep only when that run came, after the first
    had trained; a missing dataset failed every run in turn."""
    results, runs = in_tmp / "r.jsonl", in_tmp / "runs"
    bad_point = sweep_file(grid={"hidden_dropout_prob": [0.2, 7]})
    code, err = _cli([f"--sweep={bad_point}", f"--results={results}", f"--checkpoint_dir={runs}"], capsys)
    assert code == 2 and _one_error_line(err) == (
        "error: the sweep's run SASRec tiny seed=1 [hidden_dropout_prob=7]: hidden_dropout_prob=7: "
        "it must be a probability in [0, 1) (e.g. --hidden_dropout_prob=0.2)"
    )
    no_data = sweep_file(datasets=["no-such-data"])
    code, err = _cli([f"--sweep={no_data}", f"--results={results}", f"--checkpoint_dir={runs}"], capsys)
    assert code == 2 and _one_error_line(err).startswith("error: dataset 'no-such-data' not found")
    assert not results.exists() and not runs.exists()


def test_a_checkpoint_dir_that_cannot_hold_run_folders_is_one_error_line(tiny_dataset, in_tmp, capsys):
    """A file (or an unwritable folder) as checkpoint_dir was a NotADirectoryError traceback."""
    a_file = in_tmp / "a_file"
    a_file.write_text("x")
    code, err = _cli(_tiny_args(tiny_dataset, checkpoint_dir=a_file), capsys)
    line = _one_error_line(err)
    assert code == 2 and line.startswith(f"error: cannot make the run folder {a_file}/SASRec-")
    assert line.endswith("(Not a directory): pass a --checkpoint_dir you can write to")


def test_a_sweep_checks_where_it_writes_before_its_first_run(sweep_file, in_tmp, capsys):
    """A folder as --results, or a report folder that is a file, failed once every run had trained."""
    path, runs, a_file = sweep_file(), in_tmp / "runs", in_tmp / "a_file"
    a_file.write_text("x")
    code, err = _cli([f"--sweep={path}", f"--results={in_tmp}", f"--checkpoint_dir={runs}"], capsys)
    assert code == 2 and _one_error_line(err) == (
        f"error: --results={in_tmp} is a folder: name a file, e.g. {in_tmp / 'results.jsonl'}"
    )
    results = in_tmp / "r.jsonl"
    code, err = _cli(
        [f"--sweep={path}", f"--results={results}", f"--report_dir={a_file}", f"--checkpoint_dir={runs}"], capsys
    )
    assert (
        code == 2 and _one_error_line(err) == f"error: --report_dir: {a_file} is a file, not a folder: choose a folder"
    )
    assert not runs.exists()


def test_fearec_with_one_layer_is_refused_before_any_data(tiny_dataset, in_tmp, capsys):
    """RecBole's FEARec divides by n_layers - 1: one layer was a ZeroDivisionError deep in its constructor."""
    runs = in_tmp / "runs"
    code, err = _cli(_tiny_args(tiny_dataset, model="FEARec", checkpoint_dir=runs, n_layers=1), capsys)
    assert code == 2 and _one_error_line(err).startswith("error: FEARec needs n_layers >= 2")
    assert not runs.exists()


def _short_histories(root: Path) -> tuple[str, str, str]:
    """A dataset whose users all have 2 interactions: nothing to validate or test on under leave-one-out."""
    folder = root / "short"
    folder.mkdir(parents=True)
    with open(folder / "short.inter", "w") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for u in range(1, 41):
            f.write(f"{u}\t{u % 30 + 1}\t{u * 10}\n{u}\t{(u * 7) % 30 + 1}\t{u * 10 + 1}\n")
    (folder / "short.yaml").write_text("load_col: {inter: [user_id, item_id, timestamp]}\n")
    return str(root), "short", str(folder / "short.yaml")


@pytest.mark.parametrize("model", ["SASRec", "SASRecPlus", "SASRecSAE"])
def test_a_run_that_would_evaluate_nothing_is_an_error_and_its_folder_says_it_failed(in_tmp, capsys, model):
    data = _short_histories(in_tmp / "data")
    runs = in_tmp / "runs"
    code, err = _cli(_tiny_args(data, model, checkpoint_dir=runs, run_name="short-run"), capsys)
    line = _one_error_line(err)
    assert code == 2 and "validation and test data are empty, so nothing would be evaluated" in line
    assert "at least 3 interactions" in line
    run_dir = runs / "short-run"
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(["FAILED", "config.yaml", "run.log", runfiles.MARKER])
    assert "nothing would be evaluated" in (run_dir / "FAILED").read_text()


def test_a_failed_run_keeps_only_its_log_and_config_and_a_rerun_clears_failed(tiny_dataset, in_tmp, capsys):
    runs = in_tmp / "runs"
    run_dir = Path(runlock.claim(str(runs / "r")))
    (run_dir / "model.pth").write_bytes(b"left by the failed run")
    (run_dir / "interpretation").mkdir()
    runlock.mark_failed(str(run_dir), ConfigError("bad input"), resumable=False)
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(["FAILED", runfiles.MARKER])
    assert (run_dir / "FAILED").read_text() == "ConfigError: bad input\n"
    code, _ = _cli(_tiny_args(tiny_dataset, checkpoint_dir=runs, run_name="r"), capsys)
    assert code == 0 and not (run_dir / "FAILED").exists() and (run_dir / "result.json").is_file()


def test_saerec_on_items_without_any_text_is_an_error(tiny_dataset, in_tmp, capsys):
    data_path, name, yaml_file = tiny_dataset
    item_file = Path(data_path) / name / f"{name}.item"
    rows = item_file.read_text().splitlines()
    item_file.write_text("\n".join([rows[0]] + [f"{row.split(chr(9))[0]}\t\t" for row in rows[1:]]) + "\n")
    from conftest import INTENT_SMALL

    code, err = _cli([*_tiny_args(tiny_dataset, "SAERec"), *[f"--{k}={v}" for k, v in INTENT_SMALL.items()]], capsys)
    assert code == 2 and f"every item of '{name}' has an empty text" in _one_error_line(err)


def test_a_report_leaves_out_records_without_their_fields(in_tmp, capsys):
    metrics = {key: 0.1 for key, _ in report_stats.REPORT_METRICS}
    good = {
        "key": "a",
        "status": "ok",
        "model": "SASRec",
        "dataset": "d",
        "seed": 1,
        "best_valid": metrics,
        "test": metrics,
    }
    results = in_tmp / "r.jsonl"
    for record in (good, {"key": "b", "status": "ok", "model": "SASRec"}, {**good, "key": "c", "seed": "x"}):
        results_file.append_record(results, record)
    with pytest.warns(results_file.ResultsFileWarning) as caught:
        assert commands.cli(["report", str(results), "--out", str(in_tmp)]) == 0
    assert [str(w.message).split(": ", 1)[1] for w in caught] == [
        "leaving out the record of run 'b', which lacks dataset, seed, best_valid, test",
        "leaving out the record of run 'c', which lacks seed",
    ]
    assert "| SASRec |" in (in_tmp / "r.md").read_text()


def test_a_sasrecsae_run_reloads_from_its_weights_only_checkpoint_and_bad_strengths_fail_early(
    tiny_dataset, in_tmp, capsys
):
    from recbole_sae.quick_start import load_data_and_model

    sae = {"sae_expansion": 4, "sae_k": 4, "sae_epochs": 2, "sae_batch_size": 128, "sae_warmup_steps": 5}
    code, err = _cli(_tiny_args(tiny_dataset, "SASRecSAE", run_name="sae", **sae), capsys)
    assert code == 0, err
    run_dir = in_tmp / "runs" / "sae"
    state = torch.load(run_dir / "model.pth", weights_only=True)
    assert state["config"]["model"] == "SASRecSAE" and int(state["state_dict"]["sae.n_rows_seen"]) > 0
    config, model, *_ = load_data_and_model(str(run_dir), expected_model="SASRecSAE")
    assert torch.equal(model.sae.W_dec, state["state_dict"]["sae.W_dec"]) and config["sae_k"] == 4
    code, err = _cli(
        _tiny_args(tiny_dataset, "SteerableSASRec", sae_run=run_dir, steer_sweep="genre=Western", strengths="a,b"),
        capsys,
    )
    line = _one_error_line(err)
    assert code == 2 and line.startswith("error: --strengths: strengths must be numbers")
    steer_runs = [p for p in (in_tmp / "runs").iterdir() if p.name.startswith("SteerableSASRec")]
    assert len(steer_runs) == 1 and not (steer_runs[0] / "model.pth").exists()
    assert (steer_runs[0] / "FAILED").read_text().startswith("ConfigError: --strengths")


def test_a_pickled_dataset_in_a_run_folder_is_never_unpickled(tiny_dataset, in_tmp, capsys):
    marker = in_tmp / "PWNED"
    run_dir = Path(runlock.claim(str(in_tmp / "runs" / "shared")))
    _evil_pickle(run_dir / "tiny-SequentialDataset.pth", marker)
    code, err = _cli(_tiny_args(tiny_dataset, run_name="shared", checkpoint_dir=in_tmp / "runs"), capsys)
    assert code == 2 and "pickled RecBole dataset" in _one_error_line(err) and not marker.exists()


def test_a_recbole_checkpoint_loads_only_when_trusted(tiny_dataset, in_tmp, capsys):
    from recbole_sae.quick_start import run_recbole_sae

    data_path, name, yaml_file = tiny_dataset
    result = run_recbole_sae("SASRec", name, [yaml_file], {"data_path": data_path, **SMALL, "n_layers": 2})
    state = torch.load(Path(result["run_dir"]) / "model.pth", weights_only=True)
    from recbole_sae.config import Config

    state["config"] = Config("SASRec", name, [yaml_file], {"data_path": data_path})  # as RecBole writes it
    foreign = in_tmp / "recbole.pth"
    torch.save(state, foreign)
    sae = {"sae_expansion": 4, "sae_k": 4, "sae_epochs": 1, "sae_batch_size": 128, "n_layers": 2}
    code, err = _cli(_tiny_args(tiny_dataset, "SASRecSAE", sasrec_checkpoint=foreign, **sae), capsys)
    assert code == 2 and "holds Python objects besides weights" in _one_error_line(err)
    code, err = _cli(
        _tiny_args(tiny_dataset, "SASRecSAE", sasrec_checkpoint=foreign, trust_checkpoint=True, **sae), capsys
    )
    assert code == 0, err


def test_models_with_other_parameters_save_weights_only_and_reload(tiny_dataset, in_tmp):
    """A submodule (GRU4RecF's) or numpy matrices (EASE's) among a model's other parameters are left out of
    the checkpoint (the state dict has the submodule's weights; the matrices are rebuilt from the data)."""
    from recbole_sae import checkpoint
    from recbole_sae.quick_start import load_data_and_model, run_recbole_sae

    other = {
        "item_cnt": torch.ones(3),
        "max_cnt": 4,
        "item_similarity": np.ones((2, 2)),
        "feature_embed_layer": torch.nn.Linear(2, 2),
    }
    assert checkpoint.loadable_other_parameter(other) == {"item_cnt": other["item_cnt"], "max_cnt": 4}
    data_path, name, yaml_file = tiny_dataset
    extra = {"selected_features": ["genre"], "embedding_size": 16}
    result = run_recbole_sae("GRU4RecF", name, [yaml_file], {"data_path": data_path, **SMALL, **extra})
    state = torch.load(Path(result["run_dir"]) / "model.pth", weights_only=True)
    assert state["other_parameter"] == {} and result["test"]["ndcg@10"] > 0
    config, net, *_ = load_data_and_model(result["run_dir"], expected_model="GRU4RecF")
    reloaded = net.state_dict()
    assert type(net).__name__ == "GRU4RecF" and all(torch.equal(reloaded[k], v) for k, v in state["state_dict"].items())
