"""From a RecBole dataset to intents: item text -> text embeddings -> SAE intent vocabulary -> index.

Both expensive steps are cached under ``intent_cache_dir``: the text embeddings by the encoder's
own key (model, layer, pooling, all texts), the vocabulary by a hash of that key, the SAE and
training settings and the intent rules. A changed text, model or setting builds anew.

With ``text_embeddings: FILE`` the item embeddings come from that file
(:mod:`recbole_sae.intents.embedding_file`) and no text encoder is built; the vocabulary key then
hashes the file's bytes (and the texts, which still give the labels) in place of the encoder's key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from recbole_sae.console import say
from recbole_sae.data.item_text import item_attribute_matrix, item_texts, item_titles
from recbole_sae.fileio import file_sha256
from recbole_sae.intents.embedding_file import dataset_item_embeddings
from recbole_sae.intents.encoder import TextEncoder, _texts_digest
from recbole_sae.intents.index import IntentIndex
from recbole_sae.intents.vocabulary import IntentRules, IntentVocabulary, build_intent_vocabulary
from recbole_sae.sae import SAEConfig, SAETrainConfig

logger = logging.getLogger(__name__)

DEFAULT_CACHE = "~/.cache/recbole-sae"


@dataclass
class Intents:
    """Everything a model needs of the intents of one dataset."""

    vocabulary: IntentVocabulary
    index: IntentIndex
    item_embeddings: torch.Tensor  # [n_items, d] text embeddings, row 0 = padding


def cache_dir(config) -> Path:
    return Path(os.path.expanduser(config["intent_cache_dir"] or DEFAULT_CACHE))


def intent_settings(config, d_in: int) -> tuple[SAEConfig, SAETrainConfig, IntentRules]:
    sae_cfg = SAEConfig(
        d_in=d_in,
        d_sae=int(config["intent_sae_d_sae"]),
        activation=config["intent_sae_activation"],
        k=int(config["intent_sae_k"]),
        seed=int(config["seed"]),
    )
    train_cfg = SAETrainConfig(
        lr=float(config["intent_sae_lr"]),
        batch_size=int(config["intent_sae_batch_size"]),
        epochs=int(config["intent_sae_epochs"]),
        warmup_steps=int(config["intent_sae_warmup_steps"]),
        seed=int(config["seed"]),
        show_progress=False,
        log_every=10**9,
    )
    rules = IntentRules(
        min_items=int(config["intent_min_items"]),
        max_items_frac=float(config["intent_max_items_frac"]),
        min_coherence=float(config["intent_min_coherence"]),
    )
    return sae_cfg, train_cfg, rules


def _vocabulary_key(text_key: str, sae_cfg, train_cfg, rules, fields) -> str:
    blob = json.dumps(
        {
            "text": text_key,
            "sae": sae_cfg.to_dict(),
            "train": train_cfg.to_dict(),
            "rules": rules.to_dict(),
            "fields": list(fields),
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def text_encoder(config) -> TextEncoder:
    """The ``TextEncoder`` of the config's ``text_*`` keys."""
    return TextEncoder(
        config["text_encoder"],
        pooling=config["text_pooling"],
        layer=int(config["text_layer"]),
        max_length=int(config["text_max_length"]),
        batch_size=int(config["text_batch_size"]),
        show_progress=bool(config["show_progress"]),
    )


def item_embeddings(config, dataset, texts) -> tuple[torch.Tensor, str]:
    """``([item_num, d] embeddings, their cache key)``: from ``text_embeddings`` when set, else encoded."""
    path = config["text_embeddings"]
    if path:
        embeddings = dataset_item_embeddings(path, dataset)
        logger.info(f"item embeddings {tuple(embeddings.shape)} loaded from {path}")
        # labels and titles still come from the texts: a changed text rebuilds the vocabulary too
        key = json.dumps({"text_embeddings_sha256": file_sha256(path), "texts_sha256": _texts_digest(texts)})
        return embeddings, key
    encoder = text_encoder(config)
    return encoder.encode_cached(texts, cache_dir(config) / "text"), encoder.cache_key(texts)


def build_intents(config, dataset) -> Intents:
    """Item texts of ``dataset`` -> cached (or precomputed) embeddings -> cached vocabulary -> FAISS index."""
    texts = item_texts(dataset, config)
    root = cache_dir(config)
    embeddings, text_key = item_embeddings(config, dataset, texts)
    fields = list(config["item_attributes"] or [])
    attributes = {field: item_attribute_matrix(dataset, field) for field in fields}
    sae_cfg, train_cfg, rules = intent_settings(config, embeddings.shape[1])
    key = _vocabulary_key(text_key, sae_cfg, train_cfg, rules, fields)
    folder = root / "vocabulary" / key
    vocabulary = None
    if (folder / "intents.json").is_file():
        try:
            vocabulary = IntentVocabulary.load(folder)
            logger.info(f"intent vocabulary loaded from {folder}")
        except (OSError, ValueError) as err:
            logger.warning(f"intent vocabulary cache {folder} unreadable ({err}); building it again")
    if vocabulary is None:
        vocabulary = build_intent_vocabulary(
            embeddings, texts, attributes, sae_cfg, train_cfg, rules, titles=item_titles(dataset, config)
        )
        vocabulary.save(folder)
    if vocabulary.n_kept < max(int(config["n_personal_intents"]), int(config["n_public_intents"])):
        from recbole_sae.errors import ConfigError

        raise ConfigError(
            f"only {vocabulary.n_kept} intents kept (of {vocabulary.n_alive} live latents): loosen "
            "intent_min_items / intent_max_items_frac / intent_min_coherence or enlarge intent_sae_d_sae"
        )
    say(f"intents: {vocabulary.n_latents} latents, {vocabulary.n_alive} alive, {vocabulary.n_kept} kept")
    index = vocabulary.build_index(use_gpu=config["faiss_gpu"] if config["faiss_gpu"] is not None else "auto")
    return Intents(vocabulary, index, embeddings)
