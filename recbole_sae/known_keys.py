"""The config keys a run reads; a key nothing reads is an error that names the closest known key.

A key is known when RecBole declares it (its ``overall.yaml``, its dataset and quick-start yamls, the
model yamls it layers) or reads it in its data, trainer and evaluation code; when this project
declares it (``properties/overall.yaml``, ``properties/dataset/*.yaml``, ``properties/model/*.yaml``,
``properties/family/*.yaml``);
or when the command line itself reads it (``config_files``, ``sweep``, ...). A key on the command
line of a single run must also be one the chosen model reads: ``--sae_k=32`` on a SASRec would
change nothing. Keys in config files and config dicts may belong to any model, since sweeps and
shared yaml files give one set of settings to several models.

Free-form keys (read by your own model, trainer or callback) pass when listed in ``extra_keys``:
``--extra_keys=my_key,other_key`` on the command line, or ``extra_keys: [my_key]`` in a yaml file or
a config dict.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import re
from pathlib import Path

import yaml

from recbole_sae.errors import ConfigError
from recbole_sae.textlist import split_list

EXTRA_KEYS = "extra_keys"

# Keys of the command line (run_recbole_sae.py and sweeps) that are not in any yaml.
CLI_KEYS = frozenset(
    {
        "model",
        "dataset",
        "config_files",
        "run_dir",
        EXTRA_KEYS,
        "sweep",
        "results",
        "report_dir",
        "workers",
        "oom_retries",
        "models",
        "datasets",
        "seeds",
        "grid_points",
    }
)

PROPERTIES = Path(__file__).resolve().parent / "properties"
# Files of RecBole's properties folder that map dataset names to download addresses: no keys.
NOT_KEY_FILES = {"url.yaml", "kg_url.yaml"}
# config[KEY], config.get(KEY), KEY in config, final_config_dict[KEY] (KEY a quoted name)
READ_PATTERN = re.compile(
    r"""(?:config(?:_dict)?\[\s*|config\.get\(\s*)["'](\w+)["']|["'](\w+)["']\s+(?:not\s+)?in\s+(?:self\.)?config\b"""
)


def _recbole_root() -> Path:
    import recbole

    return Path(recbole.__file__).resolve().parent


def yaml_keys(path: Path) -> set[str]:
    if not path.is_file() or path.name in NOT_KEY_FILES:
        return set()
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return {str(k) for k in data} if isinstance(data, dict) else set()


def read_keys(path: Path) -> set[str]:
    """Keys a Python source file reads from a config."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return set()
    return {a or b for a, b in READ_PATTERN.findall(text)}


@functools.lru_cache(maxsize=1)
def generic_keys() -> frozenset:
    """Keys every model run knows: RecBole's and this project's, apart from per-model yamls."""
    root = _recbole_root()
    props = root / "properties"
    keys = set(CLI_KEYS) | yaml_keys(props / "overall.yaml")
    for folder in ("dataset", "quick_start_config"):
        for path in sorted((props / folder).glob("*.yaml")):
            keys |= yaml_keys(path)
    for path in root.rglob("*.py"):
        inside_models = "model" in path.relative_to(root).parts[:-1]
        if not inside_models or path.name in ("abstract_recommender.py", "layers.py", "loss.py", "init.py"):
            keys |= read_keys(path)
    keys |= yaml_keys(PROPERTIES / "overall.yaml")
    for path in sorted((PROPERTIES / "dataset").glob("*.yaml")):
        keys |= yaml_keys(path)
    # this project declares every key it reads in a yaml (tests/test_known_keys.py checks it)
    return frozenset(keys)


@functools.lru_cache(maxsize=1)
def model_yaml_keys() -> dict:
    """model name -> the keys of its yaml (RecBole's, then this project's: plugin models' keys), and
    of its family's yaml."""
    from recbole_sae.config import family_layer
    from recbole_sae.registry import PLUGIN_FAMILIES

    table: dict[str, set] = {}
    for folder in (_recbole_root() / "properties" / "model", PROPERTIES / "model"):
        for path in sorted(folder.glob("*.yaml")):
            table.setdefault(path.stem, set()).update(yaml_keys(path))
    for name in PLUGIN_FAMILIES:
        table.setdefault(name, set()).update(yaml_keys(family_layer(name, PROPERTIES)))
    return {name: frozenset(keys) for name, keys in table.items()}


def all_model_keys() -> frozenset:
    return frozenset().union(*model_yaml_keys().values())


def model_keys(model_class) -> set[str]:
    """Keys the model reads: the yamls of its class and base classes (and its ``parent_model``), and the
    keys its source files and its trainer's read."""
    tables = model_yaml_keys()
    keys: set[str] = set()
    classes = [c for c in inspect.getmro(model_class) if c.__module__.split(".")[0] in ("recbole", "recbole_sae")]
    names = [c.__name__ for c in classes]
    parent = getattr(model_class, "parent_model", None)
    if parent:
        names.append(parent)
    for name in names:
        keys |= tables.get(name, frozenset())
    sources = []
    for cls in classes:
        try:
            sources.append(Path(inspect.getsourcefile(cls)))
        except (TypeError, OSError):
            pass
    try:
        from recbole_sae.registry import PLUGIN_TRAINERS

        target = PLUGIN_TRAINERS.get(model_class.__name__)
        if target:
            import importlib.util

            spec = importlib.util.find_spec(target.split(":")[0])
            if spec and spec.origin:
                sources.append(Path(spec.origin))
    except ImportError:
        pass
    for path in sources:
        keys |= read_keys(path)
    return keys


def extra_keys(*sources) -> set[str]:
    """The keys listed in ``extra_keys`` of any of the dicts ``sources``."""
    keys = set()
    for source in sources:
        if isinstance(source, dict) and source.get(EXTRA_KEYS) is not None:
            keys |= {str(k) for k in split_list(source[EXTRA_KEYS])}
    return keys


def _closest(key: str, known) -> str:
    match = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    if not match:
        lowered = {k.lower(): k for k in known}
        match = [lowered[key.lower()]] if key.lower() in lowered else []
    return f" (did you mean '{match[0]}'?)" if match else ""


def _owners(key: str) -> list[str]:
    return sorted(name for name, keys in model_yaml_keys().items() if key in keys)


def describe_unknown(keys, known, where: str, model: str | None = None, hints: dict | None = None) -> str:
    """One message for the unknown ``keys`` (sorted), each with its closest known key or the models
    that read it, and what to do."""
    parts = []
    for key in sorted(keys):
        owners = _owners(key) if model else []
        if hints and key in hints:
            parts.append(f"'{key}' {hints[key]}")
        elif owners:
            more = f" and {len(owners) - 4} more models" if len(owners) > 4 else ""
            parts.append(f"key '{key}' is read by {', '.join(owners[:4])}{more}, not by {model}")
        else:
            parts.append(f"unknown key '{key}'{_closest(key, known)}")
    listing = ",".join(sorted(keys))
    keys_of = f"--help --model={model}" if model else "--help --model=MODEL"
    return (
        f"{'; '.join(parts)} {where}. Fix or drop it ({keys_of} lists the keys), or pass "
        f"--extra_keys={listing} to keep it on purpose"
    )


def check_config_keys(config) -> None:
    """Raise :class:`ConfigError` for a key of ``config``'s command line, files or dict that nothing reads
    (called once the Config has its model class and its internal layers)."""
    cmd = dict(getattr(config, "cmd_config_dict", None) or {})
    files = dict(getattr(config, "file_config_dict", None) or {})
    given = dict(getattr(config, "variable_config_dict", None) or {})
    allowed = extra_keys(cmd, files, given)
    known = generic_keys() | set(config.internal_config_dict) | allowed
    model = config.model
    own = model_keys(config.model_class) if inspect.isclass(config.model_class) else set()
    known_model = known | own
    unknown_cmd = {k for k in cmd if k not in known_model}
    loose = known_model | all_model_keys()
    unknown_rest = {k for k in {**files, **given} if k not in loose}
    if unknown_cmd:
        raise ConfigError(describe_unknown(unknown_cmd, known_model, "on the command line", model=model))
    if unknown_rest:
        where = "in the config files" if set(files) & unknown_rest else "in the config dict"
        raise ConfigError(describe_unknown(unknown_rest, loose, where))


def _grid_settings(grid: dict | None) -> dict:
    """The run settings a grid sets: a grid key whose values are all mappings only names its points
    (``dropout: [{hidden_dropout_prob: 0.2, ...}]``); the mappings' keys are the settings."""
    settings = {}
    for key, values in (grid or {}).items():
        if isinstance(values, list) and values and all(isinstance(v, dict) for v in values):
            settings.update({k: None for v in values for k in v})
        else:
            settings[key] = values
    return settings


def check_sweep_keys(sweep, sweep_keys=()) -> None:
    """Raise :class:`ConfigError` for a run setting of ``sweep`` (its ``config``, ``model_config``,
    ``dataset_config``, grids, or a ``--key=value`` of its command line) that nothing reads."""
    sources = {"the command line": sweep.cli_overrides, "config": sweep.config, "grid": _grid_settings(sweep.grid)}
    for section in ("model_config", "dataset_config", "model_grid"):
        for name, inner in (getattr(sweep, section) or {}).items():
            sources[f"{section}.{name}"] = _grid_settings(inner) if section == "model_grid" else inner
    allowed = extra_keys(*sources.values())
    known = generic_keys() | all_model_keys() | allowed
    hints = {k: "is a key of the sweep file, not of a run: set it in the sweep file" for k in sweep_keys}
    for where, settings in sources.items():
        unknown = {str(k) for k in (settings or {}) if str(k) not in known}
        if unknown:
            origin = (
                f"in {where} of the sweep {sweep.path}"
                if where != "the command line"
                else "on the sweep's command line"
            )
            raise ConfigError(describe_unknown(unknown, known, origin, hints=hints))


__all__ = ["EXTRA_KEYS", "check_config_keys", "check_sweep_keys", "generic_keys", "model_keys"]
