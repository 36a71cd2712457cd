r"""SteerableSASRec: edit the SAE latents of a trained SASRecSAE at inference time.

"Sparse Autoencoders for Sequential Recommendation Models: Interpretation and Flexible Control",
arXiv 2507.12202 (2025), the "flexible control" part: encode the hidden state at the SAE's site,
change chosen latents, decode, finish the forward pass and score all items.

The model loads the SASRec, the SAE and the ablation mean of a finished SASRecSAE run
(``sae_run``: its folder or its ``model.pth``); its architecture keys (``hidden_size``,
``n_layers``, ``sae_*``, ...) are taken from that run's saved config, so the shapes always fit.
Nothing is trained. An edit is a list of :class:`LatentEdit` (``add``, ``scale`` or ``clamp`` one
latent), applied in order to the latents ``f`` of the state at ``steer_positions`` (the last real
position, or all of them). The state passed on is ``x + (decode(f') - decode(f))``: the SAE's
error term is kept, so an empty edit gives bit-identical scores to the unsteered model.

Edits are written as text (``--steer`` on the command line)::

    latent=12:+6            add 6 to latent 12            (also latent=12:add=6, latent=12:-4)
    latent=12:scale=2       multiply latent 12 by 2
    latent=12:clamp=10      set latent 12 to 10
    class=Western:+6        add 6 to the latent(s) that stand for the attribute value
    categories=Nail Polish:-4

separated by ``,`` or ``;``. An attribute value is resolved through the run's
``interpretation/interpretation.json``: its ``steer_latents_per_value`` latents with the highest
positive correlation with the value (logged with their correlation, AUC, precision and label).

Python API::

    from recbole_sae.quick_start import load_data_and_model
    run = "runs/SASRecSAE-ml-100k-..."
    config, model, dataset, train, valid, test = load_data_and_model(
        run, config_dict={"model": "SteerableSASRec", "sae_run": run})
    batch = next(iter(test))[0]
    with model.steer("class=Western:+6"):                 # or [LatentEdit(12, "clamp", 10.0)]
        scores = model.full_sort_predict(batch)
    with model.steer("latent=12:+4", positions="all"):
        ...
    model.explain(batch, k=10)                            # top items and the latents behind them

``explain`` attributes an item's score to the latents at the last position with the logit lens:
contribution of latent ``j`` to item ``i`` = ``f_j * (d_j . e_i)``, ``d_j`` the latent's decoder
direction in the raw hidden space and ``e_i`` the item embedding (SASRec scores with the tied item
embeddings). For an SAE on the last block's output this is exact: the contributions of all latents
plus the decoder-bias term ``(b_dec / s + mean) . e_i`` and the error term ``(x - x_hat) . e_i``
sum to the score. For an earlier site it is the direct-path approximation: it ignores the blocks
after the site (attention, feed-forward and LayerNorm transform the state), so the terms do not
sum to the score.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import math
import numbers
import os
import re
from dataclasses import dataclass
from logging import getLogger
from typing import Iterable, List, Optional, Sequence

import torch

from recbole_sae import runfiles
from recbole_sae.errors import ConfigError
from recbole_sae.model.hooks import SITE_POSITIONS, position_mask, replace_at
from recbole_sae.model.layers import trim
from recbole_sae.model.sasrec_plus import SASRecPlus
from recbole_sae.model.sasrec_sae import SASRecSAE

OPS = ("add", "scale", "clamp")
STEER_SYNTAX = (
    "items like latent=12:+6, latent=12:scale=2, latent=12:clamp=10, class=Western:+6 or "
    "'categories=Nail Polish:-4', separated by ',' or ';'"
)

logger = getLogger()


# --------------------------------------------------------------------------- edits
@dataclass(frozen=True)
class LatentEdit:
    """One edit of one SAE latent: ``add`` ``strength`` to it, ``scale`` it by ``strength`` or
    ``clamp`` it to ``strength`` (at every steered position)."""

    latent: int
    op: str = "add"
    strength: float = 0.0

    def __post_init__(self):
        latent = (
            self.latent.item() if isinstance(self.latent, torch.Tensor) and self.latent.numel() == 1 else self.latent
        )
        if isinstance(latent, bool) or not isinstance(latent, numbers.Integral):
            raise ConfigError(f"a latent id must be an integer, got {self.latent!r}")
        object.__setattr__(self, "latent", int(latent))
        if self.op not in OPS:
            raise ConfigError(f"edit op must be one of {OPS}, got {self.op!r}")
        strength = float(self.strength)
        if not math.isfinite(strength):
            raise ConfigError(f"edit strength must be a finite number, got {self.strength!r}")
        object.__setattr__(self, "strength", strength)

    def __str__(self) -> str:
        if self.op == "add":
            return f"latent={self.latent}:{self.strength:+g}"
        return f"latent={self.latent}:{self.op}={self.strength:g}"


class LatentEdits:
    """The function ``f -> f'`` of a list of :class:`LatentEdit`, applied in order.

    ``f'`` is a new tensor; with no edits it equals ``f`` exactly.
    """

    def __init__(self, edits: Iterable[LatentEdit] = ()):
        self.edits = tuple(edits)

    def __call__(self, f: torch.Tensor) -> torch.Tensor:
        g = f.clone()
        for e in self.edits:
            column = g[..., e.latent]
            if e.op == "add":
                g[..., e.latent] = column + e.strength
            elif e.op == "scale":
                g[..., e.latent] = column * e.strength
            else:
                g[..., e.latent] = torch.full_like(column, e.strength)
        return g

    def __len__(self) -> int:
        return len(self.edits)

    def __repr__(self) -> str:
        return "LatentEdits(" + ", ".join(str(e) for e in self.edits) + ")"


@dataclass(frozen=True)
class SteerTerm:
    """One parsed item of a ``--steer`` text: a target (``latent=ID`` or ``FIELD=VALUE``) and an
    optional op and strength (a sweep template like ``class=Western`` has neither)."""

    field: str
    value: str
    op: Optional[str] = None
    strength: Optional[float] = None
    text: str = ""

    @property
    def is_latent(self) -> bool:
        return self.field == "latent"

    @property
    def target(self) -> str:
        return f"{self.field}={self.value}"


_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_OP = re.compile(rf"^(?:(?P<op>add|scale|clamp)\s*(?:=\s*(?P<s1>{_NUMBER}))?|(?P<s2>{_NUMBER}))$", re.IGNORECASE)
# A ',' or ';' starts a new item only when a 'name=' follows, so values may hold commas.
_SPLIT = re.compile(r"[;,](?=\s*[^,;:=]+=)")


def parse_steer(text: str, require_strength: bool = True) -> List[SteerTerm]:
    """Parse a ``--steer`` text (see the module docstring) into :class:`SteerTerm` s.

    With ``require_strength=False`` an item may be a bare target (``class=Western``) or a target
    with an op but no number (``class=Western:clamp``): a sweep template.
    """
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"empty steering edit: write {STEER_SYNTAX}")
    terms = []
    for item in _SPLIT.split(text):
        item = item.strip()
        if not item:
            continue
        if ":" in item:
            target, _, op_text = item.rpartition(":")
        else:
            target, op_text = item, ""
        field, eq, value = target.partition("=")
        field, value = field.strip(), value.strip()
        if not eq or not field or not value:
            raise ConfigError(f"cannot read the steering edit '{item}': expected {STEER_SYNTAX}")
        if field == "latent":
            try:
                value = str(int(value))
            except ValueError:
                raise ConfigError(f"latent id must be an integer in '{item}'") from None
        op, strength = None, None
        if op_text.strip():
            m = _OP.match(op_text.strip())
            if not m:
                raise ConfigError(
                    f"cannot read the edit '{op_text.strip()}' of '{item}': use +S / -S (add), add=S, "
                    f"scale=S or clamp=S; {STEER_SYNTAX}"
                )
            op = (m.group("op") or "add").lower()
            number = m.group("s1") or m.group("s2")
            strength = float(number) if number is not None else None
            if strength is not None and not math.isfinite(strength):
                raise ConfigError(f"the strength of '{item}' is not a finite number: write e.g. '{target}:scale=2'")
        if require_strength and strength is None:
            raise ConfigError(f"the steering edit '{item}' has no strength: write e.g. '{target}:+6' ({STEER_SYNTAX})")
        terms.append(SteerTerm(field, value, op, strength, item))
    if not terms:
        raise ConfigError(f"empty steering edit: write {STEER_SYNTAX}")
    return terms


# --------------------------------------------------------------------------- the model
class SteerableSASRec(SASRecSAE):
    """A SASRecSAE loaded from a finished run whose latents can be edited (see the module docstring)."""

    requires_sae_run = True  # SASRecSAE.__init__ loads the run's SASRec and SAE, or says sae_run is missing

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()  # inference only: no dropout, whoever calls it
        self.steer_positions = self._check_positions(config["steer_positions"] or "last")
        self.latents_per_value = int(config["steer_latents_per_value"] or 1)
        if self.latents_per_value < 1:
            raise ConfigError(f"steer_latents_per_value must be >= 1, got {self.latents_per_value}")
        self._config = config
        self._dataset = dataset
        self._interpretation = None
        self._attributes: dict = {}
        self._resolved: dict = {}
        self._titles = None

    @staticmethod
    def _check_positions(positions: str) -> str:
        if positions not in SITE_POSITIONS:
            raise ConfigError(f"steer positions must be one of {SITE_POSITIONS}, got '{positions}'")
        return positions

    # -- forward with the edit at the steered positions ----------------------------------------------
    def forward(self, item_seq, item_seq_len, all_positions: bool = False):
        if not callable(self.intervention):
            return super().forward(item_seq, item_seq_len, all_positions)
        self.site.positions = position_mask(trim(item_seq, item_seq_len), item_seq_len, self.steer_positions)
        with self.site.intervene(self._edit()):
            return SASRecPlus.forward(self, item_seq, item_seq_len, all_positions)

    def _edit(self):
        fn = self.intervention
        if not callable(fn):
            return super()._edit()
        sae = self.sae

        def rows(x):
            f = sae.encode(x)
            return sae.reconstruct_with_error(x, fn(f), f=f)

        return lambda out, pos: replace_at(out, pos, rows)

    @contextlib.contextmanager
    def steer(self, edits, positions: Optional[str] = None):
        """Within the block, the model's forward passes apply ``edits``.

        ``edits``: a ``--steer`` text, a :class:`LatentEdit`, a :class:`SteerTerm` or a list of
        those (empty: no edit, same scores). ``positions``: 'last' or 'all' (default:
        ``steer_positions``). Yields the :class:`LatentEdits` applied.
        """
        fn = LatentEdits(self.resolve(edits))
        positions = self._check_positions(positions or self.steer_positions)
        previous = (self.intervention, self.steer_positions)
        self.intervention, self.steer_positions = fn, positions
        try:
            yield fn
        finally:
            self.intervention, self.steer_positions = previous

    # -- edits from text and attribute values --------------------------------------------------------
    def resolve(self, edits) -> List[LatentEdit]:
        """``edits`` (text, :class:`LatentEdit`, :class:`SteerTerm` or a list) -> checked LatentEdits."""
        if edits is None:
            return []
        if isinstance(edits, (str, LatentEdit, SteerTerm)):
            edits = [edits]
        out: List[LatentEdit] = []
        for edit in edits:
            if isinstance(edit, LatentEdit):
                self.check_latent(edit.latent)
                out.append(edit)
            elif isinstance(edit, SteerTerm):
                out += self.resolve_term(edit)
            elif isinstance(edit, str):
                for term in parse_steer(edit):
                    out += self.resolve_term(term)
            else:
                raise ConfigError(f"cannot steer with {edit!r}: pass text ({STEER_SYNTAX}) or LatentEdit objects")
        return out

    def resolve_term(
        self, term: SteerTerm, op: Optional[str] = None, strength: Optional[float] = None
    ) -> List[LatentEdit]:
        """The LatentEdits of one term; ``op`` and ``strength`` override the term's (sweeps)."""
        op = op or term.op or "add"
        strength = term.strength if strength is None else strength
        if strength is None:
            raise ConfigError(f"the steering edit '{term.text}' has no strength: write e.g. '{term.target}:+6'")
        return [LatentEdit(latent, op, strength) for latent in self.term_latents(term)]

    def term_latents(self, term: SteerTerm) -> List[int]:
        if term.is_latent:
            latent = int(term.value)
            self.check_latent(latent)
            return [latent]
        return [r["latent"] for r in self.latents_for(term.field, term.value)]

    def check_latent(self, latent: int) -> None:
        d_sae = self.sae.cfg.d_sae
        if not 0 <= int(latent) < d_sae:
            raise ConfigError(
                f"latent {latent} is out of range: the SAE has {d_sae} latents (valid ids 0..{d_sae - 1})"
            )

    def latents_for(self, field: str, value: str, n: Optional[int] = None) -> List[dict]:
        """The latents that stand for ``field=value``: the ``n`` (default ``steer_latents_per_value``)
        latents with the highest positive correlation with the value, from interpretation.json
        (the value's best latent and every latent that lists the value among its best values).

        Returns records ``{"latent", "corr", "auc", "precision", "label"}``, best first.
        """
        n = n or self.latents_per_value
        key = (field, str(value), n)
        if key in self._resolved:
            return self._resolved[key]
        interp = self.load_interpretation(required=f"steering by an attribute value ({field}={value})")
        fields = interp.get("fields", {})
        if field not in fields:
            hint = ""
            if self._dataset is not None and field in _item_fields(self._dataset):
                hint = f" '{field}' is an item field of the dataset: re-run SASRecSAE with it in item_attributes."
            else:
                close = difflib.get_close_matches(field, list(fields), n=3, cutoff=0.5)
                hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(
                f"attribute field '{field}' is not in the interpretation of {self.run_dir} "
                f"(fields: {', '.join(fields) or 'none'}).{hint}"
            )
        records = {str(v["value"]): v for v in fields[field]["values"]}
        value = str(value)
        if value not in records:
            raise ConfigError(self._unknown_value_message(field, value, list(records)))
        candidates = {}
        for key_name, source in (("sae", "best latent by correlation"), ("sae_auc", "best latent by AUC")):
            rec = records[value].get(key_name)
            if rec and (rec.get("corr") or 0) > 0:
                candidates.setdefault(int(rec["latent"]), {**_stats(rec), "source": source})
        for lat in interp.get("latents", []):
            for bv in lat.get("best_values", []):
                if bv.get("field") == field and str(bv.get("value")) == value and (bv.get("corr") or 0) > 0:
                    candidates.setdefault(int(lat["id"]), {**_stats(bv), "source": "lists the value among its best"})
        if not candidates:
            best = records[value].get("sae") or {}
            raise ConfigError(
                f"no SAE latent correlates positively with {field}={value} in {self.run_dir} (its best latent "
                f"{best.get('latent')} has corr {best.get('corr')}): steer a latent by id instead (latent=ID:+S)"
            )
        chosen = sorted(candidates.items(), key=lambda kv: (-(kv[1]["corr"] or 0.0), kv[0]))[:n]
        out = []
        for latent, rec in chosen:
            self.check_latent(latent)
            out.append({"latent": latent, **rec, "label": self.latent_label(latent)})
        record = records[value]
        logger.info(
            f"steering {field}={value} (support {record.get('support')}, base rate {record.get('base_rate')}): "
            f"top {n} latent(s) by positive correlation of {len(candidates)} candidate(s): "
            + "; ".join(
                f"latent {r['latent']} (corr {r['corr']}, AUC {r['auc']}, precision {r['precision']}, "
                f"{r['source']}; label '{r['label']}')"
                for r in out
            )
        )
        self._resolved[key] = out
        return out

    def _unknown_value_message(self, field: str, value: str, known: Sequence[str]) -> str:
        dataset_values = []
        if self._dataset is not None and field in _item_fields(self._dataset):
            dataset_values = self.attribute(field)[0]
        pool = list(dict.fromkeys(list(known) + list(dataset_values)))
        close = difflib.get_close_matches(value, pool, n=5, cutoff=0.5)
        close += [v for v in pool if v.lower() == value.lower() and v not in close]
        where = "the interpretation" if value in dataset_values else "the dataset or the interpretation"
        hint = f" Close matches: {', '.join(close)}." if close else f" Values: {', '.join(pool[:30])}."
        if value in dataset_values:
            hint += " The value is in the dataset: re-run SASRecSAE so that its interpretation covers it."
        return f"attribute value {field}={value} is not in {where} of {self.run_dir}.{hint}"

    def target_of(self, term: SteerTerm) -> Optional[tuple[str, str]]:
        """The attribute value a term aims at: its own, or a latent's best value in the interpretation."""
        if not term.is_latent:
            return term.field, term.value
        best = self._best_value(int(term.value))
        return (str(best["field"]), str(best["value"])) if best else None

    def target_sign(self, term: SteerTerm) -> int:
        """+1 when raising the term's latent(s) should raise its target's share: an attribute value's
        latents correlate positively with it; a latent's best value may correlate negatively (-1)."""
        if not term.is_latent:
            return 1
        best = self._best_value(int(term.value)) or {}
        return -1 if (best.get("corr") or 0) < 0 else 1

    def _best_value(self, latent: int) -> Optional[dict]:
        interp = self.load_interpretation()
        for lat in (interp or {}).get("latents", []):
            if int(lat["id"]) == latent and lat.get("best_values"):
                return lat["best_values"][0]
        return None

    # -- the run's interpretation, item attributes and titles ----------------------------------------
    @property
    def interpretation_path(self) -> str:
        return os.path.join(self.run_dir, runfiles.INTERPRETATION_DIR, runfiles.INTERPRETATION_JSON)

    def load_interpretation(self, required: Optional[str] = None) -> Optional[dict]:
        """The run's interpretation.json (``None`` when absent, an error when ``required``)."""
        if self._interpretation is None and os.path.isfile(self.interpretation_path):
            with open(self.interpretation_path, encoding="utf-8") as f:
                self._interpretation = json.load(f)
        if self._interpretation is None and required:
            raise ConfigError(
                f"{required} needs {self.interpretation_path}, which the SASRecSAE run {self.run_dir} does "
                "not have: run SASRecSAE with item_attributes set (e.g. --item_attributes=\"['class']\") first, "
                "or steer latents by id (latent=12:+6)"
            )
        return self._interpretation

    def latent_label(self, latent: int) -> str:
        interp = self.load_interpretation() or {}
        labels = {int(lat["id"]): lat.get("label") for lat in interp.get("latents", [])}
        return labels.get(int(latent)) or ("unlabelled" if interp else "no interpretation")

    def attribute(self, field: str):
        """``(values, [n_items, V] bool matrix)`` of an item attribute of the dataset."""
        if field not in self._attributes:
            from recbole_sae.data.item_text import item_attribute_matrix

            self._attributes[field] = item_attribute_matrix(self._dataset, field)
        return self._attributes[field]

    def item_titles(self) -> List[str]:
        if self._titles is None:
            from recbole_sae.data.item_text import item_titles

            self._titles = item_titles(self._dataset, self._config)
        return self._titles

    # -- explanations ---------------------------------------------------------------------------------
    @torch.no_grad()
    def _last_states(self, interaction):
        """(output [B, H], site state x [B, H], latents f [B, d_sae], edited latents f' [B, d_sae])
        at the last real position, with the current steering active."""
        seq, lengths = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
        with self.site.capture() as states:  # registered first: sees the state before the edit
            output = self.forward(seq, lengths)
        x = states[-1][torch.arange(seq.size(0), device=seq.device), lengths - 1]
        f = self.sae.encode(x)
        edit = self.intervention if callable(self.intervention) else None
        if self.intervention is not None and edit is None:
            raise ConfigError(f"explanations need no intervention or a latent edit, not '{self.intervention}'")
        return output, x, f, (edit(f) if edit is not None else f)

    @property
    def contributions_exact(self) -> bool:
        """True when the SAE reads the last block's output and that output is the sequence state (the
        logit lens is then exact; ``query_pre_ln`` has a final LayerNorm after it)."""
        return self.block == "post_ln" and self.site.module is self.trm_encoder.layer[-1]

    @torch.no_grad()
    def logit_contributions(self, interaction, items: Optional[torch.Tensor] = None) -> dict:
        """Per user and item: the latents' logit-lens contributions and the other terms of the score.

        ``items``: ``[B, m]`` item ids (default: all items). Returns ``{"score" [B, m],
        "latents" [B, d_sae, m] (activation x decoder direction . item embedding), "bias" [B, m],
        "error" [B, m], "activations" [B, d_sae] (edited), "exact"}``. When ``exact``,
        ``latents.sum(1) + bias + error == score`` up to rounding.
        """
        self.eval()
        output, x, f, f_used = self._last_states(interaction)
        emb = self.item_embedding.weight
        if items is None:
            items = torch.arange(emb.size(0), device=emb.device).expand(x.size(0), -1)
        items = items.to(emb.device)
        e = emb[items]  # [B, m, H]
        directions = self.sae.decoder_directions(raw=True).to(e)  # [d_sae, H]
        zero = torch.zeros(1, self.sae.cfg.d_sae, device=x.device, dtype=x.dtype)
        bias_state = self.sae.decode(zero)[0]  # b_dec / s + mean
        error_state = x - self.sae.decode(f)
        return {
            "score": torch.einsum("bh,bmh->bm", output, e),
            "latents": f_used[:, :, None] * torch.einsum("dh,bmh->bdm", directions, e),
            "bias": e @ bias_state,
            "error": torch.einsum("bh,bmh->bm", error_state, e),
            "activations": f_used,
            "exact": self.contributions_exact,
        }

    @torch.no_grad()
    def explain(self, interaction, k: int = 10, n_latents: int = 5, exclude_seen: bool = False) -> List[dict]:
        """Per user: the top-``k`` items (with the current steering) and the ``n_latents`` latents that
        raised each item's score the most (see the module docstring), with their labels.

        The ranking excludes the padding item, and with ``exclude_seen`` the items of the input
        sequence (RecBole's sequential evaluation excludes none).
        """
        self.eval()
        output, *_ = self._last_states(interaction)
        scores = output @ self.item_embedding.weight.t()
        scores[:, 0] = -math.inf
        if exclude_seen:
            scores.scatter_(1, interaction[self.ITEM_SEQ], -math.inf)
        top = torch.topk(scores, k, dim=-1)
        parts = self.logit_contributions(interaction, top.indices)
        titles = self._titles_or_none()
        users = interaction[self.USER_ID].tolist() if self.USER_ID in interaction else [None] * len(interaction)
        out = []
        for b, user in enumerate(users):
            items = []
            for m, item in enumerate(top.indices[b].tolist()):
                contrib = parts["latents"][b, :, m]
                order = torch.argsort(contrib, descending=True)[:n_latents].tolist()
                shown = [
                    {
                        "latent": j,
                        "activation": round(float(parts["activations"][b, j]), 6),
                        "contribution": round(float(contrib[j]), 6),
                        "label": self.latent_label(j),
                    }
                    for j in order
                    if float(contrib[j]) > 0
                ]
                rest = float(contrib.sum()) - sum(s["contribution"] for s in shown)
                items.append(
                    {
                        "item": item,
                        "title": titles[item] if titles else str(item),
                        "score": round(float(parts["score"][b, m]), 6),
                        "latents": shown,
                        "other_latents": round(rest, 6),
                        "bias": round(float(parts["bias"][b, m]), 6),
                        "error": round(float(parts["error"][b, m]), 6),
                    }
                )
            out.append({"user": user, "items": items, "exact": parts["exact"]})
        return out

    def _titles_or_none(self) -> Optional[List[str]]:
        try:
            return self.item_titles()
        except ConfigError as err:
            logger.warning(f"item titles unavailable ({err}): items are shown by id")
            return None


def _stats(rec: dict) -> dict:
    return {key: rec.get(key) for key in ("corr", "auc", "precision")}


def _item_fields(dataset) -> List[str]:
    feat = getattr(dataset, "item_feat", None)
    return [] if feat is None else list(feat.columns)
