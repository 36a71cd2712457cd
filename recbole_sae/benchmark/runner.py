"""Running a sweep: the queue of its runs, the workers that execute them at once, requeues after
running out of GPU memory, interrupts, the progress lines, and the report at the end."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
import time
import traceback
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from datetime import datetime, timezone
from pathlib import Path

from recbole_sae import ray_backend, runlock
from recbole_sae.benchmark.process import execute_run
from recbole_sae.benchmark.report import write_report
from recbole_sae.benchmark.results import append_record, finished_keys, read_results
from recbole_sae.benchmark.spec import PACKAGE_ROOT, RunSpec, Sweep, default_results_path, plan_runs
from recbole_sae.benchmark.stats import SELECT_METRIC
from recbole_sae.errors import ConfigError

NOT_CODE = (":(exclude)*.jsonl", ":(exclude)*.md", ":(exclude)*.png")


def git_commit() -> tuple[str | None, bool | None]:
    """``(commit, dirty)`` of the repository holding this package, ``(None, None)`` outside git.

    ``dirty``: a tracked file other than results (``.jsonl``), reports (``.md``) and plots (``.png``) differs
    from the commit.
    """
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PACKAGE_ROOT, capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return None, None
        # results files, reports and plots do not change what runs: a sweep whose results file lies in the
        # repository would otherwise mark its own later runs dirty
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *NOT_CODE],
            cwd=PACKAGE_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
        dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
        return commit.stdout.strip() or None, dirty
    except (OSError, subprocess.SubprocessError):
        return None, None


# What torch and CUDA say when the GPU has no memory left: torch's OutOfMemoryError ("CUDA out of
# memory. Tried to allocate ..."), the CUDA runtime's "CUDA error: out of memory" (AcceleratorError)
# and a failed allocation of a library handle ("CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate").
GPU_OOM = re.compile(r"CUDA out of memory|CUDA error: out of memory|_STATUS_ALLOC_FAILED")


def is_gpu_oom(error: str | None) -> bool:
    """Whether a run's ``error`` text says that the GPU ran out of memory."""
    return bool(error) and GPU_OOM.search(error) is not None


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def run_threads(sweep: Sweep) -> int | None:
    """CPU threads of each run of ``sweep``.

    The sweep's ``torch_threads`` when set; otherwise, with several workers, an equal share of the
    CPU cores, ``max(1, os.cpu_count() // workers)``, so that the runs at once do not oversubscribe
    the CPU; otherwise None (the run's own ``threads`` setting, see :mod:`recbole_sae.threads`).
    """
    if sweep.torch_threads is not None:
        return sweep.torch_threads
    if sweep.workers > 1:
        return max(1, (os.cpu_count() or 1) // sweep.workers)
    return None


def time_left(durations: list[float], remaining: int, workers: int = 1) -> float | None:
    """Estimated seconds until ``remaining`` runs are done: mean duration * remaining / workers.

    No more workers than runs count (the last run takes its whole duration); None before any duration.
    """
    if not durations:
        return None
    if remaining <= 0:
        return 0.0
    return sum(durations) / len(durations) * remaining / min(workers, remaining)


def runs_alone(attempt: int, oom_retries: int) -> bool:
    """Whether attempt number ``attempt`` of a run (1 = first) must run with no other run beside it:
    the last retry after running out of GPU memory beside others, attempt ``oom_retries + 1``."""
    return attempt > 1 and attempt > oom_retries


class Terminated(KeyboardInterrupt):
    """SIGTERM reached the sweep: handled like Ctrl-C, so that the run processes are killed too."""


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """In the main thread: SIGTERM (``kill``, a batch system's preemption, the end of a session) raises
    :class:`Terminated` instead of ending the process at once, which left the run processes running
    on as orphans (and a rerun of the sweep would have run beside them, in the same run folders)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _check_outputs(results_path: Path, report_dir) -> None:
    """The results file's and the report's folders exist or are made, before any run starts: a folder
    as ``--results`` or a report folder under a file used to fail once every run had trained."""
    if results_path.is_dir():
        raise ConfigError(f"--results={results_path} is a folder: name a file, e.g. {results_path / 'results.jsonl'}")
    for option, folder in (("--results", results_path.parent), ("--report_dir", report_dir)):
        if folder is None:
            continue
        if Path(folder).is_file():
            raise ConfigError(f"{option}: {folder} is a file, not a folder: choose a folder")
        try:
            Path(folder).mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(
                f"{option}: cannot make the folder {folder} ({err.strerror or err}): choose one you can write to"
            ) from None


def run_sweep(sweep: Sweep, results=None, report_dir=None, log=None) -> dict:
    """:func:`run_sweep_locked` while holding the results file's lock: one sweep per results file (a
    second one is a :class:`~recbole_sae.runlock.LockedError`), so that no run is trained or recorded twice."""
    results_path = Path(results) if results else default_results_path(sweep)
    _check_outputs(results_path, report_dir)
    with runlock.lock_results(results_path), ray_backend.open_backend(sweep) as backend:
        return run_sweep_locked(sweep, results_path, report_dir, log, backend)


def run_sweep_locked(sweep: Sweep, results=None, report_dir=None, log=None, backend=None) -> dict:
    """Run (or resume) a sweep; append each run to ``results``; write the report at the end.

    With ``sweep.workers`` above 1, up to that many runs execute at once, each in a thread of a pool
    that waits on the run's process; this process alone appends to ``results``, one record at a time
    under a lock, as soon as each run finishes. An interrupt (Ctrl-C, or SIGTERM: :class:`Terminated`)
    kills the running processes.

    A run that fails with a GPU out-of-memory error (:func:`is_gpu_oom`) while other runs were
    executing is not recorded but put back at the end of the queue, at most ``sweep.oom_retries``
    times; the last retry (:func:`runs_alone`) starts only when no other run is executing, and no run
    starts beside it. Out of memory while it ran alone, or after its retries, it is recorded as an
    error. Every record holds its ``attempts``.

    ``backend`` (from :func:`recbole_sae.ray_backend.open_backend`) executes each run elsewhere: its
    ``execute`` replaces :func:`execute_run` and its ``threads`` :func:`run_threads`; None = here.
    """
    results_path = Path(results) if results else default_results_path(sweep)
    return SweepRun(sweep, results_path, log, backend).run(report_dir)


class SweepRun:
    """The state of one execution of a sweep: its plan, counters, the runs executing, and the lock
    that guards them, the results file and the log across the worker threads."""

    def __init__(self, sweep: Sweep, results_path: Path, log=None, backend=None):
        self.sweep, self.results_path, self.backend = sweep, results_path, backend
        self.log = log or (lambda message: print(message, flush=True))
        self.logs_dir = results_path.parent / f"{results_path.stem}-logs"
        self.plan = plan_runs(sweep)
        done = finished_keys(results_path)
        self.pending = [(n, spec) for n, spec in enumerate(self.plan, 1) if spec.key not in done]
        self.todo = len(self.pending)
        self.commit, self.dirty = git_commit()
        self.workers = sweep.workers
        self.threads = backend.threads if backend else run_threads(sweep)
        self.start = time.monotonic()
        self.lock = threading.Lock()  # guards the results file, the counters, `executing` and the log
        self.stop = threading.Event()  # set on an interrupt: running runs are killed and not recorded
        self.durations: list[float] = []
        self.executed = self.errors = 0
        # run key -> the most other runs that executed at once beside it so far, for the runs executing
        self.executing: dict[str, int] = {}

    def progress(self) -> str:
        left = time_left(self.durations, self.todo - self.executed, self.workers)
        return f"elapsed {_duration(time.monotonic() - self.start)} | left ~{_duration(left)}"

    def alone(self, attempt: int) -> bool:
        return runs_alone(attempt, self.sweep.oom_retries)

    def run(self, report_dir=None) -> dict:
        """Execute the pending runs, then write the report; the summary of the sweep."""
        plan, sweep = self.plan, self.sweep
        self.log(
            f"sweep {sweep.name}: {len(plan)} planned runs, {len(plan) - self.todo} done before; "
            f"{self.workers} worker{'s' if self.workers > 1 else ''}, {self.threads or 'default'} threads per run; "
            + (f"on {self.backend.where}; " if self.backend else "")
            + f"results -> {self.results_path}"
        )
        pending = {number for number, _ in self.pending}
        for number, spec in enumerate(plan, 1):
            if number not in pending:
                self.log(f"run {number}/{len(plan)} {spec.title}: done before, skipped")
        with _sigterm_as_interrupt():
            if self.workers == 1:
                for number, spec in self.pending:
                    self.attempt(number, spec)  # an interrupt reaches execute_run here, which kills its process
            else:
                self.run_pool()
        if self.logs_dir.is_dir() and not any(self.logs_dir.iterdir()):
            self.logs_dir.rmdir()  # logs are kept for failed runs only
        return self.finish(report_dir)

    def run_pool(self) -> None:
        """Up to ``workers`` runs at once, each in a thread waiting on its run; requeued runs go last."""
        queue = deque((number, spec, 1) for number, spec in self.pending)
        running: dict = {}  # future -> (number, spec, attempt)
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="sweep-run")
        try:
            while queue or running:
                # first come first started; a run on its last retry waits until no run executes,
                # and no run starts beside it
                while queue and len(running) < self.workers and not any(self.alone(a) for _, _, a in running.values()):
                    if self.alone(queue[0][2]) and running:
                        break
                    number, spec, attempt = queue.popleft()
                    running[pool.submit(self.attempt, number, spec, attempt)] = (number, spec, attempt)
                # a timeout, so that an interrupt is seen whichever thread it reached
                finished, _ = wait_futures(running, timeout=1.0, return_when=FIRST_COMPLETED)
                for future in finished:
                    number, spec, attempt = running.pop(future)
                    if future.result():  # attempt() records the errors of runs; this raises the sweep's own
                        queue.append((number, spec, attempt + 1))
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)  # no further run starts
            self.stop.set()  # each running run kills its process within 0.1 s and records nothing
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # the threads end soon after their processes

    def attempt(self, number: int, spec: RunSpec, attempt: int = 1) -> bool:
        """Execute and record one attempt of ``spec``; True when it is to be requeued instead."""
        head = f"run {number}/{len(self.plan)} {spec.title}"
        with self.lock:
            if self.stop.is_set():  # interrupted before this run began
                return False
            retry = ""
            if attempt > 1:
                retry = f", retry {attempt - 1}/{self.sweep.oom_retries}" + (", alone" if self.alone(attempt) else "")
            self.log(f"{head} started{retry} | {self.progress()}")
            for key in self.executing:
                self.executing[key] = max(self.executing[key], len(self.executing))
            self.executing[spec.key] = len(self.executing)
        began = time.perf_counter()
        try:
            execute = self.backend.execute if self.backend else execute_run
            fields = execute(spec, self.logs_dir, self.sweep.run_timeout, self.threads, self.stop)
        except Exception as err:  # recorded, not raised: the other runs go on
            fields = {
                "status": "error",
                "error": f"{type(err).__name__}: {err}",
                "traceback": traceback.format_exc()[-4000:],
                "seconds": round(time.perf_counter() - began, 2),
            }
        finally:
            with self.lock:
                others = self.executing.pop(spec.key)
        with self.lock:
            if self.stop.is_set():
                return False
            return self.record(head, spec, attempt, others, fields)

    def record(self, head: str, spec: RunSpec, attempt: int, others: int, fields: dict) -> bool:
        """(Under the lock.) Append the attempt's record, or requeue it: True when requeued."""
        sweep = self.sweep
        record = {
            "key": spec.key,
            "sweep": sweep.name,
            "sweep_file": sweep.path,
            "baseline": sweep.baseline,
            "model": spec.model,
            "dataset": spec.dataset,
            "seed": spec.seed,
            "grid": spec.grid,
            "grid_label": spec.grid_label,
            "overrides": spec.overrides,
            "config_files": spec.config_files,
            "git_commit": self.commit,
            "git_dirty": self.dirty,
            "workers": self.workers,
            "attempts": attempt,
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **fields,
        }
        if record["status"] != "ok" and others and attempt <= sweep.oom_retries and is_gpu_oom(record["error"]):
            verb = "run was" if others == 1 else "runs were"
            self.log(
                f"{head} out of GPU memory while {others} other {verb} executing; "
                f"requeued (retry {attempt}/{sweep.oom_retries}), "
                + ("will run alone" if self.alone(attempt + 1) else "will run again beside others")
            )
            return True
        append_record(self.results_path, record)
        self.executed += 1
        if fields["seconds"]:
            self.durations.append(fields["seconds"])
        if record["status"] == "ok":
            valid, test = record["best_valid"].get(SELECT_METRIC), record["test"].get(SELECT_METRIC)
            self.log(
                f"{head} finished, ok in {record['seconds']:.1f} s: valid {SELECT_METRIC}={valid}, "
                f"test {SELECT_METRIC}={test}, peak {record['peak_memory_mb']} MB | {self.progress()}"
            )
        else:
            self.errors += 1
            self.log(
                f"{head} finished, error in {record['seconds']:.1f} s | {self.progress()}: {record['error']}"
                + (f" (log: {record['log']})" if record.get("log") else "")
            )
        return False

    def finish(self, report_dir=None) -> dict:
        """Write the report of the whole sweep as far as the results file holds it; the summary."""
        sweep, plan = self.sweep, self.plan
        # a sweep run in parts (--models=, --seeds=) into one file gets one report of all its parts,
        # not of the last part alone
        keys = {spec.key for spec in plan}
        records = [r for r in read_results(self.results_path) if r.get("key") in keys or r.get("sweep") == sweep.name]
        report = write_report(
            records,
            Path(report_dir) if report_dir else self.results_path.parent,
            self.results_path.stem,
            baseline=sweep.baseline,
            title=f"Benchmark sweep: {sweep.name}",
            source=str(self.results_path),
        )
        skipped = len(plan) - len(self.pending)
        self.log(
            f"sweep {sweep.name} finished in {_duration(time.monotonic() - self.start)}: {self.executed} executed, "
            f"{skipped} skipped, {self.errors} failed; report {report['markdown']}"
            + (f", plot {report['plot']}" if report["plot"] else "")
        )
        return {
            "runs": len(plan),
            "executed": self.executed,
            "skipped": skipped,
            "errors": self.errors,
            "results": str(self.results_path),
            **report,
        }
