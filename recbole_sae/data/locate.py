"""Find a dataset's folder of RecBole atomic files, or say clearly where it was looked for."""

from __future__ import annotations

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
    raise DatasetNotFoundError(
        f"dataset '{dataset}' not found: no {dataset}.inter in\n{looked}\n"
        f"Point --data_path or the environment variable {ENV_VAR} at the folder that holds "
        f"'{dataset}/', or {hint}"
        f"(ml-100k ships with RecBole and needs nothing.)"
    )
