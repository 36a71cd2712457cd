"""Interpretation of sparse-autoencoder latents against item attributes: everything, as one report.

:func:`interpret` runs the statistics of the analysis package on SAE latents and, as the baseline, on
the raw hidden dims the SAE was trained on, and gathers them into one JSON-ready dict (floats rounded).
The statistics live in their own modules; every public name is also importable from here::

    stats = latent_attribute_stats(acts, item_ids, attr_matrix)      # attribute_stats: dict of [L, V] tensors
    best_per_value(stats, values)                                     # best_units: best latent per value
    label_latents(stats, values)                                      # best_units: "Western (0.71) · Drama (0.12)"
    monosemanticity_summary(stats_sae, stats_raw, values)             # monosemanticity: SAE vs raw dims
    linear_probe_corr(raw_acts, item_ids, attr_matrix)                # monosemanticity: [V], all dims together
    held_out_best_corr(acts, item_ids, attr_matrix)                   # monosemanticity: [V], unit chosen on other items
    top_items_by_activation(acts, item_ids, k)                        # latent_items: [L, k] item ids
    logit_lens(decoder_directions, item_embeddings, k)                # latent_items: ([L, k] ids, [L, k] scores)
    interpret(...)                                                    # here: everything, as one JSON-ready dict
"""

from __future__ import annotations

import math
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from recbole_sae.analysis.attribute_stats import latent_attribute_stats
from recbole_sae.analysis.best_units import best_per_value, label_latents, top_values
from recbole_sae.analysis.checks import DEFAULT_ELEMENT_BUDGET, both_parities, check_acts, check_attr
from recbole_sae.analysis.latent_items import logit_lens, top_items_by_activation
from recbole_sae.analysis.monosemanticity import held_out_best_corr, linear_probe_corr, monosemanticity_summary
from recbole_sae.tables import round_float, round_tree

__all__ = [
    "DEFAULT_ELEMENT_BUDGET",
    "latent_attribute_stats",
    "best_per_value",
    "monosemanticity_summary",
    "linear_probe_corr",
    "held_out_best_corr",
    "label_latents",
    "top_items_by_activation",
    "logit_lens",
    "interpret",
]


# --------------------------------------------------------------------------- serialisation
def _r(x) -> Optional[float]:
    return round_float(x, 4)


def _round_record(d: dict) -> dict:
    """The record's own floats rounded (nested values as they are)."""
    return {key: (_r(val) if isinstance(val, float) else val) for key, val in d.items()}


def _value_slice(stats: Mapping[str, torch.Tensor], lo: int, hi: int) -> Dict[str, torch.Tensor]:
    """The stats of values ``lo:hi`` (per-latent entries unchanged)."""
    out = {}
    for key, val in stats.items():
        if key in ("support", "base_rate"):
            out[key] = val[lo:hi]
        elif val.dim() == 2:
            out[key] = val[:, lo:hi]
        else:
            out[key] = val
    return out


def _titles_of(ids: Sequence[int], titles: Optional[Sequence[str]]) -> List[str]:
    out = []
    for i in ids:
        if titles is not None and 0 <= i < len(titles) and titles[i] is not None:
            out.append(str(titles[i]))
        else:
            out.append(str(i))
    return out


# --------------------------------------------------------------------------- the steps of interpret
def _check_pair(sae_acts: torch.Tensor, raw_acts: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    sae_acts = check_acts(sae_acts, "sae_acts")
    raw_acts = check_acts(raw_acts, "raw_acts")
    if raw_acts.shape[0] != sae_acts.shape[0]:
        raise ValueError(f"sae_acts has {sae_acts.shape[0]} positions but raw_acts {raw_acts.shape[0]}")
    return sae_acts, raw_acts


def _joint_attributes(attributes: Mapping[str, Tuple[Sequence[str], torch.Tensor]]):
    """All fields' matrices side by side, for one pass over the activations.

    Returns (joint matrix ``[n_items, sum V]``, a name per column (``field=value`` with several
    fields), a ``(field, value)`` per column, and ``(field, values, lo, hi)`` per field).
    """
    if not attributes:
        raise ValueError("no item attributes given: pass at least one field -> (values, matrix)")
    all_names: List[str] = []
    all_fields: List[Tuple[str, str]] = []
    spans: List[Tuple[str, List[str], int, int]] = []
    matrices = []
    several = len(attributes) > 1
    for field, (values, matrix) in attributes.items():
        values = [str(v) for v in values]
        matrix = check_attr(matrix)
        if matrix.shape[1] != len(values):
            raise ValueError(f"field {field!r}: {len(values)} value names for a matrix with {matrix.shape[1]} columns")
        if matrices and matrix.shape[0] != matrices[0].shape[0]:
            raise ValueError(
                f"field {field!r}: {matrix.shape[0]} item rows, the first field has {matrices[0].shape[0]}"
            )
        spans.append((field, values, len(all_names), len(all_names) + len(values)))
        matrices.append(matrix)
        all_names += [f"{field}={v}" if several else v for v in values]
        all_fields += [(field, v) for v in values]
    return torch.cat(matrices, dim=1), all_names, all_fields, spans


def _held_out_baselines(sae_acts, raw_acts, item_ids, joint_matrix, chunk):
    """The raw dims' linear probe and both held-out best correlations (``None`` without two item folds)."""
    if not both_parities(item_ids):
        return None, None
    probe = linear_probe_corr(raw_acts, item_ids, joint_matrix)
    held_out = tuple(held_out_best_corr(a, item_ids, joint_matrix, chunk=chunk) for a in (sae_acts, raw_acts))
    return probe, held_out


def _field_report(st_sae, st_raw, values: List[str], min_support: int, probe, held_out) -> dict:
    """One field's rounded summary and its values' best units (SAE and raw, by |corr| and by AUC)."""
    summary = round_tree(
        monosemanticity_summary(st_sae, st_raw, values, min_support=min_support, probe=probe, held_out=held_out)
    )
    per_value = []
    for s, r in zip(best_per_value(st_sae, values), best_per_value(st_raw, values)):
        per_value.append(
            {
                "value": s["value"],
                "support": s["support"],
                "base_rate": _r(s["base_rate"]),
                "sae": _round_record(s["by_corr"]),
                "sae_auc": _round_record(s["by_auc"]),
                "raw": _round_record(r["by_corr"]),
                "raw_auc": _round_record(r["by_auc"]),
            }
        )
    return {"summary": summary, "values": per_value}


def _field_reports(joint, joint_raw, spans, min_support: int, probe, held_out) -> dict:
    fields_out = {}
    for field, values, lo, hi in spans:
        fields_out[field] = _field_report(
            _value_slice(joint, lo, hi),
            _value_slice(joint_raw, lo, hi),
            values,
            min_support,
            None if probe is None else probe[lo:hi],
            None if held_out is None else (held_out[0][lo:hi], held_out[1][lo:hi]),
        )
    return fields_out


def _logit_lens_or_none(decoder_directions, item_embeddings, n_latents: int, k: int):
    if decoder_directions is None or item_embeddings is None:
        return None, None
    if decoder_directions.shape[0] != n_latents:
        raise ValueError(f"{decoder_directions.shape[0]} decoder directions for {n_latents} latents")
    return logit_lens(decoder_directions, item_embeddings, k)


def _eligible_top_values(joint, label_top: int, min_support: int):
    """Per latent, its ``label_top`` values of highest correlation among those on ``min_support`` positions."""
    eligible = joint["corr"].clone()
    eligible[:, joint["support"] < min_support] = -math.inf
    return top_values(eligible, label_top, None)


def _best_values(joint, lat: int, top_c, top_v, all_fields) -> List[dict]:
    """A latent's best values (those passing ``min_support``, best correlation first) as records."""
    best_values = []
    for c, j in zip(top_c[lat].tolist(), top_v[lat].tolist()):
        if not math.isfinite(c):
            continue
        field, value = all_fields[j]
        best_values.append(
            {
                "field": field,
                "value": value,
                "corr": _r(c),
                "auc": _r(joint["auc"][lat, j]),
                "precision": _r(joint["precision"][lat, j]),
            }
        )
    return best_values


def _latent_record(lat: int, label: str, firing_rate, top_ids, lens, titles, best_values) -> dict:
    """The report's record of one live latent."""
    tops = [i for i in top_ids[lat].tolist() if i >= 0]
    rec = {
        "id": int(lat),
        "label": label,
        "firing_rate": _r(firing_rate[lat]),
        "top_items": tops,
        "top_titles": _titles_of(tops, titles),
        "logit_items": [],
        "logit_titles": [],
        "logit_scores": [],
        "best_values": best_values,
    }
    lens_ids, lens_scores = lens
    if lens_ids is not None:
        li = [i for i in lens_ids[lat].tolist() if i >= 0]
        rec["logit_items"] = li
        rec["logit_titles"] = _titles_of(li, titles)
        rec["logit_scores"] = [_r(s) for s in lens_scores[lat, : len(li)].tolist()]
    return rec


@torch.no_grad()
def _latent_records(alive, joint, labels, top_ids, lens, titles, best_args) -> list:
    """The record of every alive latent, in id order (``best_args``: what ``_best_values`` needs)."""
    top_c, top_v, all_fields = best_args
    return [
        _latent_record(
            lat,
            labels[lat],
            joint["firing_rate"],
            top_ids,
            lens,
            titles,
            _best_values(joint, lat, top_c, top_v, all_fields),
        )
        for lat in alive
    ]


def interpret(
    sae_acts: torch.Tensor,
    raw_acts: torch.Tensor,
    item_ids: torch.Tensor,
    attributes: Mapping[str, Tuple[Sequence[str], torch.Tensor]],
    titles: Optional[Sequence[str]] = None,
    decoder_directions: Optional[torch.Tensor] = None,
    item_embeddings: Optional[torch.Tensor] = None,
    k: int = 10,
    min_support: int = 10,
    min_corr: float = 0.1,
    label_top: int = 3,
    chunk: Optional[int] = None,
) -> dict:
    """Interpret SAE latents against item attributes, with raw hidden dims as baseline.

    Args:
        sae_acts: ``[N, L]`` SAE latent activations at N positions.
        raw_acts: ``[N, d]`` the hidden states the SAE was trained on (same positions).
        item_ids: ``[N]`` item at each position.
        attributes: field -> (value names ``[V]``, bool matrix ``[n_items, V]``).
        titles: item titles indexed by item id (``None``: ids as text).
        decoder_directions: ``[L, d]`` latent directions in the raw hidden space
            (``sae.decoder_directions(raw=True)``); with ``item_embeddings``
            ``[n_items, d]`` enables the logit lens (skipped if either is ``None``).
        k: items per latent (top-activating and logit lens).
        min_support: positions a value needs to count in the summaries.
        min_corr, label_top: labelling (see ``label_latents``).

    Returns a JSON-serialisable dict (ints for ids, floats rounded to 4 decimals)::

        {"n_positions", "n_latents", "n_alive", "n_dead", "n_raw_dims", "min_support", "k",
         "fields": {field: {
             "summary": <monosemanticity_summary with the raw dims' linear_probe_corr and the
                         held_out_best_corr of both, rounded>,
             "values": [{"value", "support", "base_rate",
                         "sae": {"latent", "corr", "auc", "precision", "recall"},   # best by |corr|
                         "sae_auc": {...same keys...},                             # best by AUC
                         "raw": {"latent", "corr", "auc", "precision", "recall"},   # best raw dim
                         "raw_auc": {...}}]}},
         "latents": [{"id", "label", "firing_rate",
                      "top_items": [ids], "top_titles": [str],
                      "logit_items": [ids], "logit_titles": [str], "logit_scores": [float],
                      "best_values": [{"field", "value", "corr", "auc", "precision"}]}]}

    ``latents`` lists the alive latents only (firing on at least one position),
    in id order.  With several fields the labels and best values name values as
    ``field=value``.
    """
    sae_acts, raw_acts = _check_pair(sae_acts, raw_acts)
    n, n_latents = sae_acts.shape
    joint_matrix, all_names, all_fields, spans = _joint_attributes(attributes)
    joint = latent_attribute_stats(sae_acts, item_ids, joint_matrix, chunk=chunk)
    joint_raw = latent_attribute_stats(raw_acts, item_ids, joint_matrix, chunk=chunk)
    probe, held_out = _held_out_baselines(sae_acts, raw_acts, item_ids, joint_matrix, chunk)
    fields_out = _field_reports(joint, joint_raw, spans, min_support, probe, held_out)

    labels = label_latents(joint, all_names, top=label_top, min_corr=min_corr, min_support=min_support)
    top_c, top_v = _eligible_top_values(joint, label_top, min_support)
    alive = (joint["firing_rate"] > 0).nonzero().flatten().tolist()
    top_ids = top_items_by_activation(sae_acts, item_ids, k, positive_only=True, chunk=chunk)
    lens = _logit_lens_or_none(decoder_directions, item_embeddings, n_latents, k)
    latents = _latent_records(alive, joint, labels, top_ids, lens, titles, (top_c, top_v, all_fields))
    return {
        "n_positions": int(n),
        "n_latents": int(n_latents),
        "n_alive": len(alive),
        "n_dead": int(n_latents - len(alive)),
        "n_raw_dims": int(raw_acts.shape[1]),
        "min_support": int(min_support),
        "k": int(k),
        "fields": fields_out,
        "latents": latents,
    }
