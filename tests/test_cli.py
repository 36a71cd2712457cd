"""The command line: help, paths resolved where they are given."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import SMALL, write_tiny_dataset

from recbole_sae import cli
from recbole_sae.cli import main, yaml_key_docs
from recbole_sae.config import PROPERTIES

REPO = Path(__file__).resolve().parents[1]

# Every option the README, the sweep runner and the models' docs name.
OPTIONS = [
    "--model",
    "--dataset",
    "--data_path",
    "--config_files",
    "--run_name",
    "--resume",
    "--checkpoint_dir",
    "--extra_keys",
    "--nproc",
    "--sae_run",
    "--sasrec_checkpoint",
    "--steer",
    "--steer_sweep",
    "--strengths",
    "--text_embeddings",
    "--sweep",
    "--results",
    "--report_dir",
    "--workers",
    "--oom_retries",
    "--models",
    "--datasets",
    "--seeds",
    "--grid_points",
]


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_goes_to_stdout_exits_0_and_lists_every_option(flag, capsys):
    """Used to be 8 lines on stderr with exit code 1, without --run_name, --resume, --sae_run, --steer..."""
    assert main([flag]) == 0
    out, err = capsys.readouterr()
    assert err == "" and out.startswith("usage: run_recbole_sae.py --model=MODEL --dataset=DATASET")
    missing = [option for option in OPTIONS if f"{option}=" not in out]
    assert missing == []
    assert "python -m recbole_sae.data.init_yaml --dataset=FOLDER" in out


def test_no_arguments_prints_the_help_instead_of_training(capsys, monkeypatch):
    """No argument at all used to start a 200-epoch SASRec on ml-100k."""
    import recbole_sae.quick_start as quick_start

    monkeypatch.setattr(quick_start, "run_recbole_sae", lambda *a, **k: pytest.fail("a run started"))
    assert main([]) == 0
    assert capsys.readouterr().out.startswith("usage: ")


def test_help_with_a_model_lists_its_keys_with_their_yaml_comments(capsys):
    assert main(["--help", "--model=SAERec"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    # the model's own yaml, its comment beside the default
    assert any(
        line.startswith("  --intent_sae_k=8 ") and line.endswith("(int) Active latents per item.") for line in lines
    )
    # the parent model's yaml (RecBole's SASRec.yaml) and the project's overall.yaml
    assert "Keys of SASRec, under SAERec (RecBole's properties/model/SASRec.yaml):" in lines
    assert any(line.startswith("  --valid_metric=NDCG@10 ") for line in lines)
    # a key shown once, from the highest layer: SAERec's loss_type, not SASRec's
    assert sum(line.lstrip().startswith("--loss_type=") for line in lines) == 1
    # every key of the model's yaml is listed
    documented = {key for key, _, _ in yaml_key_docs(PROPERTIES / "model" / "SAERec.yaml")}
    listed = {line.split("=")[0].strip()[2:] for line in lines if line.startswith("  --")}
    assert documented <= listed and len(documented) > 20


def test_yaml_key_docs_keeps_continued_comments_and_nested_defaults(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(
        "a: 1            # (int) First line.\n"
        "                #   second line.\n"
        "b:              # (dict) Nested.\n"
        "  x: 2          # inner\n"
        "# a section comment\n"
        "c: 'text # not a comment'\n",
        encoding="utf-8",
    )
    docs = yaml_key_docs(path)
    assert docs[0] == ("a", "1", ["(int) First line.", "second line."])
    assert docs[1] == ("b", "", ["(dict) Nested.", "x: 2  # inner"])
    assert [d[0] for d in docs] == ["a", "b", "c"]


def test_help_for_an_unknown_model_is_an_error(capsys):
    assert main(["--help", "--model=NoSuchModel"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown model 'NoSuchModel'")


# ------------------------------------------------------------------------------------------------
# Paths: resolved once, where they are given


def test_cli_paths_are_resolved_against_the_callers_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = cli.parse_args(
        [
            "--data_path=data",
            "--config_files=a.yaml,sub/b.yaml",
            "--sae_run=runs/x",
            "--sasrec_checkpoint=~/m.pth",
            "--text_embeddings=e.safetensors",
            "--resume=runs/y",
            "--results=r.jsonl",
            "--epochs=3",
            "--text_encoder=some/model-id",
        ]
    )
    from recbole_sae.paths import resolve_cli_args

    resolved = resolve_cli_args(args)
    assert resolved["data_path"] == str(tmp_path / "data")
    assert resolved["config_files"] == f"{tmp_path / 'a.yaml'},{tmp_path / 'sub' / 'b.yaml'}"
    assert resolved["sae_run"] == str(tmp_path / "runs" / "x") and resolved["resume"] == str(tmp_path / "runs" / "y")
    assert resolved["sasrec_checkpoint"] == os.path.expanduser("~/m.pth")
    assert resolved["text_embeddings"] == str(tmp_path / "e.safetensors")
    assert resolved["results"] == str(tmp_path / "r.jsonl")
    assert resolved["epochs"] == "3" and resolved["text_encoder"] == "some/model-id"  # not a folder here: an id


def test_relative_config_files_and_data_path_still_work_after_a_chdir(tmp_path, monkeypatch, capsys):
    """A relative --config_files / --data_path means the folder the command was given in, even when the
    run goes on in another working directory."""
    write_tiny_dataset(tmp_path / "data")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(tmp_path)
    args = [
        "--model=SASRec",
        "--dataset=tiny",
        "--data_path=data",
        "--config_files=data/tiny/tiny.yaml",
        *(f"--{k}={v}" for k, v in SMALL.items()),
    ]
    from recbole_sae.paths import resolve_cli_args

    resolved = [f"--{k}={v}" for k, v in resolve_cli_args(cli.parse_args(args)).items()]
    monkeypatch.chdir(elsewhere)  # e.g. a test fixture, a notebook, a worker
    assert main(resolved) == 0
    out = capsys.readouterr().out
    assert '"dataset": "tiny"' in out and f'"run_dir": "{elsewhere}' in out
    # and without the CLI's resolution the same relative arguments no longer find the files here
    assert main(args) == 2
    assert "config file not found" in capsys.readouterr().err


def test_a_run_takes_its_arguments_from_main_and_records_its_command(tmp_path, monkeypatch, capsys):
    """main(argv) is the whole command line: the process's own arguments change nothing; the command (the
    program and the arguments, paths absolute) goes to the run's log, its folder's lock and resume.pth."""
    write_tiny_dataset(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["prog", "--epochs=99", "--hidden_size=64", "--no_such_key=1", "junk"])
    args = [
        "--model=SASRec",
        "--dataset=tiny",
        "--data_path=data",
        "--config_files=data/tiny/tiny.yaml",
        *(f"--{k}={v}" for k, v in {**SMALL, "epochs": 2}.items()),
        "--run_name=r",
    ]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out.split("RESULT ", 1)[1])
    run_dir = tmp_path / "runs" / "r"
    assert result["run_dir"] == str(run_dir) and result["epochs_run"] == 2
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["hidden_size"] == 16 and config["epochs"] == 2 and "no_such_key" not in config
    command = f"prog --model=SASRec --dataset=tiny --data_path={tmp_path / 'data'}"
    lock = (run_dir / ".recbole-sae-run").read_text()
    assert lock.startswith(f"pid {os.getpid()} ({command} ") and lock.endswith(")\n")
    assert command in (run_dir / "run.log").read_text() and "--run_name=r" in (run_dir / "run.log").read_text()


def _run_python(code: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_relative_recbole_sae_data_is_the_folder_of_the_caller(tmp_path):
    """README command 2 gives RECBOLE_SAE_DATA=../shared/datasets, relative to the repository root; a
    test that changes directory before the run used to look for the data under its own folder."""
    root = tmp_path / "repo"
    (root / "inner").mkdir(parents=True)
    write_tiny_dataset(tmp_path / "shared")
    env = {**os.environ, "RECBOLE_SAE_DATA": "../shared", "PYTHONPATH": str(REPO)}
    code = (
        "import os, sys\n"
        "import recbole_sae\n"  # the package (as pytest's collection does) is imported from the caller's folder
        "from recbole_sae.config import Config\n"
        "os.chdir('inner')\n"  # then the working directory changes (the in_tmp fixture)
        "config = Config('SASRec', 'tiny')\n"
        "print(os.environ['RECBOLE_SAE_DATA']); print(config['data_path'])\n"
    )
    # from the repository root, the variable means <tmp>/shared, wherever the code goes on
    done = _run_python(code, root, env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(tmp_path / "shared"), str(tmp_path / "shared" / "tiny")]


@pytest.mark.skipif(
    not (REPO.parent / "shared" / "datasets" / "amazon-beauty" / "amazon-beauty.inter").is_file(),
    reason="../shared/datasets/amazon-beauty not found beside the repository",
)
def test_readme_test_command_with_its_relative_data_variable(tmp_path):
    """README command 2 as written (RECBOLE_SAE_DATA=../shared/datasets, from the repository root), on
    the test that changes directory: it failed before the variable was resolved at import."""
    env = {**os.environ, "RECBOLE_SAE_DATA": "../shared/datasets"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/test_pipeline.py::test_amazon_beauty_end_to_end",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert "1 passed" in done.stdout and "skipped" not in done.stdout


def test_config_path_keys_are_absolute_so_a_saved_config_reloads_from_anywhere(tmp_path, monkeypatch):
    from recbole_sae.config import Config

    monkeypatch.chdir(tmp_path)
    config = Config(
        "SASRecSAE",
        "ml-100k",
        config_dict={"sae_run": "runs/a", "checkpoint_dir": "out", "intent_cache_dir": "~/cache"},
    )
    assert config["sae_run"] == str(tmp_path / "runs" / "a") and config["checkpoint_dir"] == str(tmp_path / "out")
    assert config["intent_cache_dir"] == os.path.expanduser("~/cache")
    assert config["sasrec_checkpoint"] is None  # unset stays unset


def test_ctrl_c_ends_a_run_with_one_line_and_the_same_command_resumes(tmp_path, monkeypatch, capsys):
    """Ctrl-C during training used to end the command with a KeyboardInterrupt traceback."""
    from recbole_sae.trainer.sequence_trainer import SequenceTrainer

    write_tiny_dataset(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    args = [
        "--model=SASRecPlus",
        "--dataset=tiny",
        "--data_path=data",
        "--config_files=data/tiny/tiny.yaml",
        *(f"--{k}={v}" for k, v in {**SMALL, "epochs": 3}.items()),
        "--run_name=r",
    ]
    train_epoch = SequenceTrainer._train_epoch

    def interrupted_at_epoch_2(self, train_data, epoch_idx, *rest, **kwargs):
        if epoch_idx == 2:
            raise KeyboardInterrupt
        return train_epoch(self, train_data, epoch_idx, *rest, **kwargs)

    monkeypatch.setattr(SequenceTrainer, "_train_epoch", interrupted_at_epoch_2)
    capsys.readouterr()
    assert main(args) == cli.INTERRUPTED == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert (
        err.strip().splitlines()[-1] == "interrupted: the same command again resumes the run from its last saved state"
    )
    monkeypatch.setattr(SequenceTrainer, "_train_epoch", train_epoch)
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out.split("RESULT ", 1)[1])
    assert result["epochs_run"] == 3
    # one line says where training goes on, in the console's count from 1 and in RecBole's from 0
    log = (tmp_path / "runs" / "r" / "run.log").read_text()
    restarts = [line for line in log.splitlines() if "training goes on at" in line]
    assert len(restarts) == 1
    assert restarts[0].endswith(": training goes on at epoch 3 (RecBole's log counts from 0: its epoch 2)")
    without_name = [a for a in args if not a.startswith("--run_name")]
    monkeypatch.setattr(SequenceTrainer, "_train_epoch", interrupted_at_epoch_2)
    assert main(without_name) == 130
    assert "--resume=<the run folder under runs/>" in capsys.readouterr().err
