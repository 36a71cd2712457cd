"""Paths a user gives mean the same wherever the code later runs.

A relative path (``RECBOLE_SAE_DATA=../shared/datasets``, ``--data_path=data``,
``--config_files=my.yaml``, ``--sae_run=runs/...``) is resolved once, against the working directory of
the caller, where it enters: the command line (:func:`resolve_cli_args`), importing the package
(:func:`anchor_environment`: the environment variables), and a :class:`recbole_sae.config.Config`
(:func:`resolve_config_paths`: the path keys of the resolved config, so that the run folder's
``config.yaml`` reloads from anywhere). Code that later changes the working directory (a test, a
notebook, a worker) still finds the same files.
"""

from __future__ import annotations

import os

# Environment variables that hold a path.
ENV_VARS = ("RECBOLE_SAE_DATA",)

# Config keys that hold a file or folder path.
PATH_KEYS = (
    "data_path",
    "checkpoint_dir",
    "resume",
    "sae_run",
    "sasrec_checkpoint",
    "text_embeddings",
    "intent_cache_dir",
)

# Command-line keys of the CLI and the sweep that hold a path (besides PATH_KEYS).
CLI_PATH_KEYS = ("results", "report_dir")
# ``text_encoder`` is a transformers model id or a local folder: only an existing folder is resolved.
MAYBE_PATH_KEYS = ("text_encoder", "sweep")


def absolute(value: str, base: str | None = None) -> str:
    """``value`` as an absolute path (``~`` expanded), relative paths taken from ``base`` (default: cwd)."""
    path = os.path.expanduser(str(value))
    if not os.path.isabs(path):
        path = os.path.join(base or os.getcwd(), path)
    return os.path.normpath(path)


def anchor_environment(environ=None) -> None:
    """Make a relative path in :data:`ENV_VARS` absolute, against the current working directory."""
    environ = os.environ if environ is None else environ
    for name in ENV_VARS:
        value = environ.get(name)
        if value:
            environ[name] = absolute(value)


def _maybe_path(key: str, value: str) -> str:
    if key == "sweep":
        # a shipped sweep (sweep/quick.yaml) is found in the package when no such file is here
        candidates = [value] if value.endswith((".yaml", ".yml")) else [value, value + ".yaml"]
        return absolute(value) if any(os.path.isfile(c) for c in candidates) else value
    return absolute(value) if os.path.isdir(os.path.expanduser(value)) else value


def resolve_cli_args(args: dict) -> dict:
    """The ``--key=value`` pairs of a command line with every path made absolute (a copy)."""
    resolved = dict(args)
    for key, value in args.items():
        if not value or value in ("None", "~"):
            continue
        if key == "config_files":
            from recbole_sae.textlist import split_list

            resolved[key] = ",".join(absolute(f) for f in split_list(value))
        elif key in PATH_KEYS or key in CLI_PATH_KEYS:
            resolved[key] = absolute(value)
        elif key in MAYBE_PATH_KEYS:
            resolved[key] = _maybe_path(key, value)
    return resolved


def resolve_config_paths(config) -> None:
    """Make the path keys of a RecBole/recbole-sae Config absolute, in place."""
    final = config.final_config_dict
    for key in PATH_KEYS:
        value = final.get(key)
        if isinstance(value, str) and value.strip():
            final[key] = absolute(value)
    encoder = final.get("text_encoder")
    if isinstance(encoder, str) and encoder.strip():
        final["text_encoder"] = _maybe_path("text_encoder", encoder)
