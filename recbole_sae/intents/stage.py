"""The intent stage: the data a SAERec model is built on, made before the model and kept in the run.

text -> embeddings -> SAE -> vocabulary -> directions -> index -> public intents runs here, once per
run, as an :class:`IntentStage` handed to the model's constructor (``SAERec(config, dataset,
stage)``). It is an object rather than a RecBole ``Dataset`` subclass because it depends on
settings that RecBole's dataset cache does not key on (the SAE's, the seed, the direction
ablation), it holds a FAISS index that cannot be pickled with a dataset, and it must be written to
and read from the run folder, which a dataset does not know.

:meth:`IntentStage.for_run` writes the stage into ``<run folder>/intents/``:

* ``vocabulary/``: ``intents.json`` (labels, top items), ``directions.safetensors``, ``sae/``
  (the SAE's weights, safetensors + ``cfg.json``);
* ``index.faiss`` (+ ``.meta.json``: centre, public intents): the index over the directions the
  model uses (the SAE's, or the seeded random ones of ``intent_directions: random``);
* ``item_embeddings.safetensors``: the items' text embeddings and the directions used;
* ``stage.json``: the settings and a digest of the item tokens it was built for.

When that folder is complete (a reload with ``load_data_and_model`` or a resumed run) the stage is
read from it: no text model, no embedding cache, no SAE training. Nothing loaded executes code
(safetensors, JSON and a FAISS index).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load_file

from recbole_sae import runfiles
from recbole_sae.data.rows import last_row_mask
from recbole_sae.errors import CheckpointMismatchError, ConfigError
from recbole_sae.fileio import write_json_atomic
from recbole_sae.intents.index import IntentIndex
from recbole_sae.intents.vocabulary import IntentVocabulary
from recbole_sae.sae.io import save_tensors

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
DIRECTIONS = ("sae", "random")


def _faiss_setting(config):
    return config["faiss_gpu"] if config["faiss_gpu"] is not None else "auto"


def item_tokens_digest(dataset) -> str:
    """A digest of the dataset's item tokens in internal-id order: the rows of the stage's tensors."""
    tokens = [str(t) for t in dataset.field2id_token[dataset.iid_field]]
    return hashlib.sha256("\n".join(tokens).encode("utf-8")).hexdigest()[:20]


def random_directions(directions: torch.Tensor, seed: int) -> torch.Tensor:
    """Gaussian directions with the same row norms as ``directions`` (seeded; the ablation's control)."""
    generator = torch.Generator().manual_seed(int(seed))
    noise = torch.randn(directions.shape, generator=generator, dtype=torch.float32)
    norms = directions.float().norm(dim=1, keepdim=True)
    return torch.nn.functional.normalize(noise, dim=1) * norms


def training_public_intents(
    index: IntentIndex, dataset, item_embeddings, n_personal: int, n_public: int, recency_decay: float
) -> torch.Tensor:
    """Lowest-IDF intents over the personal intents of each training user's last training row."""
    feat = dataset.inter_feat
    uid = dataset.uid_field
    seq_field = dataset.config["ITEM_ID_FIELD"] + dataset.config["LIST_SUFFIX"]
    len_field = dataset.config["ITEM_LIST_LENGTH_FIELD"]
    last = last_row_mask(feat[uid])
    found = index.personal_intents(
        feat[seq_field][last], feat[len_field][last], item_embeddings, n_personal, recency_decay
    )
    return index.set_public_intents(found.ids, n_public).clone()


@dataclass
class IntentStage:
    """Everything a SAERec model needs of the intents of one dataset, and how to keep it in a run."""

    vocabulary: IntentVocabulary
    index: IntentIndex  # over ``directions``; holds the public intents
    item_embeddings: torch.Tensor  # [n_items, d] text embeddings, row 0 = padding
    directions: torch.Tensor  # [n_intents, d] the directions the model uses
    settings: dict = field(default_factory=dict)  # what it was built with (stage.json)
    folder: Optional[Path] = None  # where it was read from or written to

    @property
    def public_ids(self) -> torch.Tensor:
        return self.index.public_ids

    @property
    def n_intents(self) -> int:
        return int(self.directions.shape[0])

    # ------------------------------------------------------------------ build
    @classmethod
    def build(cls, config, dataset) -> "IntentStage":
        """Run the pipeline (text, cached embeddings, cached vocabulary), then directions, index, public."""
        from recbole_sae.intents.pipeline import build_intents

        kind = config["intent_directions"] or "sae"
        if kind not in DIRECTIONS:
            raise ConfigError(f"intent_directions must be one of {DIRECTIONS}, got '{kind}'")
        intents = build_intents(config, dataset)
        directions = intents.vocabulary.directions.float()
        index = intents.index
        if kind == "random":
            directions = random_directions(directions, int(config["seed"]))
            index = IntentIndex(directions, use_gpu=_faiss_setting(config), center=intents.vocabulary.center)
        embeddings = intents.item_embeddings.float()
        training_public_intents(
            index,
            dataset,
            embeddings,
            int(config["n_personal_intents"]),
            int(config["n_public_intents"]),
            float(config["recency_decay"]),
        )
        settings = {
            "format_version": FORMAT_VERSION,
            "dataset": str(config["dataset"]),
            "item_tokens": item_tokens_digest(dataset),
            "n_items": int(embeddings.shape[0]),
            "intent_directions": kind,
            "seed": int(config["seed"]),
            "n_personal_intents": int(config["n_personal_intents"]),
            "n_public_intents": int(config["n_public_intents"]),
            "recency_decay": float(config["recency_decay"]),
            "text_encoder": None if config["text_embeddings"] else str(config["text_encoder"]),
            "text_embeddings": config["text_embeddings"] or None,
        }
        return cls(intents.vocabulary, index, embeddings, directions, settings)

    @classmethod
    def for_run(cls, config, dataset, run_dir: Optional[str] = None) -> "IntentStage":
        """The stage of the run in ``run_dir`` (default ``config['run_dir']``): read when written, else built
        and written there (no run folder: built in memory only)."""
        run_dir = run_dir or config["run_dir"]
        if run_dir:
            folder = Path(run_dir) / runfiles.INTENT_STAGE_DIR
            if (folder / runfiles.INTENT_STAGE_MANIFEST).is_file():
                return cls.load(folder, dataset, use_gpu=_faiss_setting(config))
        stage = cls.build(config, dataset)
        if run_dir:
            stage.save(Path(run_dir) / runfiles.INTENT_STAGE_DIR)
        return stage

    # ------------------------------------------------------------------ io
    def save(self, folder) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.vocabulary.save(folder / runfiles.INTENT_VOCABULARY_DIR)
        self.index.save(folder / runfiles.INTENT_INDEX)
        tensors = {"item_embeddings": self.item_embeddings.contiguous(), "directions": self.directions.contiguous()}
        metadata = {"format_version": str(FORMAT_VERSION)}
        save_tensors(tensors, folder / runfiles.INTENT_ITEM_EMBEDDINGS, metadata)
        # last, and whole or not at all: it marks the folder complete
        write_json_atomic(self.settings, folder / runfiles.INTENT_STAGE_MANIFEST, indent=1)
        self.folder = folder
        logger.info(f"intent stage written to {folder}")
        return folder

    @classmethod
    def load(cls, folder, dataset=None, use_gpu="auto") -> "IntentStage":
        """Read a stage written by :meth:`save`; with ``dataset``, check it was built for its items."""
        folder = Path(folder)
        try:
            with open(folder / runfiles.INTENT_STAGE_MANIFEST, "r", encoding="utf-8") as fh:
                settings = json.load(fh)
            vocabulary = IntentVocabulary.load(folder / runfiles.INTENT_VOCABULARY_DIR)
            index = IntentIndex.load(folder / runfiles.INTENT_INDEX, use_gpu=use_gpu)
            tensors = load_file(str(folder / runfiles.INTENT_ITEM_EMBEDDINGS), device="cpu")
        except (OSError, ValueError, KeyError, RuntimeError) as err:
            raise CheckpointMismatchError(
                f"the intent stage in {folder} is incomplete or unreadable ({err}): "
                f"delete {folder} to build it again from the item texts"
            ) from err
        if settings.get("format_version") != FORMAT_VERSION:
            raise CheckpointMismatchError(
                f"{folder / runfiles.INTENT_STAGE_MANIFEST} has format version {settings.get('format_version')!r}, "
                f"expected {FORMAT_VERSION}: delete {folder} to build it again"
            )
        if dataset is not None and settings.get("item_tokens") != item_tokens_digest(dataset):
            raise CheckpointMismatchError(
                f"the intent stage in {folder} was built for other items than dataset "
                f"'{dataset.dataset_name}' has now (changed data or filters): reload with the run's own data"
            )
        if index.public_ids is None:
            raise CheckpointMismatchError(f"{folder / runfiles.INTENT_INDEX} holds no public intents: delete {folder}")
        logger.info(f"intent stage read from {folder}")
        return cls(vocabulary, index, tensors["item_embeddings"], tensors["directions"], settings, folder)


def stage_folder(run_dir) -> Path:
    return Path(os.path.abspath(run_dir)) / runfiles.INTENT_STAGE_DIR
