"""Checkpoints and resume states that load without running code.

A file written by ``torch.save`` is a pickle; loading a pickle may call any function the file
names. This project therefore writes only what ``torch.load(weights_only=True)`` accepts: tensors,
dicts, lists, tuples, numbers, strings and None. RecBole's trainer pickles its ``Config`` object
into ``model.pth``; here the config is stored as a plain dict of its resolved values (enums by
name, the device as text) and :func:`restore_config` builds a RecBole config back from it.

Every load is weights-only. A checkpoint that needs more (one written by RecBole itself, or by an
older version of this project) is refused with a message that says why, unless the caller passes
``trust=True`` (the ``trust_checkpoint`` key): then it is unpickled in full, which runs whatever
code the file carries; do that only for files whose origin you trust.
"""

from __future__ import annotations

import enum
import os
import pickletools
import zipfile
from collections import OrderedDict

import numpy as np
import torch

from recbole_sae.errors import CheckpointMismatchError
from recbole_sae.fileio import write_atomic

# Marks a file written by this module (and the version of its layout).
FORMAT_KEY, FORMAT = "format", "recbole-sae/1"
# Config keys RecBole derives from the model class, the metrics and the machine: not stored as they
# are (enums, a torch.device) but rebuilt by restore_config.
DERIVED_KEYS = ("MODEL_TYPE", "MODEL_INPUT_TYPE", "eval_type", "device")
TRUST_HINT = (
    "set trust_checkpoint: True (--trust_checkpoint=True) to unpickle it anyway, only if you trust where the "
    "file came from: unpickling can run any code the file carries"
)


def plain(value):
    """``value`` as types that load weights-only: numpy to tensors / Python numbers, enums by name,
    a RecBole config as the plain dict of its values, anything else unknown as its text."""
    if isinstance(value, np.generic):  # before float: numpy's float64 is a float subclass
        return value.item()
    if isinstance(value, enum.Enum):  # before int: an IntEnum is an int subclass
        return value.name
    if isinstance(value, torch.Tensor) or value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if hasattr(value, "final_config_dict"):  # a RecBole Config
        return plain_config(value)
    if isinstance(value, OrderedDict):
        return OrderedDict((k, plain(v)) for k, v in value.items())
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(plain(v) for v in value)
    if isinstance(value, (list, set, frozenset)):
        return [plain(v) for v in value]
    return str(value)


def plain_config(config) -> dict:
    """A RecBole config's resolved values as a plain dict (enums by name, the device as text)."""
    values = getattr(config, "final_config_dict", config)
    return {str(key): plain(value) for key, value in values.items()}


def _loadable(value) -> bool:
    """Whether ``value`` loads weights-only as it is (tensors, Python scalars, containers of them)."""
    if isinstance(value, (np.generic, enum.Enum)):
        return False
    if isinstance(value, torch.Tensor) or value is None or isinstance(value, (bool, int, float, str, bytes)):
        return True
    if isinstance(value, dict):
        return all(_loadable(k) and _loadable(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_loadable(v) for v in value)
    return False


def loadable_other_parameter(other):
    """A model's ``other_parameter()`` without the entries that would not load weights-only as they are
    (a submodule, whose weights the state dict holds anyway; numpy or scipy matrices, which models
    compute from the data when they are built): converting those would give the model wrong types."""
    if not isinstance(other, dict):
        return other if _loadable(other) else None
    return {key: value for key, value in other.items() if _loadable(value)}


def save(state, path) -> None:
    """Write ``state`` (made :func:`plain`) to ``path`` atomically: a crash leaves the old file."""
    if isinstance(state, dict) and "other_parameter" in state:
        state = {**state, "other_parameter": loadable_other_parameter(state["other_parameter"])}
    state = plain(state)
    if isinstance(state, dict):
        state[FORMAT_KEY] = FORMAT
    write_atomic(lambda tmp: torch.save(state, tmp), path)


def _weights_only_refusal(exc: Exception) -> bool:
    return "weights only load failed" in str(exc).lower()


def _holds_python_objects(path: str) -> bool:
    """Whether ``path`` is a well-formed torch archive whose pickle the weights-only loader refused:
    a checkpoint with Python objects, not a damaged file. The pickle is parsed, never executed."""
    try:
        with zipfile.ZipFile(path) as archive:
            name = next(n for n in archive.namelist() if n.endswith("data.pkl"))
            for _ in pickletools.genops(archive.read(name)):
                pass
    except Exception:  # noqa: BLE001 - not a zip, no pickle, a broken pickle: a damaged file
        return False
    return True


def load(
    path,
    map_location="cpu",
    trust: bool = False,
    what: str = "checkpoint",
    hint: str = "pass the model.pth of a finished run",
):
    """Load ``path`` weights-only; a RecBole config in a trusted pickle comes back as a plain dict.

    Raises :class:`CheckpointMismatchError` for a missing or unreadable file (its message ends with
    ``hint``), and for a pickle that needs more than weights-only loading unless ``trust`` is set
    (``trust=None``: trusting is not offered, ``hint`` is the way out).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointMismatchError(f"{what} not found: {path} ({hint})")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        if not trust and not (_weights_only_refusal(exc) and _holds_python_objects(path)):
            raise CheckpointMismatchError(
                f"cannot read the {what} {path} ({type(exc).__name__}: {_short(exc)}): it is truncated, "
                f"corrupt or not a torch file; {hint}"
            ) from None
        if not trust:
            raise CheckpointMismatchError(
                f"the {what} {path} was not loaded: it holds Python objects besides weights (as a checkpoint "
                "written by RecBole itself or by an older recbole-sae does), and unpickling them could run code; "
                + (hint if trust is None else TRUST_HINT)
            ) from None
        try:
            state = torch.load(path, map_location=map_location, weights_only=False)
        except Exception as exc2:  # noqa: BLE001
            raise CheckpointMismatchError(
                f"cannot read the {what} {path} ({type(exc2).__name__}: {_short(exc2)}); {hint}"
            ) from None
    if isinstance(state, dict) and hasattr(state.get("config"), "final_config_dict"):
        state["config"] = plain_config(state["config"])
    return state


def _short(exc: Exception) -> str:
    """The error's gist, without torch's advice to unpickle in full (that is what trust_checkpoint says)."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1].split("\n", 1)[0]
    return " ".join(text.split())[:300]


def restore_config(values: dict, overrides: dict | None = None):
    """A RecBole config (this project's :class:`~recbole_sae.config.Config`) holding ``values``, the
    plain dict :func:`plain_config` wrote, with ``overrides`` on top; the derived keys (model type,
    input type, evaluator type, device) are rebuilt, not read from the file. No yaml layer and no
    command line is read: the values are the run's own."""
    from recbole.utils import EvaluatorType, InputType

    from recbole_sae.config import Config, literal
    from recbole_sae.registry import get_model
    from recbole_sae.validate import check_settings

    overrides = {key: literal(value) for key, value in (overrides or {}).items()}  # as the command line's
    values = {**values, **overrides}
    values.pop(FORMAT_KEY, None)
    if not isinstance(values.get("model"), str) or not isinstance(values.get("dataset"), str):
        raise CheckpointMismatchError(
            "the checkpoint's config names no model and dataset: it is not a run's checkpoint"
        )
    config = Config.__new__(Config)
    config.compatibility_settings()
    config._init_parameters_category()
    config.model, config.dataset = values["model"], values["dataset"]
    config.model_class = get_model(config.model)
    config.internal_config_dict, config.external_config_dict = {}, dict(overrides)
    config.layer_files = []
    final = {k: v for k, v in values.items() if k not in DERIVED_KEYS}
    final["MODEL_TYPE"] = config.model_class.type
    input_type = getattr(config.model_class, "input_type", None)
    if input_type is None and values.get("MODEL_INPUT_TYPE") in InputType.__members__:
        input_type = InputType[values["MODEL_INPUT_TYPE"]]
    if input_type is not None:
        final["MODEL_INPUT_TYPE"] = input_type
    eval_type = values.get("eval_type")
    final["eval_type"] = EvaluatorType[eval_type] if eval_type in EvaluatorType.__members__ else EvaluatorType.RANKING
    use_gpu = bool(str(final.get("gpu_id") or "")) and torch.cuda.is_available()
    final["device"] = torch.device("cuda" if use_gpu else "cpu")
    # a run trained on several processes reloads in this one process
    final.update(single_spec=True, local_rank=0, nproc=1, world_size=-1)
    config.final_config_dict = final
    check_settings(config)
    return config
