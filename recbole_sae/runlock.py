"""Run folders and results files: where a run folder may be, who made it, one writer at a time.

* A run folder lies under ``checkpoint_dir``: a ``run_name`` with ``..`` or an absolute path outside
  it is refused (:func:`run_dir_for_name`).
* The project marks every run folder it creates (:data:`recbole_sae.runfiles.MARKER`); an existing
  folder with neither the mark nor a run's files was not made by it and is refused rather than
  written into (:func:`claim`).
* One writer: a run holds an exclusive ``flock`` on ``<run folder>/.recbole-sae-run`` while it trains, a sweep on
  ``<results>.lock`` while it runs (:class:`FileLock`). The kernel drops the lock when the holder
  dies, however it dies, so a stale lock file never blocks anything; a second process is refused with
  a message naming the holder.
* A run that fails leaves ``FAILED`` (its error) and only its log and config (:func:`mark_failed`).
* A process the sweep starts dies with the sweep (:func:`die_with_parent`, Linux), so a sweep killed
  with SIGKILL leaves no run training on beside the next one.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import shutil
import signal
import sys

from recbole_sae import runfiles
from recbole_sae.errors import ConfigError

# Files of a run folder written before the marker existed: a folder holding one is a run folder.
RUN_FILES = (runfiles.CONFIG, runfiles.LOG, runfiles.RESULT, runfiles.RESUME, runfiles.CHECKPOINT)


class LockedError(ConfigError):
    """A run folder or results file that another live process is writing."""


class FileLock:
    """An exclusive, non-blocking ``flock`` on ``path`` (created if missing), held until :meth:`release`
    or the end of the process. ``what`` names the guarded thing in the message; ``command`` (the
    command line that started the holder, if any) is written beside its pid for that message."""

    def __init__(self, path, what: str, command: str | None = None):
        self.path = os.fspath(path)
        try:
            self.file = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the lock's lifetime
        except OSError as err:
            raise ConfigError(
                f"cannot write the lock {self.path} of {what} ({err.strerror or err}): choose a place you can write to"
            ) from None
        try:
            fcntl.flock(self.file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.file.seek(0)
            holders = [line for line in self.file.read().splitlines() if line.startswith("pid ")]
            holder = holders[-1] if holders else "another process"
            self.file.close()
            raise LockedError(
                f"{what} is in use by {holder}: two writers would corrupt it. Wait for that process to end "
                "(or stop it) and run the command again"
            ) from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(f"pid {os.getpid()} ({command[:300]})\n" if command else f"pid {os.getpid()}\n")
        self.file.flush()

    def release(self) -> None:
        if not self.file.closed:
            fcntl.flock(self.file.fileno(), fcntl.LOCK_UN)
            self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def lock_run_dir(run_dir, command: str | None = None) -> FileLock:
    return FileLock(os.path.join(run_dir, runfiles.MARKER), f"the run folder {run_dir}", command)


def lock_results(results_path, command: str | None = None) -> FileLock:
    path = os.fspath(results_path)
    return FileLock(f"{path}.lock", f"the results file {path}", command)


def run_dir_for_name(checkpoint_dir, run_name) -> str:
    """The folder of ``run_name`` under ``checkpoint_dir``; a name that leads outside it is an error."""
    base = os.path.realpath(os.path.expanduser(str(checkpoint_dir)))
    path = os.path.realpath(os.path.join(base, os.path.expanduser(str(run_name))))
    if path == base or os.path.commonpath([base, path]) != base:
        raise ConfigError(
            f"run_name={run_name} leads to {path}, outside checkpoint_dir {base}: give a folder name "
            "without '..' (an absolute path only inside checkpoint_dir), or set --checkpoint_dir"
        )
    return path


def made_by_project(run_dir) -> bool:
    return any(os.path.exists(os.path.join(run_dir, name)) for name in (runfiles.MARKER, *RUN_FILES))


def claim(run_dir) -> str:
    """Create ``run_dir`` with the project's mark, or check that an existing one is a run folder
    (marked, holding a run's files, or empty); anything else is refused, never written into."""
    if os.path.exists(run_dir):
        if not os.path.isdir(run_dir):
            raise ConfigError(f"{run_dir} is a file, not a run folder: choose another run_name")
        if os.listdir(run_dir) and not made_by_project(run_dir):
            raise ConfigError(
                f"{run_dir} exists and was not made by recbole-sae (no {runfiles.MARKER}, no run files): it is "
                "left alone; choose another run_name (or checkpoint_dir)"
            )
    marker = os.path.join(run_dir, runfiles.MARKER)
    try:
        os.makedirs(run_dir, exist_ok=True)
        if not os.path.exists(marker):
            with open(marker, "w", encoding="utf-8") as f:
                f.write("a run folder of recbole-sae\n")
    except OSError as err:  # checkpoint_dir is a file, read-only, or under a missing system folder
        raise ConfigError(
            f"cannot make the run folder {run_dir} ({err.strerror or err}): pass a --checkpoint_dir you can write to"
        ) from None
    return run_dir


# What a failed run's folder keeps: its log and config (and the project's own mark and lock).
KEPT_WHEN_FAILED = (runfiles.LOG, runfiles.CONFIG, runfiles.FAILED, runfiles.MARKER)
# Kept too when the failure was not bad input (a crash, running out of memory): what a rerun resumes from.
KEPT_TO_RESUME = (runfiles.RESUME, runfiles.CHECKPOINT)


def mark_failed(run_dir, error: BaseException, resumable: bool) -> None:
    """Write the error to ``FAILED`` and remove the rest of the run's output (``model.pth``, reports);
    ``resumable``: keep ``resume.pth`` and ``model.pth`` so that running the same command again continues."""
    keep = set(KEPT_WHEN_FAILED) | (set(KEPT_TO_RESUME) if resumable else set())
    for name in os.listdir(run_dir):
        if name in keep:
            continue
        path = os.path.join(run_dir, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.remove(path)
    with open(os.path.join(run_dir, runfiles.FAILED), "w", encoding="utf-8") as f:
        f.write(f"{type(error).__name__}: {error}\n")


def clear_failed(run_dir) -> None:
    """A run started again in a folder of a failed one: the old FAILED no longer applies."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(run_dir, runfiles.FAILED))


PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int | None) -> None:
    """Called first thing in a process the sweep started: ask Linux to SIGKILL it when the sweep dies;
    if the sweep (``parent_pid``) is already gone, end now. A no-op elsewhere (the run folder's lock
    still keeps a restarted sweep from training beside a survivor)."""
    if not parent_pid or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != int(parent_pid):  # the sweep died before the request was in place
        os._exit(1)
