"""The quiet console, progress lines with a total and an ETA, the SAE stage's length, the threads setting."""

from __future__ import annotations

import json
import logging
import os
import re
import warnings

import pytest
import torch
from conftest import INTENT_SMALL, SMALL

from recbole_sae import console, threads
from recbole_sae.cli import main
from recbole_sae.progress import Progress, duration
from recbole_sae.quick_start import load_data_and_model, run_recbole_sae
from recbole_sae.trainer.sae_trainer import sae_length

SAE_TINY = {
    "sae_expansion": 4,
    "sae_k": 4,
    "sae_batch_size": 128,
    "sae_warmup_steps": 2,
    "interpretation_min_support": 5,
}
PROGRESS_LINE = re.compile(r"^(.+): [\d,]+/[\d,]+ \w+ \(\d+%\), .+ elapsed, ETA .+$")


def _args(tiny_dataset, model: str, **settings) -> list[str]:
    data_path, name, yaml_file = tiny_dataset
    args = [f"--model={model}", f"--dataset={name}", f"--config_files={yaml_file}", f"--data_path={data_path}"]
    return args + [f"--{k}={v}" for k, v in {**SMALL, **settings}.items()]


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "recbole_sae.progress"]


def test_progress_lines_carry_the_total_and_an_eta_at_most_every_interval_and_tenth(caplog):
    clock = Clock()
    caplog.set_level(logging.INFO, logger="recbole_sae.progress")
    with Progress("stage", 100, "steps", every=10, clock=clock) as meter:
        for _ in range(100):
            clock.now += 1.0  # one second per step
            meter.update()
    lines = _lines(caplog)
    assert lines[0] == "stage: 10/100 steps (10%), 10 s elapsed, ETA 1:30"
    assert lines[4] == "stage: 50/100 steps (50%), 50 s elapsed, ETA 50 s"
    assert len(lines) == 10 and lines[-1] == "stage: 100 steps done in 1:40"
    # 10% of the stage between two lines, however short the interval
    caplog.clear()
    with Progress("fast", 1000, "texts", every=0, clock=clock) as meter:
        for _ in range(1000):
            clock.now += 0.001
            meter.update()
    assert len(_lines(caplog)) == 10
    # a stage shorter than the interval prints nothing
    caplog.clear()
    with Progress("short", 5, every=10, clock=clock) as meter:
        for _ in range(5):
            clock.now += 1.0
            meter.update()
    assert _lines(caplog) == []
    assert duration(59.6) == "1:00" and duration(3725) == "1:02:05" and duration(7) == "7 s"


def test_sae_stage_length_follows_a_short_run_unless_set():
    """SASRecSAE's SAE stage ran its 20 epochs whatever --epochs said (20 minutes for a 2-epoch run)."""
    base = {"sae_batch_size": 100, "sae_steps": None, "sae_epochs": None, "epochs": 2}
    assert sae_length(base, 1000) == (2, 20, "sae_epochs ~: the run's epochs, at most 20")
    assert sae_length({**base, "epochs": 200}, 1000)[:2] == (20, 200)
    assert sae_length({**base, "sae_epochs": 5}, 1000) == (5, 50, "sae_epochs")
    assert sae_length({**base, "sae_steps": 7}, 1000) == (1, 7, "sae_steps")


def test_the_quiet_console_of_a_tiny_run(tiny_dataset, in_tmp, capsys):
    """A 130-line config dump, an 80-line model printout and a 1.3-3.4 KB RESULT printed twice made
    the console of a run; log/ and log_tensorboard/ landed in the working directory."""
    assert main(_args(tiny_dataset, "SASRecSAE", epochs=2, **SAE_TINY)) == 0
    captured = capsys.readouterr()
    out = captured.out.splitlines()
    assert len(out) == 1 and out[0].startswith("RESULT ") and len(out[0]) < 1200
    result = json.loads(out[0][len("RESULT ") :])
    run_dir = result["run_dir"]
    assert result["result_file"] == os.path.join(run_dir, "result.json")
    assert set(result["test"]) == {"recall@10", "ndcg@10", "mrr@10", "hit@10"}
    assert set(result["seen_kept"]["test"]) == {"recall@10", "ndcg@10", "mrr@10", "hit@10"}
    full = json.load(open(result["result_file"]))
    assert full["test"]["ndcg@10"] == result["test"]["ndcg@10"] and len(full["test"]) == 12
    assert result["sae"]["fvu"] == full["sae"]["fidelity"]["fvu"]
    assert result["sae"]["recovered"]["test"] == full["sae"]["recovered"]["test"]["recovered"]

    err = [line for line in captured.err.splitlines() if not PROGRESS_LINE.match(line)]
    assert 8 <= len(err) <= 14, err
    assert err[0].startswith("SASRecSAE on tiny; run folder " + run_dir)
    assert err[1] == "data: 80 users, 40 items, 908 interactions"
    assert re.match(r"model: [\d,]+ trainable parameters; device cpu, 1 torch thread; up to 2 epochs", err[2])
    assert [line.split("  ")[0] for line in err if line.startswith("epoch ")] == ["epoch 1/2", "epoch 2/2"]
    assert any(re.match(r"SAE stage: .* 2 epochs = \d+ steps", line) for line in err)
    assert any(line.startswith("seen items removed (headline): valid ndcg@10 ") for line in err)
    assert any(line.startswith("seen items kept: valid ndcg@10 ") for line in err)
    assert "General Hyper Parameters" not in captured.err and "Trainable parameters" not in captured.err
    log = open(os.path.join(run_dir, "run.log"), encoding="utf-8").read()
    assert "General Hyper Parameters" in log and "SASRecSAE(" in log and "data: 80 users" in log
    assert re.search(r"sae step=(\d+)/\1 ", log)  # the SAE's log lines carry the total
    # every file of the run in its folder: RecBole's log is run.log, its tensorboard events are there too
    assert not (in_tmp / "log").exists() and not (in_tmp / "log_tensorboard").exists()
    assert os.listdir(os.path.join(run_dir, "log_tensorboard"))
    load_data_and_model(run_dir)  # a reload writes no log/ either
    assert not (in_tmp / "log").exists()


def test_progress_lines_of_a_planted_short_run(tiny_dataset, in_tmp, capsys):
    """With progress_seconds=0 every 10% of a stage gets a line: each has its total and an ETA."""
    assert main(_args(tiny_dataset, "SASRecSAE", epochs=2, progress_seconds=0, **SAE_TINY)) == 0
    lines = [m for m in map(PROGRESS_LINE.match, capsys.readouterr().err.splitlines()) if m]
    stages = {m.group(1) for m in lines}
    assert {"epoch 1/2", "epoch 2/2", "SAE stage"} <= stages, stages
    epoch_one = [m.group(0) for m in lines if m.group(1) == "epoch 1/2"]
    assert all(" batches (" in line and "; run at most " in line and "(2 epochs)" in line for line in epoch_one)
    assert all(re.search(r"SAE stage: \d+/(\d+) steps", m.group(0)) for m in lines if m.group(1) == "SAE stage")


def test_saerec_stages_say_their_progress(tiny_dataset, in_tmp, capsys):
    """SAERec's text embedding and intent SAE printed nothing for minutes; transformers' weight-loading
    bar came in between."""
    settings = {**INTENT_SMALL, "epochs": 1, "progress_seconds": 0, "intent_cache_dir": str(in_tmp / "cache")}
    assert main(_args(tiny_dataset, "SAERec", **settings)) == 0
    err = capsys.readouterr().err
    assert "intent SAE: 3/30 steps (10%), " in err and "intent SAE: 30 steps done in " in err
    assert "intent vocabulary: 1/4 phases (25%)" in err
    assert re.search(r"^intents: 64 latents, \d+ alive, \d+ kept$", err, re.M)
    assert "Loading weights" not in err


def test_verbose_restores_the_full_console(tiny_dataset, in_tmp, capsys):
    assert main(_args(tiny_dataset, "SASRec", verbose=True)) == 0
    err = capsys.readouterr().err
    assert "General Hyper Parameters" in err and "Trainable parameters" in err and "epoch 0 training" in err


def test_the_threads_setting_is_what_the_run_uses(tiny_dataset, in_tmp, monkeypatch):
    from recbole_sae.trainer.sequence_trainer import SequenceTrainer

    seen = []
    train_epoch = SequenceTrainer._train_epoch

    def recording(self, *args, **kwargs):
        seen.append(torch.get_num_threads())
        return train_epoch(self, *args, **kwargs)

    monkeypatch.setattr(SequenceTrainer, "_train_epoch", recording)
    data_path, name, yaml_file = tiny_dataset
    settings = {"data_path": data_path, **SMALL}
    run_recbole_sae("SASRecPlus", name, [yaml_file], {**settings, "threads": 2})
    assert seen == [2] and torch.get_num_threads() == 1  # the caller's count again after the run
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # as a sweep sets it from torch_threads
    run_recbole_sae("SASRecPlus", name, [yaml_file], settings)
    assert seen == [2, 3]


def test_the_default_thread_count(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert threads.resolve(None) == 1
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert threads.resolve(None) == 8 and threads.resolve("4") == 4
    assert threads.resolve(None, processes=4) == 4  # --nproc=4: the processes share the cores
    for bad in (0, -1, "x", 1.5, True):
        with pytest.raises(Exception, match="threads must be a positive integer"):
            threads.resolve(bad)


def test_bad_threads_is_one_error_line(tiny_dataset, in_tmp, capsys):
    assert main(_args(tiny_dataset, "SASRec", threads=0)) == 2
    assert capsys.readouterr().err == "error: threads must be a positive integer or ~ (the machine's default), got 0\n"


def test_noise_that_reads_like_errors_is_dropped(caplog):
    console.silence_noise()
    caplog.set_level(logging.INFO)
    loader = logging.getLogger("faiss.loader")
    loader.info("Could not load library with AVX512 support due to:\nModuleNotFoundError(...)")
    loader.info("Successfully loaded faiss with AVX2 support.")
    assert [r.getMessage() for r in caplog.records if r.name == "faiss.loader"] == [
        "Successfully loaded faiss with AVX2 support."
    ]
    message = "A value is trying to be set on a copy of a DataFrame or Series through chained assignment using an inplace method."
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        console.silence_noise()
        warnings.warn_explicit(message, FutureWarning, "dataset.py", 501, module="recbole.data.dataset.dataset")
        warnings.warn_explicit(message, FutureWarning, "mine.py", 1, module="mine")
        warnings.warn_explicit("another", FutureWarning, "dataset.py", 502, module="recbole.data.dataset.dataset")
    assert [(w.filename, str(w.message)) for w in caught] == [("mine.py", message), ("dataset.py", "another")]


def test_the_run_log_holds_no_terminal_colour_codes(tmp_path):
    """RecBole colours its epoch lines; run.log had the escape codes in it (RecBole's own log file strips them)."""
    import logging

    from recbole.utils import set_color

    from recbole_sae.console import run_logging

    log = tmp_path / "run.log"
    with run_logging(str(log)):
        logging.getLogger("recbole.trainer").info(
            set_color("epoch 3 evaluating", "green") + " [" + set_color("valid_score", "blue") + ": 0.07]"
        )
    text = log.read_text(encoding="utf-8")
    assert "epoch 3 evaluating [valid_score: 0.07]" in text and "\x1b" not in text
