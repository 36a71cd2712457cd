"""Loading a finished SASRecSAE run (``sae_run``): its folder, its checkpoint, its settings, its weights.

``SteerableSASRec`` always starts from such a run; ``SASRecSAE`` can (``--sae_run=``) to recompute
its reports on the SASRec and SAE of the run without training either again. The run's
architecture keys (``hidden_size``, ``n_layers``, every ``sae_*`` key, ...) replace the config's,
so the shapes always fit; the keys that shape the data must already agree, since RecBole builds
the data before the model.
"""

from __future__ import annotations

import os

from recbole_sae import compat, runfiles
from recbole_sae.errors import CheckpointMismatchError, ConfigError

RUN_MODEL = "SASRecSAE"
# Keys of the network and the SAE copied from the SASRecSAE run's config (plus every sae_* key).
ARCHITECTURE_KEYS = (
    "n_layers",
    "n_heads",
    "hidden_size",
    "inner_size",
    "hidden_dropout_prob",
    "attn_dropout_prob",
    "hidden_act",
    "layer_norm_eps",
    "initializer_range",
    "loss_type",
    "sdpa_attention",
    "train_mode",
)
# Keys that shape the data: they must equal the run's, since the data is built before the model.
DATA_KEYS = ("MAX_ITEM_LIST_LENGTH",)
# sae_* keys that name the run itself rather than describe its SAE: never copied.
NOT_COPIED = ("sae_run",)


def resolve_sae_run(path, user: str) -> tuple[str, str]:
    """``(run folder, checkpoint)`` of ``sae_run`` (a run folder or its ``model.pth``); ``user``
    is the model asking, for the messages."""
    if not path:
        raise ConfigError(
            f"{user} needs sae_run: the folder of a finished SASRecSAE run, e.g. "
            "--sae_run=runs/SASRecSAE-ml-100k-<time> (run python run_recbole_sae.py --model=SASRecSAE first)"
        )
    path = os.path.abspath(os.path.expanduser(str(path)))
    if os.path.isdir(path):
        run_dir, checkpoint = path, os.path.join(path, runfiles.CHECKPOINT)
    elif os.path.isfile(path):
        run_dir, checkpoint = os.path.dirname(path), path
    else:
        raise CheckpointMismatchError(
            f"sae_run {path} does not exist: pass the folder of a SASRecSAE run (its path is printed "
            "as run_dir at the end of python run_recbole_sae.py --model=SASRecSAE ...)"
        )
    if not os.path.isfile(checkpoint):
        raise CheckpointMismatchError(
            f"sae_run {run_dir} has no {runfiles.CHECKPOINT}: it is not a finished run; run SASRecSAE first"
        )
    return run_dir, checkpoint


def load_run_checkpoint(run_dir: str, checkpoint: str, user: str, trust: bool = False) -> dict:
    """The SASRecSAE checkpoint, after the checks that it is one and that its SAE was trained.
    It is loaded weights-only; ``trust`` (``trust_checkpoint``) lets a full pickle be unpickled.
    Its ``config`` is the plain dict of the run's settings."""
    state = compat.load_checkpoint(checkpoint, trust=trust)
    if not isinstance(state, dict) or "config" not in state or "state_dict" not in state:
        raise CheckpointMismatchError(
            f"{checkpoint} is not a RecBole/recbole-sae checkpoint (no config and state_dict)"
        )
    source = state["config"]["model"]
    if source != RUN_MODEL:
        raise CheckpointMismatchError(
            f"sae_run {checkpoint} holds a {source} model; {user} needs a {RUN_MODEL} run "
            f"(python run_recbole_sae.py --model={RUN_MODEL} --dataset=...), whose checkpoint has the SAE"
        )
    seen = state["state_dict"].get("sae.n_rows_seen")
    if not os.path.isdir(os.path.join(run_dir, runfiles.SAE_DIR)) or seen is None or int(seen) == 0:
        raise CheckpointMismatchError(
            f"the SASRecSAE run {run_dir} has no trained SAE (no sae/ folder or an untrained SAE in "
            f"{os.path.basename(checkpoint)}): the run did not finish; run SASRecSAE to the end first"
        )
    return state


def adopt_run_config(config, saved: dict, run_dir: str, extra_keys=()) -> dict:
    """Copy the run's architecture keys (and ``extra_keys``) from ``saved`` (the run's settings, a
    plain dict) into ``config``; check the keys that shape the data. Returns what was copied."""
    saved = getattr(saved, "final_config_dict", saved)
    if saved.get("dataset") != config["dataset"]:
        raise CheckpointMismatchError(
            f"the SASRecSAE run {run_dir} was trained on '{saved.get('dataset')}', this run is on "
            f"'{config['dataset']}': pass --dataset={saved.get('dataset')}"
        )
    for key in DATA_KEYS:
        if saved.get(key) != config[key]:
            raise ConfigError(
                f"the SASRecSAE run {run_dir} used {key}={saved.get(key)}, this run {key}={config[key]}: "
                f"pass --{key}={saved.get(key)} (the data is built before the model is loaded)"
            )
    keys = (
        list(ARCHITECTURE_KEYS)
        + list(extra_keys)
        + sorted(k for k in saved if k.startswith("sae_") and k not in NOT_COPIED)
    )
    copied = {}
    for key in keys:
        if key in saved:
            copied[key] = saved[key]
            config[key] = saved[key]
    return copied


def load_run_weights(model, state: dict, run_dir: str, checkpoint: str) -> None:
    """All the weights of the run's checkpoint into ``model`` (strict), with a clear error."""
    weights = state["state_dict"]
    emb = weights.get("item_embedding.weight")
    if emb is not None and emb.shape[0] != model.n_items:
        raise CheckpointMismatchError(
            f"the SASRecSAE run {run_dir} has {emb.shape[0] - 1} items, this dataset {model.n_items - 1}: "
            "use the same dataset with the same filtering as the run"
        )
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        detail = " ".join(str(err).split())[:600]
        raise CheckpointMismatchError(f"{checkpoint} does not fit {type(model).__name__}: {detail}") from None
