"""Sweeps on Ray (--backend=ray): settings, task resources, and on a local Ray the same records as the
local process pool, with resume after an interrupt."""

from __future__ import annotations

import _thread
import os
import socket
import sys
import threading
import time

import pytest

from recbole_sae import ray_backend
from recbole_sae.benchmark import commands, runner
from recbole_sae.benchmark import results as results_file
from recbole_sae.benchmark import spec as sweep_spec
from recbole_sae.errors import ConfigError

# ---------------------------------------------------------------------------------------------
# Settings and resources (no Ray needed)


def test_backend_settings_from_the_sweep_file_and_the_command_lines(sweep_file, monkeypatch, capsys):
    seen = []
    monkeypatch.setattr(
        commands, "run_sweep", lambda sweep, results=None, report_dir=None: seen.append(sweep) or {"errors": 0}
    )
    sweep = sweep_spec.load_sweep(sweep_file(backend="ray", ray_address="auto", gpus_per_run=0.5))
    assert (sweep.backend, sweep.ray_address, sweep.gpus_per_run) == ("ray", "auto", 0.5)
    path = sweep_file()  # (the same file, rewritten)
    sweep = sweep_spec.load_sweep(path)
    assert (sweep.backend, sweep.ray_address, sweep.gpus_per_run) == ("local", None, None)  # the pool by default

    from recbole_sae.cli import main

    assert main([f"--sweep={path}", "--backend=ray", "--ray_address=10.0.0.1:6379", "--gpus_per_run=0.25"]) == 0
    assert (seen[-1].backend, seen[-1].ray_address, seen[-1].gpus_per_run) == ("ray", "10.0.0.1:6379", 0.25)
    assert seen[-1].cli_overrides == {}  # not run overrides: the run keys stay those of the pool
    assert commands.cli(["sweep", str(path), "--backend", "ray", "--ray-address", "auto"]) == 0
    assert (seen[-1].backend, seen[-1].ray_address) == ("ray", "auto")

    assert main([f"--sweep={path}", "--backend=spark"]) == 2
    assert capsys.readouterr().err.startswith("error: --backend must be one of local, ray (got 'spark')")
    assert main([f"--sweep={path}", "--ray_address=auto"]) == 2
    assert "error: ray_address (auto) is for the Ray backend: add --backend=ray" in capsys.readouterr().err
    assert main([f"--sweep={path}", "--backend=ray", "--gpus_per_run=1.5"]) == 2
    assert "error: --gpus_per_run must be a share of one GPU between 0 and 1" in capsys.readouterr().err
    assert main([f"--sweep={sweep_file(backend='dask')}"]) == 2
    assert "'backend' must be one of local, ray (got 'dask')" in capsys.readouterr().err
    assert len(seen) == 2


def test_backend_ray_without_ray_says_what_to_install(sweep_file, in_tmp, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails as when it is not installed
    results = in_tmp / "r.jsonl"
    assert commands.main({"sweep": str(sweep_file()), "results": str(results), "backend": "ray"}) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --backend=ray needs ray, which could not be imported")
    assert 'pip install -e ".[distributed]"' in err and "Traceback" not in err and not results.exists()


def _nodes(*resources):
    return [{"Alive": True, "Resources": res} for res in resources] + [{"Alive": False, "Resources": {"CPU": 99}}]


def test_task_resources():
    sweep = sweep_spec.Sweep(name="s", path=None, models=["SASRec"], datasets=["d"], seeds=[1], workers=4)
    # no torch_threads: the cluster's CPUs shared by the workers, at most one node's; no GPU when there is none
    assert ray_backend.task_resources(sweep, _nodes({"CPU": 16}, {"CPU": 16})) == (8, 0.0)
    assert ray_backend.task_resources(sweep, _nodes({"CPU": 2})) == (1, 0.0)
    sweep.workers = 1
    assert ray_backend.task_resources(sweep, _nodes({"CPU": 16}, {"CPU": 16})) == (16, 0.0)  # one node's
    # GPUs shared by the workers, at most one each
    sweep.workers = 4
    assert ray_backend.task_resources(sweep, _nodes({"CPU": 16, "GPU": 1})) == (4, 0.25)
    assert ray_backend.task_resources(sweep, _nodes({"CPU": 16, "GPU": 8})) == (4, 1.0)
    sweep.torch_threads, sweep.gpus_per_run = 2, 0.5  # the sweep's own
    assert ray_backend.task_resources(sweep, _nodes({"CPU": 16, "GPU": 1})) == (2, 0.5)
    sweep.gpus_per_run = 2.0
    with pytest.raises(ConfigError, match="gpus_per_run is 2 but the largest node of the Ray cluster has 1 GPUs"):
        ray_backend.task_resources(sweep, _nodes({"CPU": 16, "GPU": 1}))


def test_a_task_on_a_node_without_the_sweeps_folder_is_an_error(tmp_path):
    spec = sweep_spec.RunSpec("SASRec", "tiny", 1, {}, "", {"seed": 1}, [], "abc")
    fields = ray_backend.run_on_node(vars(spec), str(tmp_path), None, 1, str(tmp_path / "gone"), {})
    assert fields["status"] == "error" and "is not on node" in fields["error"]
    assert fields["backend"] == "ray" and fields["node"] == socket.gethostname()


def test_a_task_runs_in_the_sweeps_folder_and_variables_and_puts_them_back(tmp_path, monkeypatch):
    monkeypatch.delenv("RECBOLE_SAE_X", raising=False)
    before = os.getcwd()
    with ray_backend._as_the_sweep(str(tmp_path), {"RECBOLE_SAE_X": "1"}):
        assert os.getcwd() == str(tmp_path) and os.environ["RECBOLE_SAE_X"] == "1"
    assert os.getcwd() == before and "RECBOLE_SAE_X" not in os.environ


# ---------------------------------------------------------------------------------------------
# On a local Ray (skipped without the distributed extra)


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray of 2 CPUs for the module (starting one takes seconds)."""
    try:
        ray = ray_backend.import_ray()
    except ConfigError as err:
        pytest.skip(str(err))
    ray_backend.start_local(ray, num_cpus=2)
    yield ray
    ray.shutdown()


def _run_processes(folder) -> list:
    """Run processes (``run-one``) working in ``folder``."""
    import psutil

    found = []
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        if "run-one" in (proc.info["cmdline"] or []) and proc.info["cwd"] == str(folder):
            found.append(proc)
    return found


MEASURED = ("best_valid", "test", "best_epoch", "epochs_run", "key", "model", "dataset", "seed", "overrides", "status")


def test_a_ray_sweep_records_what_the_pool_records_and_resumes_after_an_interrupt(
    local_ray, sweep_file, in_tmp, monkeypatch, ctrl_c
):
    path = sweep_file(seeds=[1, 2])
    for name in ("pool", "ray"):  # each its own run folders (checkpoint_dir is relative)
        (in_tmp / name).mkdir()
    monkeypatch.chdir(in_tmp / "pool")
    sweep = sweep_spec.load_sweep(path)
    sweep.workers = 2  # (both at once: the test's time; each run has its one thread as on Ray)
    pool = runner.run_sweep(sweep, in_tmp / "pool" / "r.jsonl", log=lambda message: None)
    assert pool["executed"] == 2 and pool["errors"] == 0

    monkeypatch.chdir(in_tmp / "ray")
    results, messages = in_tmp / "ray" / "r.jsonl", []
    sweep = sweep_spec.load_sweep(path)
    sweep.backend = "ray"

    def interrupt_when_running():
        deadline = time.monotonic() + 60
        while not _run_processes(in_tmp / "ray") and time.monotonic() < deadline:
            time.sleep(0.1)
        _thread.interrupt_main()

    def interrupt_run_2(message):  # Ctrl-C once the second run's process runs on Ray
        messages.append(message)
        if message.startswith("run 2/2 ") and " started " in message:
            threading.Thread(target=interrupt_when_running, daemon=True).start()

    with pytest.raises(KeyboardInterrupt):
        runner.run_sweep(sweep, results, log=interrupt_run_2)
    assert "on Ray on this machine (1 node, 2 CPUs, 0 GPUs; each run asks 1 CPUs, 0 GPU)" in messages[0]
    assert [r["seed"] for r in results_file.read_results(results)] == [1]  # the killed run is not recorded
    deadline = time.monotonic() + 20
    while _run_processes(in_tmp / "ray") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _run_processes(in_tmp / "ray")  # its process ended with its task

    messages.clear()
    again = runner.run_sweep(sweep, results, log=messages.append)
    assert (again["executed"], again["skipped"], again["errors"]) == (1, 1, 0)
    assert any(m.startswith("run 1/2 SASRec tiny seed=1: done before, skipped") for m in messages)
    assert any(m.startswith("run 2/2 SASRec tiny seed=2 finished, ok in ") for m in messages)

    by_pool = {r["key"]: r for r in results_file.read_results(in_tmp / "pool" / "r.jsonl")}
    on_ray = results_file.read_results(results)
    assert sorted(r["key"] for r in on_ray) == sorted(by_pool)  # the same run keys
    for record in on_ray:
        assert {k: record[k] for k in MEASURED} == {k: by_pool[record["key"]][k] for k in MEASURED}
        pooled = by_pool[record["key"]]
        assert record["test"]["ndcg@10"] > 0 and record["run_dir"].startswith(str(in_tmp / "ray"))
        folders = {k: record["config"][k] for k in ("run_dir", "checkpoint_dir")}  # (under ray/, not pool/)
        assert record["config"] == {**pooled["config"], **folders}  # the same resolved settings
        assert record["backend"] == "ray" and record["node"] == socket.gethostname()
        assert "backend" not in pooled
