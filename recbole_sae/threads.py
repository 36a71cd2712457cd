"""The ``threads`` setting: torch's CPU threads for one run.

``threads: N`` uses N threads. ``threads: ~`` (the default) takes ``$OMP_NUM_THREADS`` when it is set
(as a sweep sets it for each of its runs, from the sweep's ``torch_threads``), else half the CPUs
the machine reports, at least one (a run of N processes, ``--nproc=N``: the CPUs / N per process).
Torch's own default is one thread per physical core, which assumes the machine is idle: on a small
machine shared with other jobs, its threads wait for each other and for the other jobs, and fewer
threads run faster (BENCHMARKS.md). Half the CPUs is one thread on a 2-core machine, and on a machine
with hyper-threads it is about the physical cores torch would take anyway.
"""

from __future__ import annotations

import os

from recbole_sae.errors import ConfigError


def default_threads(processes: int = 1) -> int:
    """Torch threads of each process of a run whose ``threads`` is not set."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, (os.cpu_count() or 1) // max(2, int(processes)))


def resolve(value, processes: int = 1) -> int:
    """The thread count a ``threads`` value asks for (per process of a run of ``processes``); anything
    but ``~`` or a positive integer is an error."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "auto", "none")):
        return default_threads(processes)
    try:
        count = int(value)
    except (TypeError, ValueError):
        count = 0
    if isinstance(value, bool) or isinstance(value, float) and value != count or count < 1:
        raise ConfigError(f"threads must be a positive integer or ~ (the machine's default), got {value!r}")
    return count
