"""Find a dataset's folder of RecBole atomic files, or say clearly where it was looked for."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

from recbole_sae.errors import DatasetNotFoundError

ENV_VAR = "RECBOLE_SAE_DATA"
BUNDLED = {"ml-100k"}  # shipped inside the recbole wheel; RecBole always uses that copy


def _has_dataset(folder: Path, dataset: str) -> bool:
    return (folder / f"{dataset}.inter").is_file()


def candidate_folders(dataset: str, data_path: str | None = None) -> list[Path]:
    """Where ``dataset`` is looked for, in order: ``data_path``, ``$RECBOLE_SAE_DATA``, ``./dataset``.

    Each base is tried as the dataset's own folder and as a parent holding ``<dataset>/``.
    """
    bases = []
    if data_path:
        bases.append(Path(data_path).expanduser())
    if os.environ.get(ENV_VAR):
        bases.append(Path(os.environ[ENV_VAR]).expanduser())
    bases.append(Path("dataset"))
    folders = []
    for base in bases:
        for folder in (base / dataset, base):
            if folder not in folders:
                folders.append(folder)
    return folders


def near_names(dataset: str, data_path: str | None = None) -> list[str]:
    """The datasets found where ``dataset`` was looked for (and RecBole's bundled ones) whose names
    are close to it: the likely intended name of a mistyped one, closest first."""
    found = set(BUNDLED)
    for base in candidate_folders(dataset, data_path):
        if base.is_dir():
            found.update(child.name for child in base.iterdir() if _has_dataset(child, child.name))
    return difflib.get_close_matches(dataset, sorted(found), n=3, cutoff=0.75)


def locate_dataset(dataset: str, data_path: str | None = None) -> str:
    """The absolute path of the folder holding ``<dataset>.inter``; raises DatasetNotFoundError."""
    tried = candidate_folders(dataset, data_path)
    for folder in tried:
        if _has_dataset(folder, dataset):
            return str(folder.resolve())
    looked = "\n".join(f"  - {folder.resolve()}" for folder in tried)
    hint = (
        f"build it from the raw Amazon review files with\n"
        f"  python -m recbole_sae.data.amazon --reviews reviews_<Category>_5.json.gz "
        f"--meta meta_<Category>.json.gz --out dataset/{dataset}\n"
        if dataset.startswith("amazon")
        else f"put RecBole atomic files ({dataset}.inter, optional {dataset}.item) in a folder '{dataset}/'\n"
    )
    near = near_names(dataset, data_path)
    did_you_mean = f"Did you mean {' or '.join(repr(name) for name in near)}?\n" if near else ""
    raise DatasetNotFoundError(
        f"dataset '{dataset}' not found: no {dataset}.inter in\n{looked}\n{did_you_mean}"
        f"Point --data_path or the environment variable {ENV_VAR} at the folder that holds "
        f"'{dataset}/', or {hint}"
        f"(ml-100k ships with RecBole and needs nothing.)"
    )
