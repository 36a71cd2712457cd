"""Analysis of SAE latents: interpretation against item attributes, and reports.

Takes tensors and lists only (no RecBole import)::

    from recbole_sae.analysis import interpret, write_interpretation_report
    result = interpret(sae_acts, hidden, item_ids, {"genre": (names, matrix)}, titles,
                       sae.decoder_directions(raw=True), item_embeddings)
    write_interpretation_report(result, "runs/x/interpretation", title="ml-100k, block 0")
"""

from .attribute_stats import latent_attribute_stats
from .best_units import best_per_value, label_latents
from .interpretation import interpret
from .latent_items import logit_lens, top_items_by_activation
from .monosemanticity import held_out_best_corr, linear_probe_corr, monosemanticity_summary
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
