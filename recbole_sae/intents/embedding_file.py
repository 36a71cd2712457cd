"""Precomputed item embeddings in one ``.safetensors`` file, and the command that exports them.

The file holds one tensor ``embeddings`` ``[n, d]`` (float) and the safetensors metadata
``item_ids``, a JSON list of the ``n`` item tokens (the raw values of the dataset's item id field,
as strings) in row order, plus an optional ``model`` (free text: where the embeddings came from).
No pickle is involved in writing or reading it.

With ``text_embeddings: FILE`` SAERec takes its item embeddings from such a file instead of
encoding the item texts (:func:`dataset_item_embeddings`): every item of the dataset must have a
row, rows of items the dataset does not have (e.g. filtered out) are ignored.

Export, so that a machine with the text model writes the file for one without::

    recbole-sae export-embeddings --dataset=amazon-beauty --out=FILE [--key=value ...]

(:func:`recbole_sae.cli.export_main`; ``python -m recbole_sae.intents.embedding_file ...`` is the same.)

It loads the dataset as a run does (the project's config layers, ``--config_files`` and RecBole
``--key=value`` overrides), encodes the item texts with the configured ``text_encoder`` through
its cache, and writes the rows of the items ``1 .. item_num - 1``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Union

import torch

from recbole_sae.errors import ConfigError
from recbole_sae.sae.io import save_tensors

__all__ = ["save_item_embeddings", "load_item_embeddings", "dataset_item_embeddings", "export_item_embeddings", "main"]

EMBEDDINGS = "embeddings"
ITEM_IDS = "item_ids"
MODEL = "model"
EXPORT_COMMAND = "python -m recbole_sae.intents.embedding_file --dataset={dataset} --out=FILE"
PathLike = Union[str, os.PathLike]


def save_item_embeddings(
    path: PathLike, item_ids: Sequence, embeddings: torch.Tensor, model: Optional[str] = None
) -> Path:
    """Write ``embeddings`` [n, d] with their ``n`` item tokens (stored as strings) to ``path``."""
    ids = [str(token) for token in item_ids]
    if not isinstance(embeddings, torch.Tensor) or embeddings.ndim != 2 or not embeddings.is_floating_point():
        raise ValueError("embeddings must be a 2-d float tensor [n_items, dim]")
    if len(ids) != embeddings.shape[0]:
        raise ValueError(f"{len(ids)} item ids for {embeddings.shape[0]} embedding rows")
    if len(set(ids)) != len(ids):
        raise ValueError("item ids must be unique")
    metadata = {ITEM_IDS: json.dumps(ids, ensure_ascii=False)}
    if model is not None:
        metadata[MODEL] = str(model)
    path = Path(path).expanduser()
    save_tensors({EMBEDDINGS: embeddings.detach().cpu().contiguous()}, path, metadata)
    return path


def _fix(dataset_name: str = "DATASET") -> str:
    return (
        f"write it with `{EXPORT_COMMAND.format(dataset=dataset_name)}` and this run's dataset settings "
        "(or with save_item_embeddings), or leave text_embeddings unset to encode the item texts with "
        "text_encoder"
    )


def load_item_embeddings(path: PathLike) -> Tuple[list, torch.Tensor, Dict[str, str]]:
    """``(item_ids, embeddings, metadata)`` of a file written by :func:`save_item_embeddings`.

    A missing or unreadable file, a missing ``embeddings`` tensor or ``item_ids`` list, or a
    count that disagrees raises :class:`~recbole_sae.errors.ConfigError`.
    """
    from safetensors import safe_open

    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"text_embeddings file not found: {path}: {_fix()}")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            names = set(f.keys())
            embeddings = f.get_tensor(EMBEDDINGS) if EMBEDDINGS in names else None
    except Exception as exc:  # not safetensors, truncated
        raise ConfigError(f"text_embeddings file {path} is not a readable safetensors file ({exc}): {_fix()}") from None
    if embeddings is None:
        raise ConfigError(
            f"text_embeddings file {path} has no tensor '{EMBEDDINGS}' (it has {sorted(names) or 'none'}): {_fix()}"
        )
    if embeddings.ndim != 2 or not embeddings.is_floating_point():
        raise ConfigError(
            f"text_embeddings file {path}: '{EMBEDDINGS}' must be a 2-d float tensor, "
            f"got {embeddings.dtype} {tuple(embeddings.shape)}: {_fix()}"
        )
    try:
        item_ids = json.loads(metadata[ITEM_IDS])
    except (KeyError, ValueError):
        item_ids = None
    if not isinstance(item_ids, list):
        raise ConfigError(
            f"text_embeddings file {path} has no metadata '{ITEM_IDS}' (a JSON list of the "
            f"item tokens of its rows): {_fix()}"
        )
    item_ids = [str(token) for token in item_ids]
    if len(item_ids) != embeddings.shape[0]:
        raise ConfigError(
            f"text_embeddings file {path} has {len(item_ids)} item ids for "
            f"{embeddings.shape[0]} embedding rows: {_fix()}"
        )
    if len(set(item_ids)) != len(item_ids):
        raise ConfigError(f"text_embeddings file {path} lists an item id twice: {_fix()}")
    return item_ids, embeddings, metadata


def dataset_item_embeddings(path: PathLike, dataset) -> torch.Tensor:
    """The file's rows in the dataset's internal item order: float32 ``[item_num, d]``, row 0 zeros."""
    item_ids, embeddings, _ = load_item_embeddings(path)
    field = dataset.iid_field
    known = dataset.field2token_id[field]
    rows = [row for row, token in enumerate(item_ids) if token in known]
    out = torch.zeros((dataset.item_num, embeddings.shape[1]), dtype=torch.float32)
    found = torch.zeros(dataset.item_num, dtype=torch.bool)
    if rows:
        ids = torch.as_tensor(dataset.token2id(field, [item_ids[row] for row in rows]), dtype=torch.long)
        out[ids] = embeddings[torch.tensor(rows)].float()
        found[ids] = True
    found[0] = True  # padding
    missing = (~found).nonzero().flatten()
    if len(missing):
        examples = ", ".join(repr(str(t)) for t in dataset.id2token(field, missing[:5].numpy()))
        name = dataset.dataset_name
        raise ConfigError(
            f"text_embeddings file {Path(path).expanduser()} has no row for {len(missing)} of the "
            f"{dataset.item_num - 1} items of dataset '{name}' (e.g. {field} {examples}): "
            f"{_fix(name)}"
        )
    if not torch.isfinite(out).all():
        raise ConfigError(f"text_embeddings file {Path(path).expanduser()} has non-finite values: {_fix()}")
    return out


def export_item_embeddings(
    dataset_name: str, out: PathLike, config_file_list=None, config_dict=None, cmd_args=None
) -> Tuple[Path, tuple]:
    """Encode the item texts of ``dataset_name`` as SAERec would and write them to ``out``
    (``cmd_args``: the command line's ``--key=value`` strings, the config's highest layer)."""
    from recbole_sae import compat
    from recbole_sae.config import Config, split_config_files
    from recbole_sae.data.item_text import item_texts
    from recbole_sae.intents.pipeline import cache_dir, text_encoder

    compat.apply()
    from recbole.data import create_dataset
    from recbole.utils import init_seed

    config = Config("SAERec", dataset_name, split_config_files(config_file_list), config_dict, cmd_args)
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    texts = item_texts(dataset, config)
    encoder = text_encoder(config)
    embeddings = encoder.encode_cached(texts, cache_dir(config) / "text")
    tokens = dataset.id2token(dataset.iid_field, list(range(1, dataset.item_num)))
    model = (
        f"{encoder.model_name_or_path} (pooling={encoder.pooling}, layer={encoder.layer}, "
        f"max_length={encoder.max_length}, normalize={encoder.normalize}) on the item texts of "
        f"{config['dataset']}"
    )
    path = save_item_embeddings(out, tokens, embeddings[1:], model=model)
    return path, tuple(embeddings[1:].shape)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m recbole_sae.intents.embedding_file ...``: the same as ``recbole-sae export-embeddings ...``."""
    from recbole_sae.cli import export_main

    return export_main(None if argv is None else list(argv))


if __name__ == "__main__":
    sys.exit(main())
