"""One run of a sweep in its own Python process: the process, its timeout, its peak memory, and the
fields of its record that the run decides."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from datetime import datetime
from pathlib import Path

import yaml

from recbole_sae import protocol, runfiles, runlock
from recbole_sae.benchmark.spec import PACKAGE_ROOT, RunSpec, run_folder_name
from recbole_sae.errors import FinishedRunError, RecboleSAEError
from recbole_sae.fileio import write_json_atomic


def known_model(name: str) -> bool:
    """Whether ``name`` is a plugin model (installed or not) or a RecBole model."""
    from recbole_sae import registry

    return name in registry.PLUGIN_MODELS or name.lower() in registry.recbole_model_modules()


def installed_plugins() -> str:
    """The plugin models of this installation, as text for error messages."""
    from recbole_sae import registry

    return ", ".join(registry.plugin_model_names()) or "none installed"


def model_problem(name: str) -> str | None:
    """Why ``name`` cannot run in this installation, or None when it can."""
    from recbole_sae import registry

    if name in registry.plugin_model_names():
        return None
    if name in registry.PLUGIN_MODELS:
        module = registry.PLUGIN_MODELS[name].split(":")[0]
        return f"plugin model '{name}' is not in this installation (module {module} not found)"
    if name.lower() in registry.recbole_model_modules():
        return None
    return f"unknown model '{name}': not a plugin model ({installed_plugins()}) and not a RecBole model"


def _peak_rss_mb(maxrss: float) -> float:
    # ru_maxrss is in kilobytes on Linux, in bytes on macOS
    return round(maxrss / (2**20 if sys.platform == "darwin" else 2**10), 1)


def check_stop(stop: threading.Event | None) -> None:
    """Raise KeyboardInterrupt once ``stop`` is set: the sweep was interrupted."""
    if stop is not None and stop.is_set():
        raise KeyboardInterrupt("sweep interrupted")


def _wait(proc: subprocess.Popen, timeout: float | None, stop: threading.Event | None = None):
    """Wait for ``proc``: ``(exit code, peak RSS in MB or None, timed out)``; the child's own rusage.

    Raises KeyboardInterrupt once ``stop`` is set (the caller kills ``proc``).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    if not hasattr(os, "wait4"):  # not a POSIX system: no per-child rusage
        while True:
            try:
                return proc.wait(timeout=0.1), None, False
            except subprocess.TimeoutExpired:
                check_stop(stop)
                if deadline is not None and time.monotonic() > deadline:
                    proc.kill()
                    return proc.wait(), None, True
    timed_out = False
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        check_stop(stop)
        if deadline is not None and time.monotonic() > deadline:
            proc.kill()
            pid, status, usage = os.wait4(proc.pid, 0)
            timed_out = True
            break
        time.sleep(0.1)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, _peak_rss_mb(usage.ru_maxrss), timed_out


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _environment(threads: int | None) -> dict:
    """The run process's environment: this package first on its path, output unbuffered, and
    ``threads`` (when set) as the thread count of OpenMP and MKL."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(PACKAGE_ROOT), env.get("PYTHONPATH", "")] if p)
    env["PYTHONUNBUFFERED"] = "1"
    if threads:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[name] = str(threads)
    return env


def _write_spec(spec: RunSpec, path: Path, threads: int | None) -> None:
    """What the run process runs, for :func:`run_one`."""
    path.write_text(
        json.dumps(
            {
                "model": spec.model,
                "dataset": spec.dataset,
                "config_files": spec.config_files or None,
                # a fixed folder per run key: a run killed mid-training continues there when the sweep runs again
                "config_dict": {**spec.overrides, "run_name": run_folder_name(spec)},
                "torch_threads": threads,
                "parent_pid": os.getpid(),  # the run process dies with this one
            }
        ),
        encoding="utf-8",
    )


def _run_process(spec_path: Path, out_path: Path, log_path: Path, env: dict, timeout, stop):
    """Start the run process and wait for it: ``(exit code, peak RSS in MB or None, timed out)``."""
    # this package first on the path, whatever the working directory holds
    bootstrap = (
        f"import sys; sys.path.insert(0, {str(PACKAGE_ROOT)!r}); "
        "from recbole_sae.benchmark.commands import cli; sys.exit(cli())"
    )
    command = [sys.executable, "-c", bootstrap, "run-one", str(spec_path), str(out_path)]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            return _wait(proc, timeout, stop)
        finally:
            if proc.returncode is None:  # interrupted: leave no orphan behind
                proc.kill()
                proc.wait()


def _ok_fields(child: dict) -> dict:
    """The fields of a finished run's record, from what its process wrote."""
    result = dict(child["result"])
    fields = dict(
        status="ok",
        error=None,
        protocol=result.pop("protocol", protocol.SEEN_KEPT),
        best_valid=result.pop("best_valid", None),
        test=result.pop("test", None),
        best_epoch=result.pop("best_epoch", None),
        epochs_run=result.pop("epochs_run", None),
        seconds_per_epoch=result.pop("seconds_per_epoch", None),
        curve=result.pop("curve", None),
        run_seconds=result.pop("seconds", None),
        device=result.pop("device", None),
        run_dir=result.pop("run_dir", None),
        config=child.get("config"),
    )
    # a run killed before and continued from its run folder: where it went on (run_seconds is this part's)
    if "resumed_at_epoch" in result:
        fields["resumed_at_epoch"] = result.pop("resumed_at_epoch")
    if child.get("replaced_run_dir"):
        fields["replaced_run_dir"] = child["replaced_run_dir"]
    for key in ("model", "dataset", "seed"):
        result.pop(key, None)
    fields["extra"] = result  # whatever the model's trainer added (SAE fidelity, ...)
    return fields


def _error(child: dict, code: int, timed_out: bool, timeout, log_path: Path) -> str:
    if timed_out:
        return f"run killed after the run_timeout of {timeout} s"
    if child.get("error"):
        return child["error"]
    reason = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
    return f"run process ended without a result ({reason}): {_tail(log_path, 5)}"


def execute_run(
    spec: RunSpec,
    logs_dir: Path,
    timeout: float | None = None,
    threads: int | None = None,
    stop: threading.Event | None = None,
) -> dict:
    """Run ``spec`` in a fresh Python process; the fields of its record that the run decides.

    ``threads`` caps the CPU threads of the run (torch, OpenMP, MKL); None keeps torch's default.
    Setting ``stop`` (from another thread) kills the process and raises KeyboardInterrupt here.
    """
    problem = model_problem(spec.model)
    if problem:
        return {"status": "error", "error": problem, "seconds": 0.0}

    logs_dir.mkdir(parents=True, exist_ok=True)
    log_path = logs_dir / f"{spec.model}-{spec.dataset}-seed{spec.seed}-{spec.key}.log"
    env = _environment(threads)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sweep-run-") as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        _write_spec(spec, spec_path, threads)
        code, peak_mb, timed_out = _run_process(spec_path, out_path, log_path, env, timeout, stop)
        child = {}
        if out_path.is_file():
            child = json.loads(out_path.read_text(encoding="utf-8"))
    seconds = round(time.perf_counter() - start, 2)

    fields = {
        "seconds": seconds,
        "peak_memory_mb": peak_mb if peak_mb is not None else child.get("peak_memory_mb"),
        "peak_gpu_memory_mb": child.get("peak_gpu_memory_mb"),
        "environment": child.get("environment"),
    }
    if child.get("status") == "ok" and code == 0:
        fields.update(_ok_fields(child))
        log_path.unlink(missing_ok=True)
        return fields
    error = _error(child, code, timed_out, timeout, log_path)
    fields.update(status="error", error=error, traceback=child.get("traceback"), log=str(log_path))
    return fields


def run_one(spec_path: str, out_path: str) -> int:
    """Child process: run one spec through the pipeline, write what happened to ``out_path``."""
    import resource

    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    runlock.die_with_parent(spec.get("parent_pid"))  # a sweep killed with SIGKILL takes its runs along
    out: dict = {"status": "error"}
    try:
        import torch

        if spec.get("torch_threads"):
            torch.set_num_threads(int(spec["torch_threads"]))
        from recbole_sae.quick_start import environment, run_recbole_sae

        out["environment"] = {**environment(), "torch_threads": torch.get_num_threads()}
        try:
            result = run_recbole_sae(spec["model"], spec["dataset"], spec["config_files"], spec["config_dict"])
        except FinishedRunError as err:
            # a finished run of this key whose record is not in this results file (the sweep stopped
            # before recording it, the file was deleted, or another file is being filled): its result may
            # come from other code, so the run is done again and the old folder kept beside it
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            moved = f"{err.run_dir}.replaced-{stamp}"
            os.replace(err.run_dir, moved)
            out["replaced_run_dir"] = moved
            result = run_recbole_sae(spec["model"], spec["dataset"], spec["config_files"], spec["config_dict"])
        config_file = Path(result["run_dir"]) / runfiles.CONFIG
        if config_file.is_file():
            out["config"] = yaml.safe_load(config_file.read_text(encoding="utf-8"))
        out.update(status="ok", result=result)
    except Exception as err:  # recorded, not raised: the sweep goes on
        out["error"] = str(err) if isinstance(err, RecboleSAEError) else f"{type(err).__name__}: {err}"
        out["traceback"] = traceback.format_exc()[-4000:]
        traceback.print_exc()
    out["peak_memory_mb"] = _peak_rss_mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        out["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    write_json_atomic(out, out_path, default=str)
    return 0 if out["status"] == "ok" else 1
