"""Sweeps on Ray: each run of a sweep as a Ray task (``--backend=ray``), the results file kept by the sweep.

    python run_recbole_sae.py --sweep=FILE --backend=ray [--ray_address=auto|HOST:PORT] [--workers=N]
                              [--gpus_per_run=F]

The sweep process (the Ray driver) does what it does with the local process pool: it plans the runs,
skips those the results file holds as ``ok``, keeps up to ``workers`` runs in flight, appends each
record as its run finishes and writes the report. Only where a run executes changes: instead of a
process of this machine, a Ray task (on any node of the cluster) runs
:func:`recbole_sae.benchmark.process.execute_run`, which starts the run's own Python process there as it
does here, so that runs stay apart as before. The task asks Ray for the run's CPU threads and a share
of a GPU (:func:`task_resources`); Ray starts it once a node has them free. Without ``ray_address``
the sweep starts a Ray of its own on this machine and stops it at the end.

The task runs in the sweep's working directory and with its ``RECBOLE_SAE_*`` variables, so relative
paths (``data_path``, ``checkpoint_dir``, the results' logs folder) mean what they mean for the local
pool: on a cluster that folder (and the datasets) must be at the same path on every node, e.g. a
shared filesystem, which is also what lets a killed run resume on whichever node runs it next.

Records of Ray runs have two more fields: ``backend`` (``ray``) and ``node`` (the host that ran it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import socket
import warnings
from pathlib import Path

from recbole_sae.errors import ConfigError

BACKENDS = ("local", "ray")
# sweep settings (in the sweep file or on its command line) that choose where runs execute
SETTINGS = ("backend", "ray_address", "gpus_per_run")
INSTALL = 'pip install -e ".[distributed]"'
# variables of the sweep process that its runs see on every node (the rest is the node's environment)
PASSED_ENV_PREFIX = "RECBOLE_SAE_"


# --------------------------------------------------------------------------------------------
# Settings


def _what(key: str, where: str | None) -> str:
    return f"{where}: '{key}'" if where else f"--{key}"


def read_settings(values: dict, where: str | None = None) -> dict:
    """The backend settings among ``values`` (a sweep file's mapping, or the command line's values when
    ``where`` is None), checked; only those present."""
    settings = {}
    if values.get("backend") is not None:
        backend = str(values["backend"])
        if backend not in BACKENDS:
            raise ConfigError(f"{_what('backend', where)} must be one of {', '.join(BACKENDS)} (got {backend!r})")
        settings["backend"] = backend
    if values.get("ray_address") is not None:
        settings["ray_address"] = str(values["ray_address"])
    if values.get("gpus_per_run") is not None:
        settings["gpus_per_run"] = _gpu_share(values["gpus_per_run"], _what("gpus_per_run", where))
    return settings


def _gpu_share(value, what: str) -> float:
    """A GPU count Ray can schedule: a share of one GPU (0 to 1) or a whole number of GPUs."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0
    if not ok or (value > 1 and value != int(value)):
        raise ConfigError(
            f"{what} must be a share of one GPU between 0 and 1 (0.25: four runs per GPU) or a whole number "
            f"of GPUs (got {value!r})"
        )
    return float(value)


def check_settings(sweep) -> None:
    """Settings that contradict each other: a Ray address for the local pool would be ignored."""
    if sweep.ray_address and sweep.backend != "ray":
        raise ConfigError(
            f"ray_address ({sweep.ray_address}) is for the Ray backend: add --backend=ray, or drop ray_address"
        )


# --------------------------------------------------------------------------------------------
# Ray


def import_ray():
    """The ``ray`` module, or a ConfigError that says what to install."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ray 2.6's own import of the deprecated pkg_resources
            import ray
    except ImportError as err:
        raise ConfigError(
            f"--backend=ray needs ray, which could not be imported ({type(err).__name__}: {err}): install the "
            f"distributed extra, {INSTALL} (ray 2.6.3, the newest RecBole 1.2.1 accepts, with setuptools < 81)"
        ) from None
    return ray


QUIET = {"log_to_driver": False, "logging_level": logging.WARNING}


def start_local(ray, num_cpus: int | None = None) -> None:
    """Start a Ray on this machine for this process. Its workers, and so the runs, keep this process's
    priority: Ray's default lowers theirs by 15 (``worker_niceness``), and on a machine busy with
    anything else a run then crawled (many times slower)."""
    ray.init(num_cpus=num_cpus, include_dashboard=False, _system_config={"worker_niceness": 0}, **QUIET)


def _connect(ray, address: str | None) -> bool:
    """Connect to the cluster at ``address``, or start a local Ray; False when this process already was."""
    if ray.is_initialized():
        return False
    try:
        if address:
            ray.init(address=address, **QUIET)
        else:
            start_local(ray)
    except (ConnectionError, RuntimeError, ValueError) as err:
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise ConfigError(
            f"could not start or reach {where} ({type(err).__name__}: {err}); start a cluster with `ray start "
            "--head` (and `ray start --address=HEAD:6379` on the other nodes), or leave --ray_address out "
            "for a Ray on this machine"
        ) from None
    return True


def task_resources(sweep, nodes: list[dict]) -> tuple[int, float]:
    """(CPUs, GPUs) each run's task asks for, given the cluster's ``nodes`` (``ray.nodes()``).

    CPUs: the sweep's ``torch_threads``, else the cluster's CPUs shared by the ``workers``, at least 1
    and at most the largest node's (a task asks one node). They are also the run's threads. GPUs: the
    sweep's ``gpus_per_run``, else, when the cluster has GPUs, its GPUs shared by the workers, at most
    one per run (two workers on one GPU: half each); else none.
    """
    alive = [node.get("Resources", {}) for node in nodes if node.get("Alive", True)]
    cpus = [int(res.get("CPU", 0)) for res in alive] or [1]
    gpus = [res.get("GPU", 0.0) for res in alive] or [0.0]
    threads = sweep.torch_threads or sum(cpus) // sweep.workers
    threads = max(1, min(threads, max(cpus)))
    if sweep.gpus_per_run is not None:
        share = sweep.gpus_per_run
        if share > max(gpus):
            raise ConfigError(
                f"gpus_per_run is {share:g} but the largest node of the Ray cluster has {max(gpus):g} GPUs: "
                "no run could start"
            )
    else:
        share = min(1.0, sum(gpus) / sweep.workers) if sum(gpus) else 0.0
    return threads, share


class RayRuns:
    """Executes runs as Ray tasks; ``execute`` has the signature of :func:`~recbole_sae.benchmark.process.execute_run`."""

    def __init__(self, ray, cpus: int, gpus: float, where: str):
        self.ray, self.threads, self.gpus, self.where = ray, cpus, gpus, where
        # a crashed task (its node or worker gone) is recorded as an error, not retried behind the sweep's back
        self.task = ray.remote(max_retries=0)(run_on_node).options(num_cpus=cpus, num_gpus=gpus)

    def execute(self, spec, logs_dir: Path, timeout=None, threads=None, stop=None) -> dict:
        from recbole_sae.benchmark.process import check_stop

        env = {k: v for k, v in os.environ.items() if k.startswith(PASSED_ENV_PREFIX)}
        ref = self.task.remote(
            dataclasses.asdict(spec), str(Path(logs_dir).resolve()), timeout, threads, os.getcwd(), env
        )
        try:
            while not self.ray.wait([ref], timeout=0.2)[0]:
                check_stop(stop)
        except BaseException:  # interrupted: the task ends, and its run process with it
            self.ray.cancel(ref, force=True)
            with contextlib.suppress(Exception):  # its error, read: Ray does not log it as unhandled
                self.ray.get(ref, timeout=2)
            raise
        return self.ray.get(ref)


@contextlib.contextmanager
def open_backend(sweep):
    """Where the runs of ``sweep`` execute: None for the local process pool, else a :class:`RayRuns`
    (connected for the time of the sweep; a Ray this started is stopped at the end)."""
    if sweep.backend != "ray":
        yield None
        return
    ray = import_ray()
    started = _connect(ray, sweep.ray_address)
    try:
        nodes = [node for node in ray.nodes() if node.get("Alive", True)]
        cpus, gpus = task_resources(sweep, nodes)
        total = ray.cluster_resources()
        where = (
            f"Ray {sweep.ray_address or 'on this machine'} ({len(nodes)} node{'s' if len(nodes) != 1 else ''}, "
            f"{total.get('CPU', 0):g} CPUs, {total.get('GPU', 0):g} GPUs; each run asks {cpus} CPUs, {gpus:g} GPU)"
        )
        yield RayRuns(ray, cpus, gpus, where)
    finally:
        if started:
            ray.shutdown()


# --------------------------------------------------------------------------------------------
# On the node


@contextlib.contextmanager
def _as_the_sweep(cwd: str, env: dict):
    """Inside: the sweep's working directory and variables; the worker's own again after."""
    before_cwd, before_env = os.getcwd(), {k: os.environ.get(k) for k in env}
    os.chdir(cwd)
    os.environ.update(env)
    try:
        yield
    finally:
        os.chdir(before_cwd)
        for key, value in before_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_on_node(spec: dict, logs_dir: str, timeout, threads, cwd: str, env: dict) -> dict:
    """The Ray task: :func:`~recbole_sae.benchmark.process.execute_run` of ``spec`` in the sweep's folder."""
    from recbole_sae.benchmark.process import execute_run
    from recbole_sae.benchmark.spec import RunSpec

    node = socket.gethostname()
    if not os.path.isdir(cwd):
        return {
            "status": "error",
            "error": f"the sweep's working directory {cwd} is not on node {node}: run a sweep on a Ray "
            "cluster from a folder that every node has at the same path (a shared filesystem)",
            "seconds": 0.0,
            "backend": "ray",
            "node": node,
        }
    with _as_the_sweep(cwd, env):
        fields = execute_run(RunSpec(**spec), Path(logs_dir), timeout, threads)
    return {**fields, "backend": "ray", "node": node}
