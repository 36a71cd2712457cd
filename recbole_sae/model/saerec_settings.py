"""SAERec's own settings, checked when the config is built: before any data is read, any item text
is embedded or the intent SAE trains (a bad ``--fusion`` used to surface minutes later, from the
model's constructor; a bad ``--intent_sae_k`` as a traceback). The constructor checks them again for
models built from the Python API."""

from __future__ import annotations

from recbole_sae.errors import ConfigError
from recbole_sae.intents.encoder import VALID_POOLING
from recbole_sae.intents.stage import DIRECTIONS
from recbole_sae.sae.config import ACTIVATIONS
from recbole_sae.validate import ABOVE_0, IN_0_1, WHOLE_AT_LEAST_0, WHOLE_AT_LEAST_1, check_ranges, is_int, is_number

FUSIONS = ("attention", "gate")
RETRIEVALS = ("text", "paper")
MEMORIES = ("intents", "history_text")
CHOICES = {
    "fusion": FUSIONS,
    "intent_retrieval": RETRIEVALS,
    "intent_memory": MEMORIES,
    "intent_directions": DIRECTIONS,
    "intent_sae_activation": ACTIVATIONS,
    "text_pooling": VALID_POOLING,
}
RANGES = (
    (
        WHOLE_AT_LEAST_1,
        {
            "intent_sae_d_sae": 2048,
            "intent_sae_k": 8,
            "intent_sae_batch_size": 256,
            "intent_sae_epochs": 100,
            "intent_min_items": 3,
            "n_personal_intents": 5,
            "n_public_intents": 5,
            "intent_layers": 2,
            "text_max_length": 64,
            "text_batch_size": 64,
        },
    ),
    (
        WHOLE_AT_LEAST_0,
        {"intent_sae_warmup_steps": 100, "intent_table_rows": 20, "explain_users": 3, "faithfulness_users": 1000},
    ),
    (("a whole number (-1: the last layer)", is_int), {"text_layer": -1}),
    (ABOVE_0, {"intent_sae_lr": 0.001}),
    (
        ("a number in (0, 1]", lambda v: is_number(v) and 0 < v <= 1),
        {"intent_max_items_frac": 0.05, "recency_decay": 0.8},
    ),
    (IN_0_1, {"idf_momentum": 0.9, "item_feature_dropout": 0.2}),
    (("a number in [-1, 1]", lambda v: is_number(v) and -1 <= v <= 1), {"intent_min_coherence": 0.2}),
)


def check_config(config) -> None:
    """Raise :class:`ConfigError` for the first SAERec setting that cannot work."""
    check_ranges(config, RANGES, CHOICES)
    enriched = config["item_intent_codes"] or config["item_text"]
    if enriched and config["loss_type"] != "CE":
        raise ConfigError(
            f"item_intent_codes and item_text need loss_type=CE (got {config['loss_type']}): pass "
            "--loss_type=CE, or --item_intent_codes=False --item_text=False"
        )
