"""Sweep files and their runs: reading and checking a sweep file, its grid, and each run's spec and key.

A run key is a hash of what decides the run's result (model, dataset, seed, settings, config files
and input files by content), so that a rerun of a sweep recognises its finished runs.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from recbole_sae import protocol, ray_backend, runfiles
from recbole_sae.errors import ConfigError
from recbole_sae.fileio import file_sha256

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # recbole_sae/
PACKAGE_ROOT = PACKAGE_DIR.parent
PROPERTIES = PACKAGE_DIR / "properties"
DEFAULT_RESULTS_DIR = Path("runs") / "sweeps"

# Allowed keys of a sweep file and what they hold (listed in the error for an unknown key).
SWEEP_KEYS = {
    "name": "sweep name (str)",
    "models": "model names (list)",
    "datasets": "dataset names (list)",
    "seeds": "random seeds (list of int)",
    "baseline": "model the report compares against (str)",
    "config_files": "yaml files under every run (list)",
    "config": "overrides for every run (dict)",
    "model_config": "per-model overrides (dict of dict)",
    "dataset_config": "per-dataset overrides (dict of dict)",
    "grid": "key -> list of values (dict)",
    "model_grid": "per-model grid replacing `grid` (dict of dict)",
    "run_timeout": "seconds before a run is killed (int)",
    "torch_threads": "CPU threads of each run (int)",
    "workers": "runs executed at once (int)",
    "oom_retries": "times a run out of GPU memory beside other runs is requeued (int >= 0)",
    "backend": "where runs execute: local or ray (str)",
    "ray_address": "the Ray cluster for backend ray: auto or HOST:PORT (str)",
    "gpus_per_run": "GPUs each Ray task asks for (float)",
}


@dataclass
class Sweep:
    name: str
    path: str | None
    models: list[str]
    datasets: list[str]
    seeds: list[int]
    baseline: str = "SASRec"
    config_files: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    model_config: dict = field(default_factory=dict)
    dataset_config: dict = field(default_factory=dict)
    grid: dict = field(default_factory=dict)
    model_grid: dict = field(default_factory=dict)
    run_timeout: float | None = None
    torch_threads: int | None = None
    workers: int = 1
    oom_retries: int = 2
    backend: str = "local"  # local process pool, or ray (recbole_sae.ray_backend)
    ray_address: str | None = None  # the Ray cluster; None = a Ray started for the sweep
    gpus_per_run: float | None = None  # GPUs of each Ray task; None = shared by the workers
    cli_overrides: dict = field(default_factory=dict)
    # only these grid points (labels such as "dropout=0.5"); None = all (--grid_points=A;B)
    grid_only: list[str] | None = None


@dataclass
class RunSpec:
    """One run of a sweep."""

    model: str
    dataset: str
    seed: int
    grid: dict
    grid_label: str
    overrides: dict
    config_files: list[str]
    key: str

    @property
    def title(self) -> str:
        text = f"{self.model} {self.dataset} seed={self.seed}"
        return f"{text} [{self.grid_label}]" if self.grid_label else text


def resolve_sweep_path(value: str) -> Path:
    """The sweep file: relative to the working directory, then to the package's properties folder."""
    path = Path(str(value)).expanduser()
    names = [path] if path.suffix in (".yaml", ".yml") else [path, path.with_name(path.name + ".yaml")]
    candidates = []
    for name in names:
        if name.is_absolute():
            candidates.append(name)
        else:
            candidates += [Path.cwd() / name, PROPERTIES / name, PACKAGE_DIR / name]
            candidates.append(PROPERTIES / "sweep" / name)
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    shipped = sorted(p.stem for p in (PROPERTIES / "sweep").glob("*.yaml"))
    looked = ", ".join(dict.fromkeys(str(c) for c in candidates))
    raise ConfigError(
        f"sweep file not found: {value} (looked at {looked}). "
        f"Shipped sweeps: {', '.join(f'sweep/{s}.yaml' for s in shipped)}"
    )


def _names(data: dict, key: str, where: str) -> list[str]:
    value = data.get(key)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: '{key}' must be a non-empty list (got {value!r})")
    if not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(f"{where}: '{key}' must list names (strings), got {value!r}")
    duplicates = sorted({v for v in value if value.count(v) > 1})
    if duplicates:
        raise ConfigError(f"{where}: '{key}' lists {', '.join(duplicates)} more than once")
    return [v.strip() for v in value]


def _mapping(data: dict, key: str, where: str, nested: bool = False) -> dict:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: '{key}' must be a mapping (got {type(value).__name__})")
    if nested:
        for name, inner in value.items():
            if inner is None:
                value[name] = {}
            elif not isinstance(inner, dict):
                raise ConfigError(f"{where}: '{key}.{name}' must be a mapping (got {inner!r})")
    return value


def _check_grid(grid: dict, where: str) -> dict:
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: grid key '{key}' needs a non-empty list of values (got {values!r})")
    return grid


def positive_int(value, what: str, minimum: int = 1):
    """``value`` when it is an integer >= ``minimum`` (1 or 0); a ConfigError naming ``what`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive integer" if minimum == 1 else "a non-negative integer"
        raise ConfigError(f"{what} must be {kind} (got {value!r})")
    return value


def _read_sweep_file(path: Path, where: str) -> dict:
    """The sweep file's mapping, with no key outside :data:`SWEEP_KEYS`."""
    if not path.is_file():
        raise ConfigError(f"sweep file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{where}: not valid yaml: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: a sweep file is a mapping with keys {', '.join(SWEEP_KEYS)}")
    unknown = sorted(set(data) - set(SWEEP_KEYS))
    if unknown:
        allowed = "; ".join(f"{k}: {v}" for k, v in SWEEP_KEYS.items())
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}. Allowed keys: {allowed}")
    return data


def _seeds(data: dict, where: str) -> list[int]:
    seeds = data.get("seeds", [2020])
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
    ):
        raise ConfigError(f"{where}: 'seeds' must be a non-empty list of integers (got {seeds!r})")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{where}: 'seeds' repeats a seed: {seeds}")
    return list(seeds)


def _baseline(data: dict, models: list[str], where: str) -> str:
    if "baseline" in data:
        baseline = str(data["baseline"])
        if baseline not in models:
            raise ConfigError(f"{where}: baseline '{baseline}' is not among the models {models}")
        return baseline
    return "SASRec" if "SASRec" in models else models[0]


def _config_files(data: dict, path: Path, where: str) -> list[str]:
    """The sweep's ``config_files``, resolved relative to the sweep file, each checked to exist."""
    files = data.get("config_files") or []
    if isinstance(files, str):
        files = [files]
    config_files = []
    for f in files:
        full = (path.parent / str(f)).resolve()
        if not full.is_file():
            raise ConfigError(f"{where}: config file not found: {f} (relative to the sweep file: {full})")
        config_files.append(str(full))
    return config_files


def _execution(data: dict, where: str) -> dict:
    """The settings of how runs execute (not part of a run key): timeout, threads, workers, retries."""
    timeout = data.get("run_timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
        raise ConfigError(f"{where}: 'run_timeout' must be a positive number of seconds (got {timeout!r})")
    threads = data.get("torch_threads")
    if threads is not None:
        positive_int(threads, f"{where}: 'torch_threads'")
    workers = data.get("workers")
    workers = Sweep.workers if workers is None else positive_int(workers, f"{where}: 'workers'")
    oom_retries = data.get("oom_retries")
    oom_retries = Sweep.oom_retries if oom_retries is None else positive_int(oom_retries, f"{where}: 'oom_retries'", 0)
    return {"run_timeout": timeout, "torch_threads": threads, "workers": workers, "oom_retries": oom_retries}


def load_sweep(path, overrides: dict | None = None) -> Sweep:
    """Read and check a sweep file; ``overrides`` (from the command line) apply to every run."""
    path = Path(path)
    where = str(path)
    data = _read_sweep_file(path, where)
    models = _names(data, "models", where)
    datasets = _names(data, "datasets", where)
    seeds = _seeds(data, where)
    name = str(data.get("name") or path.stem)
    baseline = _baseline(data, models, where)
    config_files = _config_files(data, path, where)
    grid = _check_grid(_mapping(data, "grid", where), where)
    model_grid = _mapping(data, "model_grid", where, nested=True)
    for model, inner in model_grid.items():
        _check_grid(inner, f"{where}: model_grid.{model}")
    execution = _execution(data, where)
    return Sweep(
        name=name,
        path=str(path.resolve()),
        models=models,
        datasets=datasets,
        seeds=seeds,
        baseline=baseline,
        config_files=config_files,
        config=_mapping(data, "config", where),
        model_config=_mapping(data, "model_config", where, nested=True),
        dataset_config=_mapping(data, "dataset_config", where, nested=True),
        grid=grid,
        model_grid=model_grid,
        **execution,
        cli_overrides=dict(overrides or {}),
        **ray_backend.read_settings(data, where),
    )


def default_results_path(sweep: Sweep) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in sweep.name)
    return DEFAULT_RESULTS_DIR / f"{safe}.jsonl"


def parse_value(text: str):
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _compact(value) -> str:
    if isinstance(value, dict) and len(value) > 1 and len({_compact(v) for v in value.values()}) == 1:
        # {hidden_dropout_prob: 0.2, attn_dropout_prob: 0.2} -> 0.2; a one-key point keeps its key, so
        # {intent_personal: False} and {intent_public: False} stay two labels
        return _compact(next(iter(value.values())))
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


def grid_points(grid: dict) -> list[tuple[str, dict, dict]]:
    """``(label, point, overrides)`` for every point of the grid's cartesian product, in file order.

    ``point`` maps grid keys to the chosen values; ``overrides`` is what the point sets in the
    config (a mapping value sets all its keys). An empty grid has one point with label ``""``.
    """
    if not grid:
        return [("", {}, {})]
    keys = list(grid)
    points = []
    for values in itertools.product(*(grid[k] for k in keys)):
        point = dict(zip(keys, values))
        overrides = {}
        for key, value in point.items():
            if isinstance(value, dict):
                overrides.update(value)
            else:
                overrides[key] = value
        label = ",".join(f"{k}={_compact(v)}" for k, v in point.items())
        points.append((label, point, overrides))
    return points


@functools.lru_cache(maxsize=64)
def _digest_of(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(path)


def _file_digest(path) -> str:
    """SHA-256 of a file's bytes, read once per version of the file (a sweep plans many runs on the same
    config files and inputs)."""
    path = Path(path).resolve()
    stat = path.stat()
    return _digest_of(str(path), stat.st_size, stat.st_mtime_ns)


# Settings that name an input of the run: the key holds what the input holds, not where it lies.
INPUT_SETTINGS = ("text_embeddings", "sasrec_checkpoint", "sae_run")


def _input_digest(value):
    """``{"sha256": ...}`` of the file ``value`` names (of ``model.pth`` for a run folder), else ``value``
    itself (a missing input fails in the run, with its own message)."""
    if not isinstance(value, str) or not value:
        return value
    path = Path(value).expanduser()
    if path.is_dir():
        path = path / runfiles.CHECKPOINT
    if not path.is_file():
        return value
    return {"sha256": _file_digest(path)}


def _yaml_keys(folder: Path) -> set[str]:
    keys = set()
    for path in sorted(folder.glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if isinstance(data, dict):
            keys.update(str(k) for k in data)
    return keys


@functools.lru_cache(maxsize=1)
def plugin_only_settings() -> frozenset:
    """Settings that this project's model and model-family yamls declare and none of RecBole's yamls
    know: no RecBole model reads them."""
    import importlib.util

    ours = _yaml_keys(PROPERTIES / "model") | _yaml_keys(PROPERTIES / "family")
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        return frozenset()
    root = Path(list(spec.submodule_search_locations)[0]) / "properties"
    theirs = _yaml_keys(root)
    for folder in ("model", "dataset", "quick_start_config"):
        theirs |= _yaml_keys(root / folder)
    return frozenset(ours - theirs)


def key_settings(model: str, overrides: dict) -> dict:
    """The overrides as a run key sees them: inputs by content (:data:`INPUT_SETTINGS`), and for a
    RecBole model without the settings only this project's models read (:func:`plugin_only_settings`),
    so that ``--text_embeddings=FILE`` or ``--sae_k=32`` on a sweep does not make its baselines new runs."""
    from recbole_sae import registry

    plugin = model in registry.PLUGIN_MODELS
    dropped = frozenset() if plugin else plugin_only_settings()
    return {
        key: _input_digest(value) if key in INPUT_SETTINGS else value
        for key, value in overrides.items()
        if key not in dropped
    }


def run_protocol(overrides: dict, config_files=()) -> str:
    """The headline protocol of a run: ``filter_seen`` from its overrides, else from its config
    files (the last that sets it), else from the project's ``overall.yaml``."""
    value = overrides.get("filter_seen")
    if value is None:
        for path in [*reversed(list(config_files)), PROPERTIES / "overall.yaml"]:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
            if isinstance(data, dict) and "filter_seen" in data:
                value = data["filter_seen"]
                break
    return protocol.SEEN_REMOVED if parse_value(str(value)) is True else protocol.SEEN_KEPT


def run_key(model: str, dataset: str, seed: int, overrides: dict, config_files=()) -> str:
    """Identity of a run: the same key means the same model, data, seed and settings."""
    settings = key_settings(model, overrides)
    payload = {
        "model": model,
        "dataset": dataset,
        "seed": seed,
        "overrides": {k: v for k, v in settings.items() if k != "filter_seen"},
        # by content, so that the key does not depend on where the repository lies
        "config_files": [_file_digest(f) for f in config_files],
    }
    # the protocol that chooses the best epoch, however it is set; runs from before there was a
    # choice ranked with seen items kept and keep their keys
    if run_protocol(overrides, config_files) == protocol.SEEN_REMOVED:
        payload["protocol"] = protocol.SEEN_REMOVED
    text = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def run_folder_name(spec: RunSpec) -> str:
    """The run folder of a sweep run under ``checkpoint_dir``: fixed by its key, so that it can resume."""
    return f"{spec.model}-{spec.dataset}-seed{spec.seed}-{spec.key}"


def plan_runs(sweep: Sweep) -> list[RunSpec]:
    """All runs of a sweep: per dataset, per model, per grid point, per seed."""
    specs = []
    for dataset in sweep.datasets:
        for model in sweep.models:
            grid = sweep.model_grid.get(model, sweep.grid)
            for label, point, grid_overrides in grid_points(grid):
                if sweep.grid_only is not None and label not in sweep.grid_only:
                    continue
                for seed in sweep.seeds:
                    overrides = {
                        **sweep.config,
                        **sweep.model_config.get(model, {}),
                        **sweep.dataset_config.get(dataset, {}),
                        **grid_overrides,
                        **sweep.cli_overrides,
                        "seed": seed,
                    }
                    key = run_key(model, dataset, seed, overrides, sweep.config_files)
                    specs.append(
                        RunSpec(
                            model=model,
                            dataset=dataset,
                            seed=seed,
                            grid=point,
                            grid_label=label,
                            overrides=overrides,
                            config_files=list(sweep.config_files),
                            key=key,
                        )
                    )
    return specs
