"""Analysis of SAE latents: interpretation against item attributes, and reports.

Takes tensors and lists only (no RecBole import)::

    from recbole_sae.analysis import interpret, write_interpretation_report
    result = interpret(sae_acts, hidden, item_ids, {"genre": (names, matrix)}, titles,
                       sae.decoder_directions(raw=True), item_embeddings)
    write_interpretation_report(result, "runs/x/interpretation", title="ml-100k, block 0")
"""

from .interpretation import (
    best_per_value,
    interpret,
    label_latents,
    latent_attribute_stats,
    held_out_best_corr,
    linear_probe_corr,
    logit_lens,
    monosemanticity_summary,
    top_items_by_activation,
)
from .report import markdown_table, to_jsonable, write_interpretation_report, write_json

__all__ = [
    "best_per_value",
    "interpret",
    "label_latents",
    "latent_attribute_stats",
    "held_out_best_corr",
    "linear_probe_corr",
    "logit_lens",
    "markdown_table",
    "monosemanticity_summary",
    "to_jsonable",
    "top_items_by_activation",
    "write_interpretation_report",
    "write_json",
]
