"""Item text, titles and attribute matrices from a RecBole ``Dataset``'s item features.

Everything here is indexed by RecBole's internal item id: entry/row 0 is the padding item.

Item text (:func:`item_texts`)
------------------------------
The text of an item is ``config["item_text_template"]`` with every ``{field}`` replaced by the
item's value of that field (the fields come from ``config["item_text_fields"]``). A field's
value is rendered by its RecBole type:

* ``token``: the token itself (``dataset.id2token``); ``[PAD]`` (a missing value) is empty;
* ``token_seq``: its non-padding tokens, joined with ``", "`` -- except the title field
  (``config["item_title_field"]``), whose tokens are words of one name (ml-100k splits titles
  on spaces) and are joined with ``" "``;
* ``float``: an integral value without decimals (``1995``), otherwise two decimals with
  trailing zeros dropped (``12.5``) or three significant digits below 1 (``0.125``); NaN is
  empty. ``{field:spec}`` in the template formats the float with ``spec`` instead;
* ``float_seq``: its values rendered as floats, joined with ``", "``.

Empty values never leave template junk behind (no ``"Brand: ."``, no ``"()"``). The template is
cut into sentences (after ``.``, ``!``, ``?`` or ``;`` followed by a space or the end, and at
line breaks), each sentence into clauses (at ``", "``), and bracket groups ``(...)`` /
``[...]`` are sub-segments too. A segment that names at least one field and whose fields are all
empty is dropped whole, with its literal text; segments whose fields are partly filled are kept.
Spaces are tidied afterwards. With the ml-100k template
``"{movie_title} ({release_year}). Genres: {class}."`` item ``1`` reads
``"Toy Story (1995). Genres: Animation, Children's, Comedy."``; with an empty year it would read
``"Toy Story. Genres: ..."``, and with no genre ``"Toy Story (1995)."``.

Items with no text at all are counted and logged with a warning. A dataset without item
features (no ``.item`` file, or ``load_col`` does not load it), or whose item features lack every
text field, raises :class:`~recbole_sae.errors.ConfigError` naming the missing fields and how to
set ``item_text_fields``.
"""

from __future__ import annotations

import logging
import math
import re
import string
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from recbole_sae.errors import ConfigError
from recbole_sae.textlist import split_list

logger = logging.getLogger(__name__)

__all__ = [
    "PAD_TOKEN",
    "compose_text",
    "field_strings",
    "format_float",
    "item_attribute_matrix",
    "item_texts",
    "item_titles",
    "template_fields",
]

PAD_TOKEN = "[PAD]"
_TOKEN_TYPES = ("token", "token_seq")

# Placeholders stand for fields while the template is cut into segments (private-use characters).
_OPEN, _CLOSE = "\ue000", "\ue001"
_PLACEHOLDER = re.compile(_OPEN + r"(\d+)" + _CLOSE)
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+|\n+")
_CLAUSE_SEP = re.compile(r",\s+")
_BRACKETS = re.compile(r"\s*(\([^()]*\)|\[[^\[\]]*\])")


# --------------------------------------------------------------------------- config access
def _get(config: Any, key: str, default: Any = None) -> Any:
    """``config[key]`` for RecBole's Config (None when unset) or a plain mapping."""
    try:
        value = config[key]
    except (KeyError, TypeError):
        return default
    return default if value is None else value


def _type_name(dataset, field: str) -> str:
    ftype = dataset.field2type[field]
    return str(getattr(ftype, "value", ftype))


def _feature_columns(feat) -> List[str]:
    return list(feat.columns)


def _column(feat, field: str) -> Any:
    """A column of ``item_feat`` (a pandas DataFrame before ``build()``, an Interaction after)."""
    return feat[field]


def _row_ids(dataset, feat) -> np.ndarray:
    """Internal item id of each row of ``item_feat``."""
    ids = _column(feat, dataset.iid_field)
    ids = ids.numpy() if isinstance(ids, torch.Tensor) else np.asarray(ids)
    return ids.astype(np.int64)


def _require_item_feat(dataset, what: str):
    feat = getattr(dataset, "item_feat", None)
    if feat is None:
        raise ConfigError(
            f"dataset '{dataset.dataset_name}' has no item features, so {what} cannot be built: "
            f"put a {dataset.dataset_name}.item file next to its .inter file and load it "
            f"(load_col: {{item: [{dataset.iid_field}, ...]}} in the dataset yaml)"
        )
    return feat


# --------------------------------------------------------------------------- value rendering
def format_float(value: float, spec: str = "") -> str:
    """Render a float as described in the module docstring (NaN/inf -> empty)."""
    value = float(value)
    if not math.isfinite(value):
        return ""
    if spec:
        return format(value, spec)
    if value == int(value):
        return str(int(value))
    if abs(value) >= 1:
        return f"{value:.2f}".rstrip("0").rstrip(".")
    return f"{value:.3g}"


def _token_seq_lists(column, n_rows: int) -> List[np.ndarray]:
    if isinstance(column, torch.Tensor):  # Interaction: [n, max_len], padded with 0
        arr = column.cpu().numpy()
        if arr.ndim == 1:
            arr = arr[:, None]
        return [row[row != 0] for row in arr]
    out = []
    for value in list(column):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            out.append(np.zeros(0, dtype=np.int64))
        else:
            arr = np.asarray(value).reshape(-1)
            out.append(arr[arr != 0].astype(np.int64) if arr.dtype.kind in "iuf" else arr)
    return out


def field_strings(dataset, field: str, join: Optional[str] = None, spec: str = "") -> List[str]:
    """The rendered value of ``field`` for every internal item id (``""`` when missing).

    ``join`` overrides the separator of sequence fields (default ``", "``).
    """
    feat = _require_item_feat(dataset, f"the text of field '{field}'")
    if field not in _feature_columns(feat):
        raise ConfigError(
            f"field '{field}' is not among the item features of '{dataset.dataset_name}' "
            f"(loaded: {_feature_columns(feat)})"
        )
    ftype = _type_name(dataset, field)
    sep = ", " if join is None else join
    rows = _row_ids(dataset, feat)
    column = _column(feat, field)
    rendered: List[str]
    if ftype == "token":
        ids = column.cpu().numpy() if isinstance(column, torch.Tensor) else np.asarray(column, dtype=np.float64)
        ids = np.nan_to_num(ids.astype(np.float64), nan=0.0).astype(np.int64)
        vocab = dataset.field2id_token[field]
        rendered = ["" if i == 0 else _clean_token(vocab[i]) for i in ids]
    elif ftype == "token_seq":
        vocab = dataset.field2id_token[field]
        rendered = [
            sep.join(t for t in (_clean_token(vocab[int(i)]) for i in seq) if t)
            for seq in _token_seq_lists(column, len(rows))
        ]
    elif ftype == "float":
        values = column.cpu().numpy() if isinstance(column, torch.Tensor) else np.asarray(column, dtype=np.float64)
        rendered = [format_float(v, spec) for v in values.reshape(len(rows), -1)[:, 0]]
    elif ftype == "float_seq":
        if isinstance(column, torch.Tensor):
            seqs = [row for row in column.cpu().numpy().reshape(len(rows), -1)]
        else:
            seqs = [np.asarray(v, dtype=np.float64).reshape(-1) if v is not None else np.zeros(0) for v in column]
        rendered = [sep.join(s for s in (format_float(v, spec) for v in seq) if s) for seq in seqs]
    else:
        raise ConfigError(f"field '{field}' has type {ftype}, which has no text form")
    out = [""] * dataset.item_num
    for row, text in zip(rows, rendered):
        if 0 < row < dataset.item_num:
            out[int(row)] = text
    return out


def _clean_token(token: Any) -> str:
    text = str(token).strip()
    return "" if text in (PAD_TOKEN, "", "nan") else text


# --------------------------------------------------------------------------- template
def template_fields(template: str) -> List[Tuple[str, str]]:
    """``(field, format spec)`` of every ``{field}`` in ``template``, in order."""
    out = []
    for _, name, spec, _ in string.Formatter().parse(template):
        if name is not None:
            if not name:
                raise ConfigError(
                    f"item_text_template {template!r} has an empty '{{}}': name a field, e.g. '{{title}}'"
                )
            out.append((name, spec or ""))
    return out


def _to_placeholders(template: str) -> Tuple[str, List[str]]:
    """The template with each field replaced by a numbered placeholder, and the field names."""
    pieces, names = [], []
    for literal, name, _, _ in string.Formatter().parse(template):
        pieces.append(literal)
        if name is not None:
            pieces.append(f"{_OPEN}{len(names)}{_CLOSE}")
            names.append(name)
    return "".join(pieces), names


def _all_empty(segment: str, filled: Sequence[bool]) -> bool:
    """True when ``segment`` names at least one field and every one of them is empty."""
    idx = [int(m) for m in _PLACEHOLDER.findall(segment)]
    return bool(idx) and not any(filled[i] for i in idx)


def _prune(skeleton: str, filled: Sequence[bool]) -> str:
    sentences = []
    for sentence in _SENTENCE_END.split(skeleton):
        if not sentence.strip() or _all_empty(sentence, filled):
            continue
        sentence = _BRACKETS.sub(lambda m: "" if _all_empty(m.group(0), filled) else m.group(0), sentence)
        clauses = _CLAUSE_SEP.split(sentence)
        if len(clauses) > 1:
            kept = [c for c in clauses if not _all_empty(c, filled)]
            # the sentence's end mark sits on the last clause: keep it if that clause went
            tail = re.search(r"[.!?;]+\s*$", clauses[-1])
            sentence = ", ".join(kept)
            if tail and not sentence.rstrip().endswith(tail.group(0).strip()):
                sentence = sentence.rstrip() + tail.group(0).strip()
        sentences.append(sentence)
    return " ".join(sentences)


def _tidy(text: str) -> str:
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"\s+([.,;:!?)\]])", r"\1", text)
    text = re.sub(r"([(\[])\s+", r"\1", text)
    text = re.sub(r"^[\s.,;:!?]+", "", text)
    return text.strip()


def compose_text(template: str, values: Mapping[str, str]) -> str:
    """Fill ``template`` with ``values`` (field -> rendered text), dropping empty segments.

    >>> compose_text("{title}. Brand: {brand}. Categories: {cats}.", {"title": "Lip Gloss", "brand": "", "cats": "Makeup"})
    'Lip Gloss. Categories: Makeup.'
    """
    skeleton, names = _to_placeholders(template)
    texts = [str(values.get(name, "") or "") for name in names]
    filled = [bool(t.strip()) for t in texts]
    if not any(filled):
        return ""
    pruned = _prune(skeleton, filled)
    return _tidy(_PLACEHOLDER.sub(lambda m: texts[int(m.group(1))], pruned))


# --------------------------------------------------------------------------- public API
def _text_settings(dataset, config) -> Tuple[List[str], str, Optional[str]]:
    fields = _get(config, "item_text_fields")
    template = _get(config, "item_text_template")
    title_field = _get(config, "item_title_field")
    if isinstance(fields, str):
        fields = split_list(fields)
    if not fields and template:
        fields = list(dict.fromkeys(name for name, _ in template_fields(template)))
    if not fields:
        raise ConfigError(
            f"no item text fields are set for dataset '{dataset.dataset_name}': set item_text_fields "
            "(a list of .item columns, e.g. item_text_fields: [title, brand, categories]) and "
            "item_text_template (e.g. '{title}. Brand: {brand}.') in the dataset yaml or with "
            "--item_text_fields=\"['title']\""
        )
    fields = [str(f) for f in fields]
    if not template:
        template = " ".join("{" + f + "}." for f in fields)
    return fields, str(template), (str(title_field) if title_field else None)


def item_texts(dataset, config) -> List[str]:
    """The text of every item, indexed by internal item id (``""`` for the padding item 0).

    See the module docstring for the rendering rules. ``config`` is a RecBole/project
    ``Config`` or a mapping with ``item_text_fields``, ``item_text_template`` and optionally
    ``item_title_field``.
    """
    fields, template, title_field = _text_settings(dataset, config)
    feat = getattr(dataset, "item_feat", None)
    wanted = list(dict.fromkeys(fields + [name for name, _ in template_fields(template)]))
    if feat is None:
        raise ConfigError(
            f"dataset '{dataset.dataset_name}' has no item features, so the item text fields "
            f"{wanted} are all missing: put a {dataset.dataset_name}.item file next to its .inter "
            f"file, load it (load_col: {{item: [{dataset.iid_field}, {', '.join(wanted)}]}}), and "
            "set item_text_fields to columns of that file"
        )
    columns = _feature_columns(feat)
    missing = [f for f in wanted if f not in columns]
    present = [f for f in wanted if f in columns]
    available = [c for c in columns if c != dataset.iid_field]
    if not any(f in columns for f in fields):
        raise ConfigError(
            f"item text fields {[f for f in fields if f not in columns]} are missing from the item features of "
            f"'{dataset.dataset_name}' (loaded item fields: {available}). Set item_text_fields "
            "(and item_text_template) to columns of the .item file, e.g. "
            f"item_text_fields: {available[:3]}, and make sure load_col loads them"
        )
    if missing:
        logger.warning(
            "item text fields %s are not among the item features of '%s' (loaded: %s); "
            "they are left empty in the item text",
            missing,
            dataset.dataset_name,
            available,
        )
    specs = dict((name, spec) for name, spec in template_fields(template))
    rendered: Dict[str, List[str]] = {}
    for field in present:
        if _type_name(dataset, field) not in ("token", "token_seq", "float", "float_seq"):
            raise ConfigError(
                f"item text field '{field}' has type {_type_name(dataset, field)}, which has no text form"
            )
        join = " " if field == title_field else None
        rendered[field] = field_strings(dataset, field, join=join, spec=specs.get(field, ""))
    texts = [""]
    for item in range(1, dataset.item_num):
        values = {f: rendered[f][item] if f in rendered else "" for f in wanted}
        texts.append(compose_text(template, values))
    n_empty = sum(1 for t in texts[1:] if not t)
    if n_empty and n_empty == dataset.item_num - 1:
        raise ConfigError(
            f"every item of '{dataset.dataset_name}' has an empty text (the fields {wanted} are empty for all "
            f"{n_empty} items): nothing to embed. Fill those columns of the .item file, or set item_text_fields "
            "to columns that hold text"
        )
    if n_empty:
        logger.warning(
            "%d of %d items of '%s' have no text at all (every field in %s is empty)",
            n_empty,
            dataset.item_num - 1,
            dataset.dataset_name,
            wanted,
        )
    return texts


def item_titles(dataset, config) -> List[str]:
    """The name of every item, indexed by internal item id (``""`` for the padding item 0).

    Taken from ``config["item_title_field"]`` (sequence tokens joined with spaces). Items with
    an empty title, and every item when no title field is set, are named by their external
    item id, so a report never shows a blank name.
    """
    title_field = _get(config, "item_title_field")
    external = [str(t) for t in dataset.field2id_token[dataset.iid_field]]
    if not title_field:
        logger.info("no item_title_field set for '%s': items are named by their ids", dataset.dataset_name)
        return [""] + external[1 : dataset.item_num]
    feat = getattr(dataset, "item_feat", None)
    if feat is None or title_field not in _feature_columns(feat):
        available = [] if feat is None else [c for c in _feature_columns(feat) if c != dataset.iid_field]
        raise ConfigError(
            f"item_title_field '{title_field}' is not among the item features of "
            f"'{dataset.dataset_name}' (loaded item fields: {available}): set item_title_field to "
            "a column of the .item file that load_col loads, or leave it empty to name items by id"
        )
    titles = field_strings(dataset, str(title_field), join=" ")
    return [""] + [titles[i] or external[i] for i in range(1, dataset.item_num)]


def item_attribute_matrix(dataset, field: str) -> Tuple[List[str], torch.Tensor]:
    """Which items have which value of the ``token``/``token_seq`` attribute ``field``.

    Returns ``(values, matrix)``: ``values`` are the field's tokens that at least one item
    has, in token-id order (``[PAD]`` excluded); ``matrix`` is ``torch.bool``
    ``[item_num, len(values)]`` with ``matrix[i, j]`` true when item ``i`` has ``values[j]``.
    The padding item's row is all false.
    """
    feat = _require_item_feat(dataset, f"the attribute matrix of '{field}'")
    if field not in _feature_columns(feat):
        available = [c for c in _feature_columns(feat) if c != dataset.iid_field]
        raise ConfigError(
            f"attribute field '{field}' is not among the item features of '{dataset.dataset_name}' "
            f"(loaded item fields: {available}): fix item_attributes or load_col"
        )
    ftype = _type_name(dataset, field)
    if ftype not in _TOKEN_TYPES:
        raise ConfigError(
            f"attribute field '{field}' has type {ftype}; item attributes must be token or token_seq fields"
        )
    vocab = dataset.field2id_token[field]
    rows = _row_ids(dataset, feat)
    column = _column(feat, field)
    full = torch.zeros(dataset.item_num, len(vocab), dtype=torch.bool)
    if ftype == "token":
        ids = column.cpu().numpy() if isinstance(column, torch.Tensor) else np.asarray(column, dtype=np.float64)
        ids = np.nan_to_num(ids.astype(np.float64), nan=0.0).astype(np.int64)
        keep = (rows > 0) & (rows < dataset.item_num) & (ids > 0)
        full[torch.as_tensor(rows[keep]), torch.as_tensor(ids[keep])] = True
    else:
        for row, seq in zip(rows, _token_seq_lists(column, len(rows))):
            if 0 < row < dataset.item_num and len(seq):
                full[int(row), torch.as_tensor(seq.astype(np.int64))] = True
    full[:, 0] = False
    full[0] = False
    for j, token in enumerate(vocab):
        if j and _clean_token(token) == "":
            full[:, j] = False
    present = full.any(dim=0).nonzero().flatten()
    values = [str(vocab[int(j)]) for j in present]
    return values, full[:, present].contiguous()
