"""Config layering for plugin and RecBole models.

Lowest to highest:

1. RecBole's defaults (its ``overall.yaml``, its model yaml if the model is RecBole's, its dataset
   yaml, its quick-start yaml for the model type);
2. the parent model's yaml from RecBole (e.g. ``SASRec.yaml`` under ``SASRecSAE``), named by the
   model class attribute ``parent_model``;
3. ``properties/overall.yaml`` of this project (the evaluation protocol);
4. ``properties/family/<family>.yaml``, the keys the models of a family share (a model's family is
   named in ``registry.PLUGIN_FAMILIES``: SASRecPlus, SASRecSAE and SAERec share ``full_sequence``);
5. ``properties/model/<Model>.yaml`` of this project;
6. ``properties/dataset/<dataset>.yaml`` of this project;
7. ``config_file_list`` (``--config_files=a.yaml,b.yaml``), in order;
8. ``config_dict``;
9. the command line's ``--key=value`` pairs, handed down by :mod:`recbole_sae.cli` as ``cmd_args``
   (RecBole's Config reads the process's arguments itself; this one never does).

Paths are found relative to this package, so it works from any working directory. The dataset
folder is found by :func:`recbole_sae.data.locate_dataset`.

No value runs code: RecBole turns command-line and ``config_dict`` strings into values with
``eval()`` and reads yaml with PyYAML's FullLoader; here strings are read by :func:`literal` (Python
literals only: numbers, strings, lists, dicts, tuples, True/False/None) and yaml files by a safe
loader (with RecBole's rule that ``1e-3`` is a float).
"""

from __future__ import annotations

import ast
import os
import re
import sys
from pathlib import Path

import yaml
from recbole.config import Config as RecBoleConfig

from recbole_sae import compat
from recbole_sae.data.headers import complete_dataset_settings
from recbole_sae.data.locate import BUNDLED, locate_dataset
from recbole_sae.errors import ConfigError
from recbole_sae.known_keys import check_config_keys
from recbole_sae.paths import resolve_config_paths
from recbole_sae.registry import PLUGIN_FAMILIES, get_model
from recbole_sae.textlist import split_list
from recbole_sae.validate import check_metric_names, check_settings

PROPERTIES = Path(__file__).resolve().parent / "properties"
RECBOLE_PROPERTIES = Path(sys.modules["recbole"].__file__).resolve().parent / "properties"

# What a string value may become (as in RecBole, which keeps the text when its eval gives another type).
LITERAL_TYPES = (str, int, float, list, tuple, dict, bool)


def literal(text):
    """A command-line or config-dict string as the value it spells, by Python's literal parser
    (never ``eval``): ``"5"`` -> 5, ``"[10, 20]"`` -> list, ``"true"``/``"false"`` -> bool, ``"None"`` ->
    None; anything else (``"ml-100k"``, an expression, a call) stays the text it is."""
    if not isinstance(text, str):
        return text
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        lowered = text.lower()
        return True if lowered == "true" else False if lowered == "false" else text
    return value if value is None or isinstance(value, LITERAL_TYPES) else text


class SafeYamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader (no Python objects from tags) with RecBole's float rule: ``1e-3`` and
    ``.5`` are floats (YAML 1.1 wants ``1.0e-3``)."""


SafeYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def read_config_file(path) -> dict:
    """One ``--config_files`` yaml as a dict; a malformed file, or one that is not a mapping of
    keys to values, is a :class:`ConfigError` that names the file."""
    try:
        with open(path, encoding="utf-8") as f:
            values = yaml.load(f, Loader=SafeYamlLoader)
    except yaml.YAMLError as err:
        detail = " ".join(str(err).split())[:300]
        raise ConfigError(
            f"config file {path} is not valid yaml ({detail}): fix it or drop it from --config_files"
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"config file {path} cannot be read ({err}): check --config_files") from None
    if values is None:
        return {}
    if not isinstance(values, dict) or not all(isinstance(k, str) for k in values):
        raise ConfigError(
            f"config file {path} holds a {type(values).__name__}, not 'key: value' lines: write one setting "
            "per line, e.g. 'epochs: 5'"
        )
    return values


# Command-line keys of the CLI that are not RecBole config keys.
CLI_ONLY_KEYS = {"config_files", "sweep", "run_dir"}


def family_layer(model: str, properties: Path | None = None) -> Path | None:
    """The yaml of the keys ``model`` shares with the other models of its family; None outside a family."""
    family = PLUGIN_FAMILIES.get(model)
    return (properties or PROPERTIES) / "family" / f"{family}.yaml" if family else None


def project_layers(model: str, model_class, dataset: str) -> list[Path]:
    """The yaml files this project layers over RecBole's defaults, lowest first."""
    layers = []
    parent = getattr(model_class, "parent_model", None)
    if parent:
        layers.append(RECBOLE_PROPERTIES / "model" / f"{parent}.yaml")
    layers.append(PROPERTIES / "overall.yaml")
    family = family_layer(model)
    if family:
        layers.append(family)
    layers.append(PROPERTIES / "model" / f"{model}.yaml")
    layers.append(PROPERTIES / "dataset" / f"{dataset}.yaml")
    return [path for path in layers if path.is_file()]


class Config(RecBoleConfig):
    """RecBole's Config with this project's layers, model registry and dataset lookup."""

    def __init__(self, model=None, dataset=None, config_file_list=None, config_dict=None, cmd_args=None, command=None):
        compat.apply()
        # the command line's --key=value pairs as typed (strings, split at the first '=' by the CLI), and
        # the command itself (for the run's log, lock and resume state; None when not run from the CLI)
        self.cmd_args = {key: value for key, value in (cmd_args or {}).items() if key not in CLI_ONLY_KEYS}
        self.command = command
        super().__init__(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict)
        resolve_config_paths(self)  # relative paths mean the same wherever the run goes on
        check_settings(self)  # before a run folder exists or any data is read

    def _init_device(self):
        if "local_rank" in self.final_config_dict:  # a process of a multi-process run (--nproc)
            from recbole_sae import distributed

            distributed.init_device(self.final_config_dict)
        else:
            super()._init_device()

    def _build_yaml_loader(self):
        return SafeYamlLoader

    def _convert_config_dict(self, config_dict):
        """Strings of the command line and of ``config_dict`` as literals (RecBole would ``eval`` them)."""
        return {key: literal(value) for key, value in config_dict.items()}

    def _load_config_files(self, file_list):
        values = {}
        for path in file_list or []:
            values.update(read_config_file(path))
        return values

    def _load_cmd_line(self):
        """The command line's layer: the ``cmd_args`` the CLI parsed (RecBole reads the process's arguments)."""
        return self._convert_config_dict(dict(self.cmd_args))

    def _get_model_and_dataset(self, model, dataset):
        if model is None:
            model = self.external_config_dict.get("model")
        if isinstance(model, str):
            model = get_model(model)  # plugin first, then RecBole; clear error when unknown
        return super()._get_model_and_dataset(model, dataset)

    def _load_internal_config_dict(self, model, model_class, dataset):
        super()._load_internal_config_dict(model, model_class, dataset)
        self.layer_files = [str(path) for path in project_layers(model, model_class, dataset)]
        for path in self.layer_files:
            added = self._update_internal_config_dict(path) or {}
            if Path(path).parent.name == "dataset":
                self.parameters["Dataset"] += [k for k in added if k not in self.parameters["Dataset"]]
        check_config_keys(self)  # a key nothing reads (a typo) is an error that names the closest key

    def _set_default_parameters(self):
        metrics = self.final_config_dict.get("metrics")
        if isinstance(metrics, str):  # --metrics=NDCG,Hit or [NDCG, Hit] (RecBole takes one name or a list)
            self.final_config_dict["metrics"] = split_list(metrics)
        check_metric_names(self.final_config_dict.get("metrics"))
        try:
            super()._set_default_parameters()  # RecBole's checks of metrics, topk, eval_args, loss
        except (ValueError, TypeError, NotImplementedError, RuntimeError) as err:
            raise ConfigError(f"{err}: fix that setting (--key=value or a config file)") from None
        if self.dataset not in BUNDLED:
            explicit = self.external_config_dict.get("data_path")
            self.final_config_dict["data_path"] = locate_dataset(self.dataset, explicit)
            complete_dataset_settings(self)  # no dataset yaml: the columns from the atomic files' headers

    def to_yaml(self) -> str:
        """The resolved config as yaml (plain types only), for the run folder."""
        plain = {}
        for key, value in sorted(self.final_config_dict.items()):
            plain[key] = _plain(value)
        return yaml.safe_dump(plain, sort_keys=True, allow_unicode=True)


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "name") and hasattr(value, "value"):  # Enum
        return value.name
    return str(value)


def split_config_files(value) -> list[str] | None:
    """``a.yaml,b.yaml`` or a list -> absolute paths; a missing file is a clear error."""
    if not value:
        return None
    files = [os.path.abspath(f) for f in split_list(value)]
    for f in files:
        if not os.path.isfile(f):
            raise ConfigError(f"config file not found: {f} (check --config_files)")
    return files
