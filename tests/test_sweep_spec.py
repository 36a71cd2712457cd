"""Benchmark sweep files: loading and checking them, grids and plans, and the sweep command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from recbole_sae.benchmark import commands
from recbole_sae.benchmark import results as sweep_results
from recbole_sae.benchmark import spec as sweep_spec
from recbole_sae.errors import ConfigError


def test_workers_from_the_sweep_file_and_the_command_lines(sweep_file, monkeypatch, capsys):
    seen = []

    def fake_run_sweep(sweep, results=None, report_dir=None):
        seen.append(sweep)
        return {"errors": 0}

    monkeypatch.setattr(commands, "run_sweep", fake_run_sweep)
    assert sweep_spec.load_sweep(sweep_file()).workers == 1
    assert sweep_spec.load_sweep(sweep_file(workers=None)).workers == 1
    path = sweep_file(workers=3)
    assert sweep_spec.load_sweep(path).workers == 3

    from recbole_sae.cli import main

    assert main([f"--sweep={path}", "--workers=4", "--epochs=2"]) == 0
    assert seen[-1].workers == 4 and seen[-1].cli_overrides == {"epochs": 2}  # not a run override
    assert commands.cli(["sweep", str(path), "--workers", "2"]) == 0 and seen[-1].workers == 2
    assert commands.cli(["sweep", str(path)]) == 0 and seen[-1].workers == 3
    assert main([f"--sweep={path}", "--workers=0"]) == 2
    assert "error: --workers must be a positive integer (got 0)" in capsys.readouterr().err
    assert commands.cli(["sweep", str(path), "--workers", "two"]) == 2
    assert "--workers must be a positive integer (got 'two')" in capsys.readouterr().err
    assert len(seen) == 3

    assert seen[-1].oom_retries == 2  # the default
    assert main([f"--sweep={path}", "--oom_retries=0", "--epochs=2"]) == 0
    assert seen[-1].oom_retries == 0 and seen[-1].cli_overrides == {"epochs": 2}  # not a run override
    assert commands.cli(["sweep", str(path), "--oom-retries", "5"]) == 0 and seen[-1].oom_retries == 5
    assert sweep_spec.load_sweep(sweep_file(oom_retries=0)).oom_retries == 0
    assert main([f"--sweep={path}", "--oom_retries=-1"]) == 2
    assert "error: --oom_retries must be a non-negative integer (got -1)" in capsys.readouterr().err


def test_grid_points_and_plan(sweep_file):
    points = sweep_spec.grid_points(
        {"lr": [0.1, 0.01], "dropout": [{"hidden_dropout_prob": 0.2, "attn_dropout_prob": 0.2}]}
    )
    assert [label for label, _, _ in points] == ["lr=0.1,dropout=0.2", "lr=0.01,dropout=0.2"]
    assert points[1][2] == {"lr": 0.01, "hidden_dropout_prob": 0.2, "attn_dropout_prob": 0.2}
    assert sweep_spec.grid_points({}) == [("", {}, {})]

    sweep = sweep_spec.load_sweep(
        sweep_file(
            models=["SASRec", "GRU4Rec"],
            seeds=[1, 2],
            grid={"learning_rate": [0.1, 0.01]},
            model_grid={"GRU4Rec": {}},
            dataset_config={"tiny": {"hidden_size": 8}},
        ),
        overrides={"epochs": 3},
    )
    plan = sweep_spec.plan_runs(sweep)
    assert [(s.model, s.grid_label, s.seed) for s in plan] == [
        ("SASRec", "learning_rate=0.1", 1),
        ("SASRec", "learning_rate=0.1", 2),
        ("SASRec", "learning_rate=0.01", 1),
        ("SASRec", "learning_rate=0.01", 2),
        ("GRU4Rec", "", 1),
        ("GRU4Rec", "", 2),
    ]
    gru = plan[-1].overrides
    assert gru["embedding_size"] == 16 and gru["hidden_size"] == 8 and gru["epochs"] == 3 and gru["seed"] == 2
    assert len({s.key for s in plan}) == len(plan)


def test_shipped_sweeps_load(in_tmp):
    sizes = {}
    for name in ("ci", "quick", "full"):
        path = sweep_spec.resolve_sweep_path(f"sweep/{name}.yaml")
        assert path == sweep_spec.PROPERTIES / "sweep" / f"{name}.yaml"
        sweep = sweep_spec.load_sweep(path)
        sizes[name] = len(sweep_spec.plan_runs(sweep))
        assert sweep.workers == 1 and sweep.oom_retries == 2
    assert sizes == {"ci": 2, "quick": 6 * 2 * 2, "full": 8 * 2 * 3}
    full = sweep_spec.load_sweep(sweep_spec.resolve_sweep_path("full"))
    assert full.config["filter_seen"] is True
    # BERT4Rec trains on every training item in both profiles, with no schedule of its own in `full`
    assert full.model_config["BERT4Rec"] == {"mask_with_target": True}
    lr1e3 = sweep_spec.load_sweep(sweep_spec.resolve_sweep_path("full_lr1e-3"))
    assert lr1e3.model_config["BERT4Rec"] == {"train_batch_size": 256, "epochs": 60, "mask_with_target": True}
    # the published schedule: 200 epochs validated every 5, never stopped early (every model)
    schedule = {k: full.config[k] for k in ("learning_rate", "epochs", "eval_step", "stopping_step")}
    assert schedule == {"learning_rate": 0.0005, "epochs": 200, "eval_step": 5, "stopping_step": 200}
    backbone = sweep_spec.load_sweep(sweep_spec.resolve_sweep_path("backbone"))
    assert len(sweep_spec.plan_runs(backbone)) == 2 and backbone.config["full_sequence_batch"] == "windows"


def test_bad_sweep_files(sweep_file, capsys):
    with pytest.raises(ConfigError, match="sweep file not found: nowhere.yaml"):
        sweep_spec.resolve_sweep_path("nowhere.yaml")
    with pytest.raises(ConfigError, match="unknown key\\(s\\) epochs"):
        sweep_spec.load_sweep(sweep_file(epochs=3))
    with pytest.raises(ConfigError, match="'models' must be a non-empty list"):
        sweep_spec.load_sweep(sweep_file(models=[]))
    with pytest.raises(ConfigError, match="baseline 'BERT4Rec' is not among the models"):
        sweep_spec.load_sweep(sweep_file(baseline="BERT4Rec"))
    with pytest.raises(ConfigError, match="grid key 'learning_rate' needs a non-empty list"):
        sweep_spec.load_sweep(sweep_file(grid={"learning_rate": 0.1}))
    for bad in (0, -2, 1.5, True, "4"):
        with pytest.raises(ConfigError, match="'workers' must be a positive integer"):
            sweep_spec.load_sweep(sweep_file(workers=bad))
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(ConfigError, match="'oom_retries' must be a non-negative integer"):
            sweep_spec.load_sweep(sweep_file(oom_retries=bad))

    from recbole_sae.cli import main

    assert main(["--sweep=nowhere.yaml"]) == 2
    assert "error: sweep file not found: nowhere.yaml" in capsys.readouterr().err
    assert commands.main({"sweep": str(sweep_file(models=[]))}) == 2
    assert "error: " in (err := capsys.readouterr().err) and "'models' must be a non-empty list" in err


def test_unknown_model_stops_the_sweep_before_any_run(in_tmp, capsys):
    """A typo in the models used to run the sweep and record one failed run per seed."""
    results = in_tmp / "typo.jsonl"
    assert commands.main({"sweep": "sweep/ci.yaml", "results": str(results), "models": "SASRec,SASRecc"}) == 2
    err = capsys.readouterr().err
    assert "unknown model(s) SASRecc in the sweep's models" in err and "SASRecSAE" in err
    assert not results.exists()


def test_the_earlier_full_profile_keeps_the_keys_of_its_committed_runs():
    """`full_lr1e-3.yaml` plans the very runs measured with it, so the same command resumes or skips them."""
    path = sweep_spec.resolve_sweep_path("sweep/full_lr1e-3.yaml")
    sweep = sweep_spec.load_sweep(path)
    planned = {run.key for run in sweep_spec.plan_runs(sweep)}
    results = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
    for name in ("full_cpu_baselines.jsonl", "backbone_recipe.jsonl", "bert4rec_target_curve.jsonl"):
        records = sweep_results.read_results(results / name)
        # RecBole's BERT4Rec as RecBole trains it, before the profile's BERT4Rec trained with targets
        keys = {
            r["key"] for r in records if not (r["model"] == "BERT4Rec" and "mask_with_target" not in r["overrides"])
        }
        assert keys and keys <= planned, name
    assert sweep.config["stopping_step"] == 10 and "learning_rate" not in sweep.config
    # its BERT4Rec with targets for 12 epochs, the budget before its runs to patience: the same runs but for it
    twelve = sweep_spec.load_sweep(path, {"epochs": 12})
    planned = {run.key for run in sweep_spec.plan_runs(twelve) if run.model == "BERT4Rec"}
    keys = {r["key"] for r in sweep_results.read_results(results / "bert4rec_target.jsonl")}
    assert len(keys) == 3 and keys <= planned
