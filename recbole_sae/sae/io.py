"""Saving and loading sparse autoencoders (safetensors + JSON, no pickle).

A saved SAE is a directory holding

* ``sae.safetensors``: every parameter and buffer of the module (weights,
  normalisation statistics, dead-latent counters, BatchTopK threshold);
* ``cfg.json``: :meth:`SAEConfig.to_dict` of its configuration.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional, Union

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from recbole_sae.fileio import write_bytes_atomic, write_json_atomic

from .config import SAEConfig
from .model import SparseAutoencoder

WEIGHTS_NAME = "sae.safetensors"
CONFIG_NAME = "cfg.json"
FORMAT_VERSION = "1"


def save_tensors(
    tensors: Dict[str, torch.Tensor], path: Union[str, Path], metadata: Optional[Dict[str, str]] = None
) -> Path:
    """Write ``tensors`` (and string ``metadata``) as a safetensors file, atomically, with its header's
    keys sorted: safetensors orders them differently on every save, and then the same tensors would
    give another file, and another digest, each time. Returns the path."""
    data = save(tensors, metadata=metadata)
    size = int.from_bytes(data[:8], "little")
    header = json.dumps(json.loads(data[8 : 8 + size]), sort_keys=True, separators=(",", ":")).encode("utf-8")
    if len(header) > size:  # the same keys and values in another order: never longer
        raise ValueError("safetensors header grew when its keys were sorted")
    return write_bytes_atomic(data[:8] + header.ljust(size, b" ") + data[8 + size :], path)


def save_sae(sae: SparseAutoencoder, directory: Union[str, Path]) -> Path:
    """Write ``sae`` into ``directory`` (created if needed); returns the path. Each file is written
    atomically: a save interrupted mid-way leaves the previous file (or none), never part of one."""
    directory = Path(directory)
    tensors = {name: t.detach().cpu().contiguous() for name, t in sae.state_dict().items()}
    metadata = {"format": "pt", "sae_format_version": FORMAT_VERSION}
    save_tensors(tensors, directory / WEIGHTS_NAME, metadata)
    write_json_atomic(sae.cfg.to_dict(), directory / CONFIG_NAME, indent=2, sort_keys=True)
    return directory


def load_sae(directory: Union[str, Path], device: Union[str, torch.device] = "cpu") -> SparseAutoencoder:
    """Load an SAE written by :func:`save_sae`; returned in eval mode.

    Raises ``FileNotFoundError`` when the directory or one of its two files
    is missing, and ``ValueError`` when ``cfg.json`` is invalid or does not
    match the tensors (missing/unexpected tensors, wrong shapes).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"SAE directory {str(directory)!r} does not exist")
    missing = [name for name in (WEIGHTS_NAME, CONFIG_NAME) if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"SAE directory {str(directory)!r} lacks {missing}; a saved SAE needs both "
            f"{WEIGHTS_NAME!r} and {CONFIG_NAME!r} (written by SparseAutoencoder.save)"
        )
    try:
        with open(directory / CONFIG_NAME, "r", encoding="utf-8") as fh:
            cfg_dict = json.load(fh)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{directory / CONFIG_NAME} is not valid JSON: {exc}") from exc
    try:
        cfg = SAEConfig.from_dict(cfg_dict)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"invalid SAE config in {directory / CONFIG_NAME}: {exc}") from exc
    try:
        tensors = load_file(str(directory / WEIGHTS_NAME), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"cannot read {directory / WEIGHTS_NAME}: {exc}") from exc

    sae = SparseAutoencoder(cfg)
    expected = sae.state_dict()
    absent = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if absent or unexpected:
        raise ValueError(
            f"{directory / WEIGHTS_NAME} does not match an SAE: missing tensors {absent}, "
            f"unexpected tensors {unexpected}"
        )
    bad = [
        f"{name}: file {tuple(tensors[name].shape)} vs cfg {tuple(ref.shape)}"
        for name, ref in expected.items()
        if tuple(tensors[name].shape) != tuple(ref.shape)
    ]
    if bad:
        raise ValueError(
            f"shapes in {directory / WEIGHTS_NAME} do not match {CONFIG_NAME} "
            f"(d_in={cfg.d_in}, d_sae={cfg.d_sae}): " + "; ".join(bad)
        )
    float_dtype = tensors["W_dec"].dtype
    if not float_dtype.is_floating_point:
        raise ValueError(f"W_dec in {directory / WEIGHTS_NAME} has non-float dtype {float_dtype}")
    sae.to(dtype=float_dtype)
    for name, ref in sae.state_dict().items():
        if tensors[name].dtype != ref.dtype:
            raise ValueError(
                f"tensor {name} in {directory / WEIGHTS_NAME} has dtype {tensors[name].dtype}, expected {ref.dtype}"
            )
    sae.load_state_dict(tensors, strict=True)
    sae.to(device)
    sae.eval()
    return sae
