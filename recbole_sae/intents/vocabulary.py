"""The intent vocabulary: an SAE on item text embeddings, its live latents labelled and filtered.

:func:`build_intent_vocabulary` trains a :class:`~recbole_sae.sae.SparseAutoencoder` on the item
embeddings (rows ``1..``; row 0 is the padding item) and turns its latents into intents:

1. every latent that fires (activation > 0) on at least one item is *alive*;
2. its *top items* are the items with its largest activations (at most ``rules.top_items``);
3. its *label* names the attribute values shared by its top items and its characteristic words:

   * per attribute field, the values held by at least ``rules.min_share`` of the top items, ranked
     by ``share * log(1 / base_rate)`` (so a specific value such as "Nail Polish" outranks a
     generic one such as "Makeup"), at most ``rules.label_values`` per field, shown with their
     share: ``"Nail Polish (0.9)"``;
   * words of the top items' texts (lower case, stopwords, numbers and words shorter than 3
     letters removed, and words in the texts of more than ``rules.max_word_frac`` of all items;
     each item counts a word once), ranked by TF-IDF across latents: TF = share of
     the latent's top items whose text has the word (at least ``rules.min_share``), IDF =
     ``log((1 + n_alive) / (1 + df))`` with df = the number of live latents whose top items use
     the word. Words already named by an attribute value are skipped. At most
     ``rules.label_words``;

   e.g. ``"Nail Polish (0.9) · OPI (0.6) · words: lacquer, shimmer"``;
4. its *coherence* is the mean pairwise cosine similarity of its top items' embeddings after
   subtracting the mean embedding of all items (0: no more alike than random items, 1: identical
   directions); its *purity* is the share of its top items holding its best attribute value;
5. it is *kept* as an intent when it fires on at least ``rules.min_items`` items, on at most
   ``rules.max_items_frac`` of all items, and its coherence is at least ``rules.min_coherence``.

The intents are ordered by latent id. Their directions are the SAE decoder rows in the raw
embedding space (:meth:`SparseAutoencoder.decoder_directions` with ``raw=True``), L2-normalised.
``center`` is the SAE's output for all-zero latents (``decode(0)``), so an embedding is
``center + sum_j f_j * raw_direction_j`` up to the reconstruction error; subtracting it before
matching a query against the directions removes what all items share.

On the CPU the result is a deterministic function of the inputs, ``sae_cfg.seed`` and
``train_cfg.seed``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from safetensors.torch import load_file

from recbole_sae.fileio import write_json_atomic
from recbole_sae.intents.labels import STOPWORDS, attribute_labels, label_text, text_words, word_labels
from recbole_sae.progress import Progress
from recbole_sae.sae import SAEConfig, SAETrainConfig, SparseAutoencoder, train_sae
from recbole_sae.sae.config import reject_unknown_fields
from recbole_sae.sae.io import save_tensors

__all__ = [
    "IntentRules",
    "IntentVocabulary",
    "STOPWORDS",
    "build_intent_vocabulary",
    "text_words",
]

INTENTS_NAME = "intents.json"
TENSORS_NAME = "directions.safetensors"
SAE_DIR = "sae"
FORMAT_VERSION = 1


@dataclass
class IntentRules:
    """Which live latents become intents, and how they are labelled.

    Attributes:
        min_items: keep a latent only if it fires on at least this many items.
        max_items_frac: ... and on at most this share of all (non-padding) items.
        min_coherence: ... and its coherence (see the module docstring) is at least this.
        top_items: how many top-activating items are kept per latent (labels, coherence, reports).
        label_words: at most this many words in a label.
        label_values: at most this many values per attribute field in a label.
        min_share: a word or attribute value must be on at least this share of the top items.
        max_word_frac: words in the texts of more than this share of all items never label
            (template words such as "Brand" or "Genres", and words as broad as "makeup").
    """

    min_items: int = 5
    max_items_frac: float = 0.1
    min_coherence: float = 0.1
    top_items: int = 10
    label_words: int = 3
    label_values: int = 2
    min_share: float = 0.3
    max_word_frac: float = 0.3

    def __post_init__(self) -> None:
        for name in ("min_items", "top_items"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"IntentRules.{name} must be a positive integer, got {value!r}")
        for name in ("label_words", "label_values"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"IntentRules.{name} must be an integer >= 0, got {value!r}")
        if not 0.0 < float(self.max_items_frac) <= 1.0:
            raise ValueError(f"IntentRules.max_items_frac must be in (0, 1], got {self.max_items_frac!r}")
        if not -1.0 <= float(self.min_coherence) <= 1.0:
            raise ValueError(f"IntentRules.min_coherence must be in [-1, 1], got {self.min_coherence!r}")
        for name in ("min_share", "max_word_frac"):
            value = getattr(self, name)
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"IntentRules.{name} must be in [0, 1], got {value!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "IntentRules":
        reject_unknown_fields(cls, data)
        return cls(**dict(data))


class IntentVocabulary:
    """Intents from an SAE over item embeddings (see the module docstring).

    Attributes:
        sae: the trained SAE (eval mode).
        kept: latent id of each intent, ``torch.long`` ``[n_kept]``, ascending.
        directions: ``[n_kept, d]`` float32, unit-norm decoder rows in embedding space.
        center: ``[d]`` float32, the SAE's output for all-zero latents.
        labels: one readable label per intent.
        coherence: ``[n_kept]`` float32; purity: ``[n_kept]`` float32 (NaN without attributes).
        n_items_firing: ``[n_kept]`` long, items each intent fires on.
        top_items: per intent, its top items' internal ids (most active first).
        top_titles: per intent, the titles (or texts) of those items.
        words: per intent, its label words; values: per intent, ``[field, value, share]`` triples.
        latent_items: ``[n_latents]`` long, items every latent fires on (0 = dead).
        n_items: item count including the padding item; n_latents, n_alive, n_kept: counts.
    """

    def __init__(
        self,
        sae: SparseAutoencoder,
        kept: torch.Tensor,
        directions: torch.Tensor,
        center: torch.Tensor,
        labels: List[str],
        coherence: torch.Tensor,
        purity: torch.Tensor,
        n_items_firing: torch.Tensor,
        top_items: List[List[int]],
        top_titles: List[List[str]],
        words: List[List[str]],
        values: List[List[list]],
        latent_items: torch.Tensor,
        codes: Tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        n_items: int,
        rules: IntentRules,
    ):
        self.sae = sae
        self.kept = kept.to(torch.long)
        self.directions = directions.to(torch.float32).contiguous()
        self.center = center.to(torch.float32)
        self.labels = list(labels)
        self.coherence = coherence.to(torch.float32)
        self.purity = purity.to(torch.float32)
        self.n_items_firing = n_items_firing.to(torch.long)
        self.top_items = [list(map(int, t)) for t in top_items]
        self.top_titles = [list(map(str, t)) for t in top_titles]
        self.words = [list(w) for w in words]
        self.values = [list(v) for v in values]
        self.latent_items = latent_items.to(torch.long)
        self._codes = tuple(t.clone() for t in codes)  # (rows, intent index, value), kept intents only
        self.n_items = int(n_items)
        self.rules = rules

    # ------------------------------------------------------------------ counts
    @property
    def n_latents(self) -> int:
        return int(self.sae.cfg.d_sae)

    @property
    def n_alive(self) -> int:
        return int((self.latent_items > 0).sum().item())

    @property
    def n_kept(self) -> int:
        return int(self.kept.numel())

    @property
    def dim(self) -> int:
        return int(self.sae.cfg.d_in)

    def __len__(self) -> int:
        return self.n_kept

    def __repr__(self) -> str:
        return (
            f"IntentVocabulary(n_items={self.n_items}, n_latents={self.n_latents}, "
            f"n_alive={self.n_alive}, n_kept={self.n_kept})"
        )

    # ------------------------------------------------------------------ codes
    def item_codes(self) -> torch.Tensor:
        """SAE activations of every item on the kept intents, ``[n_items, n_kept]`` float32.

        Column ``j`` is latent ``kept[j]``; the padding row 0 is zero; most entries are zero.
        """
        rows, cols, vals = self._codes
        out = torch.zeros(self.n_items, self.n_kept, dtype=torch.float32)
        out[rows, cols] = vals
        return out

    def build_index(self, use_gpu: Union[str, bool] = "auto"):
        """An :class:`~recbole_sae.intents.index.IntentIndex` over the directions, centred on ``center``."""
        from recbole_sae.intents.index import IntentIndex

        return IntentIndex(self.directions, use_gpu=use_gpu, center=self.center)

    # ------------------------------------------------------------------ report
    def table(self, n: int = 20, order: str = "coherence", n_titles: int = 3) -> str:
        """A markdown table of ``n`` intents (most coherent first, or ``order="id"``)."""
        if order not in ("coherence", "id"):
            raise ValueError(f"order must be 'coherence' or 'id', got {order!r}")
        idx = list(range(self.n_kept))
        if order == "coherence":
            idx.sort(key=lambda i: (-float(self.coherence[i]), i))
        lines = [
            f"Intents: {self.n_kept} kept of {self.n_alive} live latents ({self.n_latents} in the SAE), "
            f"{self.n_items - 1} items.",
            "",
            "| intent | latent | label | n items | coherence | top items |",
            "| ---: | ---: | --- | ---: | ---: | --- |",
        ]
        for i in idx[: max(0, int(n))]:
            titles = "; ".join(_cell(t, 60) for t in self.top_titles[i][:n_titles])
            lines.append(
                f"| {i} | {int(self.kept[i])} | {_cell(self.labels[i], 120)} | {int(self.n_items_firing[i])} | "
                f"{float(self.coherence[i]):.3f} | {titles} |"
            )
        return "\n".join(lines) + "\n"

    # ------------------------------------------------------------------ io
    def save(self, directory: Union[str, Path]) -> Path:
        """Write ``sae/`` (the SAE), ``intents.json`` and ``directions.safetensors``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.sae.save(directory / SAE_DIR)
        rows, cols, vals = self._codes
        tensors = {
            "kept": self.kept.cpu().contiguous(),
            "directions": self.directions.cpu().contiguous(),
            "center": self.center.cpu().contiguous(),
            "coherence": self.coherence.cpu().contiguous(),
            "purity": self.purity.cpu().contiguous(),
            "n_items_firing": self.n_items_firing.cpu().contiguous(),
            "latent_items": self.latent_items.cpu().contiguous(),
            "code_rows": rows.cpu().contiguous(),
            "code_cols": cols.cpu().contiguous(),
            "code_vals": vals.cpu().contiguous(),
        }
        save_tensors(tensors, directory / TENSORS_NAME, {"format_version": str(FORMAT_VERSION)})
        meta = {
            "format_version": FORMAT_VERSION,
            "n_items": self.n_items,
            "n_latents": self.n_latents,
            "n_alive": self.n_alive,
            "n_kept": self.n_kept,
            "rules": self.rules.to_dict(),
            "intents": [
                {
                    "intent": i,
                    "latent": int(self.kept[i]),
                    "label": self.labels[i],
                    "n_items": int(self.n_items_firing[i]),
                    "coherence": float(self.coherence[i]),
                    "purity": None if math.isnan(float(self.purity[i])) else float(self.purity[i]),
                    "words": self.words[i],
                    "values": self.values[i],
                    "top_items": self.top_items[i],
                    "top_titles": self.top_titles[i],
                }
                for i in range(self.n_kept)
            ],
        }
        write_json_atomic(meta, directory / INTENTS_NAME, indent=1, ensure_ascii=False)
        return directory

    @classmethod
    def load(cls, directory: Union[str, Path]) -> "IntentVocabulary":
        """Load a vocabulary written by :meth:`save`."""
        directory = Path(directory)
        missing = [name for name in (INTENTS_NAME, TENSORS_NAME, SAE_DIR) if not (directory / name).exists()]
        if missing:
            raise FileNotFoundError(
                f"intent vocabulary folder {str(directory)!r} lacks {missing} (written by IntentVocabulary.save)"
            )
        with open(directory / INTENTS_NAME, "r", encoding="utf-8") as fh:
            meta = json.load(fh)
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{directory / INTENTS_NAME} has format version {meta.get('format_version')!r}, "
                f"expected {FORMAT_VERSION}"
            )
        t = load_file(str(directory / TENSORS_NAME), device="cpu")
        sae = SparseAutoencoder.load(directory / SAE_DIR)
        intents = meta["intents"]
        if len(intents) != t["kept"].numel():
            raise ValueError(f"{directory}: {INTENTS_NAME} and {TENSORS_NAME} disagree on the intent count")
        return cls(
            sae=sae,
            kept=t["kept"],
            directions=t["directions"],
            center=t["center"],
            labels=[it["label"] for it in intents],
            coherence=t["coherence"],
            purity=t["purity"],
            n_items_firing=t["n_items_firing"],
            top_items=[it["top_items"] for it in intents],
            top_titles=[it["top_titles"] for it in intents],
            words=[it["words"] for it in intents],
            values=[it["values"] for it in intents],
            latent_items=t["latent_items"],
            codes=(t["code_rows"], t["code_cols"], t["code_vals"]),
            n_items=int(meta["n_items"]),
            rules=IntentRules.from_dict(meta["rules"]),
        )


def _cell(text: str, limit: int) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------------- building
@torch.no_grad()
def _sparse_codes(sae: SparseAutoencoder, x: torch.Tensor, batch_size: int = 1024):
    """Nonzero activations of ``x`` [N, d]: (row, latent, value) tensors, row-major order."""
    rows, cols, vals = [], [], []
    for start in range(0, x.shape[0], batch_size):
        f = sae.encode(x[start : start + batch_size].to(device=sae.device, dtype=sae.dtype)).float().cpu()
        r, c = (f > 0).nonzero(as_tuple=True)
        rows.append(r + start)
        cols.append(c)
        vals.append(f[r, c])
    return torch.cat(rows), torch.cat(cols), torch.cat(vals)


def _top_items_per_latent(rows, cols, vals, d_sae: int, top: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per latent, its ``top`` rows by activation ([d_sae, top], -1 padded) and its firing count."""
    counts = torch.bincount(cols, minlength=d_sae)
    # order by latent, then activation (descending), then row (ascending): fully deterministic
    order = torch.argsort(rows, stable=True)
    order = order[torch.argsort(-vals[order], stable=True)]
    order = order[torch.argsort(cols[order], stable=True)]
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(order.numel()) - starts[cols[order]]
    keep = rank < top
    table = torch.full((d_sae, top), -1, dtype=torch.long)
    table[cols[order][keep], rank[keep]] = rows[order][keep]
    return table, counts


def _coherence(centered: torch.Tensor, top: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    """Mean pairwise cosine of the rows of ``centered`` listed in ``top`` ([L, t], -1 = none)."""
    unit = torch.nn.functional.normalize(centered, dim=1)
    out = torch.full((top.shape[0],), float("nan"))
    for start in range(0, top.shape[0], chunk):
        idx = top[start : start + chunk]
        mask = (idx >= 0).float()
        v = unit[idx.clamp_min(0)] * mask[..., None]  # [c, t, d]
        gram = v @ v.transpose(1, 2)
        n = mask.sum(1)
        pair_sum = gram.sum((1, 2)) - (gram.diagonal(dim1=1, dim2=2)).sum(1)
        pairs = n * (n - 1)
        out[start : start + chunk] = torch.where(
            pairs > 0, pair_sum / pairs.clamp_min(1), torch.full_like(n, float("nan"))
        )
    return out


class _LiveLatents(NamedTuple):
    """What the SAE's live latents are on the items (``alive``: latent ids; per live latent the rest)."""

    rows: torch.Tensor  # the nonzero codes of all latents: item ids, latent ids, activations
    cols: torch.Tensor
    vals: torch.Tensor
    counts: torch.Tensor  # [d_sae] items each latent fires on
    alive: torch.Tensor
    top: torch.Tensor  # [n_alive, rules.top_items] top items, -1 padded
    coherence: torch.Tensor
    values: List[List[list]]  # label values (field, value, share)
    purity: torch.Tensor
    words: List[List[str]]


def _check_inputs(item_embeddings: torch.Tensor, texts: Sequence[str], titles: Optional[Sequence[str]]) -> torch.Tensor:
    """The real items' embeddings ``[n_items - 1, d]`` (float32, CPU), checked against the texts and titles."""
    if not isinstance(item_embeddings, torch.Tensor) or item_embeddings.dim() != 2:
        raise ValueError("item_embeddings must be a [n_items, d] tensor")
    n_items = item_embeddings.shape[0]
    if n_items < 3:
        raise ValueError(f"need at least two real items besides the padding row, got {n_items - 1}")
    if len(texts) != n_items:
        raise ValueError(f"texts has {len(texts)} entries for {n_items} items (row 0 = padding)")
    if titles is not None and len(titles) != n_items:
        raise ValueError(f"titles has {len(titles)} entries for {n_items} items (row 0 = padding)")
    x = item_embeddings[1:].detach().to(torch.float32).cpu()
    if not torch.isfinite(x).all():
        raise FloatingPointError("item_embeddings contain NaN or inf values")
    return x


def _trained_sae(
    sae: Optional[SparseAutoencoder], sae_cfg: SAEConfig, train_cfg: Optional[SAETrainConfig], x: torch.Tensor
) -> SparseAutoencoder:
    """``sae`` checked against the embedding width, or a new one trained on ``x``; in eval mode."""
    d = x.shape[1]
    if sae is None:
        if sae_cfg.d_in != d:
            raise ValueError(f"SAEConfig.d_in={sae_cfg.d_in} does not match the embedding width {d}")
        sae = SparseAutoencoder(sae_cfg)
        with Progress("intent SAE", unit="steps") as meter:
            train_sae(sae, x, train_cfg if train_cfg is not None else SAETrainConfig(), progress_fn=meter)
    elif sae.cfg.d_in != d:
        raise ValueError(f"the given SAE has d_in={sae.cfg.d_in}, the embeddings have width {d}")
    sae.eval()
    return sae


def _describe_live_latents(
    sae: SparseAutoencoder, x: torch.Tensor, texts: Sequence[str], attributes: dict, rules: IntentRules
) -> _LiveLatents:
    """Steps 1-4 of the module docstring: live latents, their top items, labels and coherence."""
    n_items = x.shape[0] + 1
    with Progress("intent vocabulary", 4, "phases") as meter:  # codes, coherence, attribute labels, word labels
        rows, cols, vals = _sparse_codes(sae, x)  # encoded on the SAE's device, kept on the CPU
        rows = rows + 1  # back to internal item ids
        top, counts = _top_items_per_latent(rows, cols, vals, sae.cfg.d_sae, rules.top_items)
        alive = (counts > 0).nonzero().flatten()
        top_alive = top[alive]
        meter.update()

        centered = torch.cat([torch.zeros(1, x.shape[1]), x - x.mean(0, keepdim=True)])
        coherence = _coherence(centered, top_alive)
        meter.update()
        values, purity = attribute_labels(top_alive, attributes, rules, n_items)
        meter.update()
        item_words = [text_words(t) if i else set() for i, t in enumerate(texts)]
        words = word_labels(top_alive, item_words, values, rules)
        meter.update()
    return _LiveLatents(rows, cols, vals, counts, alive, top_alive, coherence, values, purity, words)


def _kept_positions(live: _LiveLatents, rules: IntentRules, n_real: int) -> torch.Tensor:
    """Step 5: the positions among the live latents of those kept as intents."""
    firing = live.counts[live.alive]
    keep = (
        (firing >= rules.min_items)
        & (firing <= rules.max_items_frac * n_real)
        & (torch.nan_to_num(live.coherence, nan=-2.0) >= rules.min_coherence)
    )
    return keep.nonzero().flatten()


def _directions_and_center(sae: SparseAutoencoder, kept: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """The kept latents' unit decoder rows in embedding space, and the SAE's output for all-zero latents."""
    raw = sae.decoder_directions(raw=True).float().cpu()[kept]
    directions = torch.nn.functional.normalize(raw, dim=1)
    with torch.no_grad():
        center = sae.decode(torch.zeros(1, sae.cfg.d_sae, device=sae.device, dtype=sae.dtype)).float().cpu()[0]
    return directions, center


def _kept_codes(live: _LiveLatents, kept: torch.Tensor, d_sae: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The nonzero codes on the kept latents: (item ids, intent index, activation)."""
    column = torch.full((d_sae,), -1, dtype=torch.long)
    column[kept] = torch.arange(kept.numel())
    on_kept = column[live.cols] >= 0
    return live.rows[on_kept], column[live.cols[on_kept]], live.vals[on_kept]


def build_intent_vocabulary(
    item_embeddings: torch.Tensor,
    texts: Sequence[str],
    attributes: Optional[Mapping[str, Tuple[Sequence[str], torch.Tensor]]],
    sae_cfg: SAEConfig,
    train_cfg: Optional[SAETrainConfig] = None,
    rules: Optional[IntentRules] = None,
    titles: Optional[Sequence[str]] = None,
    sae: Optional[SparseAutoencoder] = None,
) -> IntentVocabulary:
    """Train an SAE on item embeddings and turn its live latents into labelled intents.

    Args:
        item_embeddings: ``[n_items, d]``; row 0 (the padding item) is left out of everything.
        texts: item texts, ``len == n_items`` (label words).
        attributes: ``{field: (values, matrix [n_items, n_values] bool)}``, e.g. from
            :func:`recbole_sae.data.item_text.item_attribute_matrix`; may be empty.
        sae_cfg: the SAE's configuration (``d_in`` must equal ``d``).
        train_cfg: its training settings (default :class:`SAETrainConfig`).
        rules: which latents to keep and how to label them (default :class:`IntentRules`).
        titles: item names for reports (default: the texts).
        sae: an already trained SAE to use instead of training one (``sae_cfg`` is then ignored).
    """
    x = _check_inputs(item_embeddings, texts, titles)
    n_items = x.shape[0] + 1
    rules = rules if rules is not None else IntentRules()
    attributes = dict(attributes or {})
    sae = _trained_sae(sae, sae_cfg, train_cfg, x)
    live = _describe_live_latents(sae, x, texts, attributes, rules)
    pos = _kept_positions(live, rules, n_items - 1)
    kept = live.alive[pos]
    directions, center = _directions_and_center(sae, kept)

    names = titles if titles is not None else texts
    top_lists = [[i for i in live.top[p].tolist() if i >= 0] for p in pos.tolist()]
    return IntentVocabulary(
        sae=sae,
        kept=kept,
        directions=directions,
        center=center,
        labels=[label_text(live.values[p], live.words[p]) for p in pos.tolist()],
        coherence=live.coherence[pos],
        purity=live.purity[pos],
        n_items_firing=live.counts[live.alive][pos],
        top_items=top_lists,
        top_titles=[[str(names[i]) for i in items] for items in top_lists],
        words=[live.words[p] for p in pos.tolist()],
        values=[live.values[p] for p in pos.tolist()],
        latent_items=live.counts,
        codes=_kept_codes(live, kept, sae.cfg.d_sae),
        n_items=n_items,
        rules=rules,
    )
