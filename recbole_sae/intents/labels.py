"""Labels of the intent vocabulary's latents: the attribute values and the words their top items share.

A latent's label names (see :mod:`recbole_sae.intents.vocabulary` for the rules' meaning):

* per attribute field, the values held by at least ``rules.min_share`` of its top items, ranked by
  ``share * log(1 / base_rate)``, at most ``rules.label_values`` per field (:func:`attribute_labels`);
* the words of its top items' texts, ranked by TF-IDF across latents, at most ``rules.label_words``
  (:func:`word_labels`, words from :func:`text_words`);

joined by :func:`label_text`, e.g. ``"Nail Polish (0.9) · OPI (0.6) · words: lacquer, shimmer"``.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import TYPE_CHECKING, List

import torch

if TYPE_CHECKING:  # the rules only as a type: the vocabulary module imports this one
    from recbole_sae.intents.vocabulary import IntentRules

__all__ = ["STOPWORDS", "attribute_labels", "label_text", "text_words", "word_labels"]

STOPWORDS = frozenset(
    """
    a about above after again against all also am an and any are aren't as at be because been
    before being below between both but by can can't cannot could couldn't did didn't do does
    doesn't doing don't down during each few for from further had hadn't has hasn't have haven't
    having he her here hers herself him himself his how i if in into is isn't it it's its itself
    just let's me more most mustn't my myself no nor not now of off on once only or other ought
    our ours ourselves out over own same shan't she should shouldn't so some such than that that's
    the their theirs them themselves then there there's these they this those through to too under
    until up upon very via was wasn't we were weren't what when where which while who whom why will
    with won't would wouldn't you your yours yourself yourselves new one two three per
    """.split()
)
_WORD = re.compile(r"[a-z][a-z'\-]*[a-z]")


def text_words(text: str) -> set:
    """The label words of a text: lower case, >= 3 letters, no stopwords, no numbers."""
    words = set()
    for w in _WORD.findall(text.lower()):
        w = w.strip("'-")
        if len(w) >= 3 and w not in STOPWORDS:
            words.add(w)
    return words


def attribute_labels(top: torch.Tensor, attributes, rules: IntentRules, n_items: int, chunk: int = 1024):
    """Per latent: [[field, value, share], ...] (label order) and its best share (purity)."""
    n_lat = top.shape[0]
    chosen: List[List[list]] = [[] for _ in range(n_lat)]
    purity = torch.full((n_lat,), float("nan"))
    mask = (top >= 0).float()
    n_top = mask.sum(1).clamp_min(1)
    for field, (values, matrix) in attributes.items():
        matrix = torch.as_tensor(matrix).bool()
        if matrix.shape != (n_items, len(values)):
            raise ValueError(
                f"attribute '{field}': matrix of shape {tuple(matrix.shape)} does not match "
                f"{n_items} items x {len(values)} values"
            )
        if not values:
            continue
        m = matrix.float()
        base = m[1:].mean(0).clamp_min(1.0 / max(1, n_items - 1))
        specificity = torch.log(1.0 / base)
        share = torch.empty(n_lat, len(values))  # [L, V], filled in chunks to bound memory
        for start in range(0, n_lat, chunk):
            idx, msk = top[start : start + chunk], mask[start : start + chunk]
            share[start : start + chunk] = (m[idx.clamp_min(0)] * msk[..., None]).sum(1) / n_top[
                start : start + chunk, None
            ]
        best_share = share.max(1).values
        purity = torch.where(torch.isnan(purity) | (best_share > purity), best_share, purity)
        score = torch.where(share >= rules.min_share, share * specificity, torch.full_like(share, -1.0))
        if rules.label_values == 0:
            continue
        k = min(rules.label_values, len(values))
        top_scores, top_idx = torch.sort(score, dim=1, descending=True, stable=True)  # ties: value order
        top_scores, top_idx = top_scores[:, :k], top_idx[:, :k]
        top_shares = share.gather(1, top_idx)
        for latent, (scores, idx, shares) in enumerate(zip(top_scores.tolist(), top_idx.tolist(), top_shares.tolist())):
            for s, j, sh in zip(scores, idx, shares):
                if s <= 0:
                    break
                chosen[latent].append([field, values[j], round(sh, 3)])
    return chosen, purity


def word_labels(top: torch.Tensor, item_words: List[set], taken: List[List[list]], rules: IntentRules):
    """Per latent, its label words by TF-IDF across latents, leaving out the words of its values in ``taken``."""
    n_lat = top.shape[0]
    item_df: Counter = Counter()
    for words in item_words:
        item_df.update(words)
    too_common = {w for w, c in item_df.items() if c > rules.max_word_frac * max(1, len(item_words) - 1)}
    counters: List[Counter] = []
    df: Counter = Counter()
    for items in top.tolist():
        c: Counter = Counter()
        for item in items:
            if item >= 0:
                c.update(item_words[item])
        for w in too_common & c.keys():
            del c[w]
        counters.append(c)
        df.update(c.keys())
    n_top = (top >= 0).sum(1).tolist()
    words_out: List[List[str]] = []
    for latent in range(n_lat):
        n = n_top[latent]
        named = set()
        for _, value, _ in taken[latent]:
            named |= text_words(str(value))
        scored = []
        for word, count in counters[latent].items():
            tf = count / max(1, n)
            if tf < rules.min_share or word in named:
                continue
            idf = math.log((1 + n_lat) / (1 + df[word]))
            if tf * idf > 0:
                scored.append((-tf * idf, word))
        scored.sort()
        words_out.append([w for _, w in scored[: rules.label_words]])
    return words_out


def label_text(values: List[list], words: List[str]) -> str:
    """``"Nail Polish (0.9) · OPI (0.6) · words: lacquer, shimmer"`` (``"(unlabelled)"`` when both are empty)."""
    parts = [f"{value} ({share:.1f})" for _, value, share in values]
    if words:
        parts.append("words: " + ", ".join(words))
    return " · ".join(parts) if parts else "(unlabelled)"
