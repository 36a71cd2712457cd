"""Convert the raw Amazon review files (2014 release) into RecBole atomic files.

Usage::

    python -m recbole_sae.data.amazon \\
        --reviews reviews_Beauty_5.json.gz --meta meta_Beauty.json.gz \\
        --out dataset/amazon-beauty [--name amazon-beauty] [--core 5]

Inputs (gzip or plain text, one object per line):

* reviews: ``reviewerID``, ``asin``, ``unixReviewTime`` (other keys ignored);
* metadata: ``asin`` plus optional ``title``, ``brand``, ``categories``
  (a list of category paths, each a list of strings) and ``price``. Lines may be
  JSON or Python literals (single quotes), as in the public metadata dumps.

Outputs (tab separated, with a RecBole typed header):

* ``<out>/<name>.inter``: ``user_id:token``, ``item_id:token``, ``timestamp:float``
  (the real unix review time);
* ``<out>/<name>.item``: ``item_id:token``, ``asin:token``, ``title:token``,
  ``brand:token``, ``categories:token_seq``, ``price:float``.

Processing, in order:

1. malformed lines (undecodable, neither JSON nor a Python literal, not an object,
   missing required fields, non-integer time) are counted and skipped;
2. duplicate (user, item) pairs are dropped, keeping the earliest review
   (ties: the first in the file);
3. iterative k-core filter: users and items with fewer than ``core`` interactions
   are removed, repeatedly, until every remaining user and item has at least ``core``;
4. interactions are ordered by user (users in order of first appearance in the
   reviews file), then by time (ties: file order); user ids and item ids are
   consecutive integers from 1 in order of first appearance in that ordering.

Item text: tabs, newlines and runs of whitespace inside titles and brands become
single spaces; HTML entities (``&amp;``) are unescaped. ``categories`` uses the
first category path that starts with the top-level category (``Beauty`` by default;
otherwise the first path), drops that top-level name and joins the rest with ``|``
from the top to the most specific, e.g. ``Makeup|Nails|Nail Polish`` (set
``seq_separator: "|"`` in RecBole). A ``|`` inside a category name becomes ``/``.
Items without metadata keep empty text fields.
"""

from __future__ import annotations

import argparse
import ast
import gzip
import html
import json
import logging
import os
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

from recbole_sae.fileio import write_atomic

logger = logging.getLogger(__name__)

__all__ = ["convert_amazon", "parse_line", "k_core_filter", "format_categories", "main"]

INTER_HEADER = ["user_id:token", "item_id:token", "timestamp:float"]
ITEM_HEADER = [
    "item_id:token",
    "asin:token",
    "title:token",
    "brand:token",
    "categories:token_seq",
    "price:float",
]

_WS = re.compile(r"\s+")


# --------------------------------------------------------------------------- reading


def _open_lines(path: Path) -> Iterator[bytes]:
    """Yield raw lines of a gzip or plain file (gzip detected by its magic bytes)."""
    with open(path, "rb") as fh:
        magic = fh.read(2)
    opener = gzip.open if magic == b"\x1f\x8b" else open
    with opener(path, "rb") as fh:
        for line in fh:
            yield line


def parse_line(raw: bytes | str) -> Optional[Dict[str, Any]]:
    """Parse one line as JSON, falling back to a Python literal.

    Returns the object as a dict, or ``None`` when the line is not a dict in either
    syntax (or cannot be decoded as UTF-8).
    """
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return None
    else:
        text = raw
    text = text.strip()
    try:
        obj = json.loads(text)
    except ValueError:
        try:
            obj = ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return None
    return obj if isinstance(obj, dict) else None


def _parsed_lines(path: Path, stats: Dict[str, int]) -> Iterator[Optional[Dict[str, Any]]]:
    """The parsed object of each non-blank line (None where it does not parse), counted in
    ``stats["lines"]``."""
    for raw in _open_lines(path):
        if raw.strip():
            stats["lines"] += 1
            yield parse_line(raw)


def _read_reviews(path: Path) -> Tuple[List[Tuple[str, str, int]], Dict[str, int]]:
    """Read (user, asin, unix time) triples in file order, counting bad lines."""
    rows: List[Tuple[str, str, int]] = []
    stats = {"lines": 0, "malformed": 0}
    for obj in _parsed_lines(path, stats):
        row = None
        if obj is not None:
            user, asin, ts = obj.get("reviewerID"), obj.get("asin"), obj.get("unixReviewTime")
            if isinstance(user, str) and isinstance(asin, str) and user.strip() and asin.strip():
                try:
                    if isinstance(ts, bool):
                        raise TypeError
                    ts_int = int(ts)
                    if isinstance(ts, float) and ts != ts_int:
                        raise ValueError
                    row = (user.strip(), asin.strip(), ts_int)
                except (TypeError, ValueError, OverflowError):
                    row = None
        if row is None:
            stats["malformed"] += 1
        else:
            rows.append(row)
    return rows, stats


def _read_meta(path: Path, wanted: set) -> Tuple[Dict[str, Dict[str, Any]], Dict[str, int]]:
    """Read metadata objects for the ``wanted`` asins (first line per asin wins)."""
    meta: Dict[str, Dict[str, Any]] = {}
    stats = {"lines": 0, "malformed": 0}
    for obj in _parsed_lines(path, stats):
        asin = obj.get("asin") if obj is not None else None
        if not isinstance(asin, str) or not asin.strip():
            stats["malformed"] += 1
            continue
        asin = asin.strip()
        if asin in wanted and asin not in meta:
            meta[asin] = obj
    return meta, stats


# --------------------------------------------------------------------------- processing


def _dedup(rows: List[Tuple[str, str, int]]) -> List[Tuple[str, str, int]]:
    """Keep one interaction per (user, item): the earliest, ties by file order.

    The result stays in file order.
    """
    best: Dict[Tuple[str, str], int] = {}
    for idx, (user, asin, ts) in enumerate(rows):
        key = (user, asin)
        prev = best.get(key)
        if prev is None or ts < rows[prev][2]:
            best[key] = idx
    keep = sorted(best.values())
    return [rows[i] for i in keep]


def k_core_filter(rows: List[Tuple[str, str, int]], core: int) -> Tuple[List[Tuple[str, str, int]], int]:
    """Iteratively drop users and items with fewer than ``core`` interactions.

    Returns the remaining rows (order kept) and the number of filtering rounds that
    removed something.
    """
    rounds = 0
    if core <= 1:
        return list(rows), rounds
    while True:
        users = Counter(r[0] for r in rows)
        items = Counter(r[1] for r in rows)
        kept = [r for r in rows if users[r[0]] >= core and items[r[1]] >= core]
        if len(kept) == len(rows):
            return kept, rounds
        rounds += 1
        rows = kept


def _clean_text(value: Any) -> str:
    """One-line text: unescape HTML entities, collapse tabs/newlines/whitespace."""
    if value is None:
        return ""
    if not isinstance(value, str):
        value = str(value)
    return _WS.sub(" ", html.unescape(value)).strip()


def format_categories(categories: Any, top: str = "Beauty") -> str:
    """Format Amazon ``categories`` (list of paths) as ``A|B|C``.

    Uses the first path whose first element is ``top`` (else the first path),
    drops a leading ``top`` and joins the remaining names with ``|``.
    """
    if not isinstance(categories, (list, tuple)) or not categories:
        return ""
    paths = [p for p in categories if isinstance(p, (list, tuple))]
    if not paths:
        # a flat list of names
        paths = [list(categories)]
    chosen = next((p for p in paths if p and _clean_text(p[0]) == top), paths[0])
    names = [_clean_text(c).replace("|", "/") for c in chosen]
    if names and names[0] == top:
        names = names[1:]
    return "|".join(n for n in names if n)


def _format_price(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return ""
    try:
        price = float(str(value).strip().lstrip("$").replace(",", ""))
    except ValueError:
        return ""
    if price != price or price in (float("inf"), float("-inf")):
        return ""
    return repr(price)


def _atomic_write(path: Path, header: List[str], lines: List[List[str]]) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
            fh.write("\t".join(header) + "\n")
            for row in lines:
                fh.write("\t".join(row) + "\n")

    write_atomic(write, path)


# --------------------------------------------------------------------------- API


def _checked_arguments(reviews: Path, meta: Path, out_dir: Path, name: Optional[str], core: int) -> Tuple[int, str]:
    """``(core, name)`` checked: the input files exist, ``core >= 1``, a name (default: ``out_dir``'s)."""
    for label, path in (("reviews", reviews), ("meta", meta)):
        if not path.is_file():
            raise FileNotFoundError(f"{label} file not found: {path}")
    core = int(core)
    if core < 1:
        raise ValueError(f"core must be >= 1, got {core}")
    name = name or out_dir.name
    if not name:
        raise ValueError("cannot derive a dataset name from out_dir; pass name")
    return core, name


def _number_interactions(
    filtered: List[Tuple[str, str, int]],
) -> Tuple[Dict[str, int], Dict[str, int], List[List[str]]]:
    """Users and items numbered, and the ``.inter`` rows: ``(user rank, item ids from 1, rows)``.

    Users in order of first appearance; within a user, by time then file order; items numbered
    in the order they first appear in those rows.
    """
    user_rank: Dict[str, int] = {}
    for user, _, _ in filtered:
        user_rank.setdefault(user, len(user_rank))
    order = sorted(range(len(filtered)), key=lambda i: (user_rank[filtered[i][0]], filtered[i][2], i))
    ordered = [filtered[i] for i in order]

    item_ids: Dict[str, int] = {}
    inter_lines: List[List[str]] = []
    for user, asin, ts in ordered:
        iid = item_ids.setdefault(asin, len(item_ids) + 1)
        inter_lines.append([str(user_rank[user] + 1), str(iid), str(ts)])
    return user_rank, item_ids, inter_lines


def _item_lines(item_ids: Dict[str, int], metadata: Dict[str, dict], top_category: str) -> List[List[str]]:
    """The ``.item`` rows, in item id order (empty fields for items without metadata)."""
    item_lines: List[List[str]] = []
    for asin, iid in item_ids.items():
        m = metadata.get(asin, {})
        item_lines.append(
            [
                str(iid),
                asin,
                _clean_text(m.get("title")),
                _clean_text(m.get("brand")),
                format_categories(m.get("categories"), top=top_category),
                _format_price(m.get("price")),
            ]
        )
    return item_lines


def convert_amazon(
    reviews: str | os.PathLike,
    meta: str | os.PathLike,
    out_dir: str | os.PathLike,
    name: Optional[str] = None,
    core: int = 5,
    top_category: str = "Beauty",
) -> Dict[str, Any]:
    """Convert raw Amazon reviews + metadata into ``<out_dir>/<name>.inter/.item``.

    ``name`` defaults to the base name of ``out_dir``. Raises ``FileNotFoundError``
    when an input file is missing and ``ValueError`` when ``core < 1``.

    Returns a summary dict (also logged): line and malformed counts for both
    inputs, duplicates dropped, interactions before/after the k-core filter,
    filtering rounds, numbers of users/items/interactions written, items without
    metadata, and the output paths.
    """
    reviews, meta, out_dir = Path(reviews), Path(meta), Path(out_dir)
    core, name = _checked_arguments(reviews, meta, out_dir, name, core)
    rows, rstats = _read_reviews(reviews)
    deduped = _dedup(rows)
    filtered, rounds = k_core_filter(deduped, core)
    user_rank, item_ids, inter_lines = _number_interactions(filtered)
    metadata, mstats = _read_meta(meta, set(item_ids))
    item_lines = _item_lines(item_ids, metadata, top_category)

    out_dir.mkdir(parents=True, exist_ok=True)
    inter_path = out_dir / f"{name}.inter"
    item_path = out_dir / f"{name}.item"
    _atomic_write(inter_path, INTER_HEADER, inter_lines)
    _atomic_write(item_path, ITEM_HEADER, item_lines)

    summary = {
        "reviews_lines": rstats["lines"],
        "reviews_malformed": rstats["malformed"],
        "meta_lines": mstats["lines"],
        "meta_malformed": mstats["malformed"],
        "duplicates_dropped": len(rows) - len(deduped),
        "interactions_before_core": len(deduped),
        "core": core,
        "core_rounds": rounds,
        "interactions": len(inter_lines),
        "users": len(user_rank),
        "items": len(item_ids),
        "items_without_meta": len(item_ids) - len(metadata),
        "inter_file": str(inter_path),
        "item_file": str(item_path),
    }
    logger.info("amazon conversion summary: %s", summary)
    if not inter_lines:
        logger.warning("no interactions left after the %d-core filter", core)
    return summary


def format_summary(summary: Dict[str, Any]) -> str:
    """Human-readable multi-line summary."""
    width = max(len(k) for k in summary)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in summary.items())


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m recbole_sae.data.amazon",
        description="Convert raw Amazon review + metadata files into RecBole atomic files.",
    )
    parser.add_argument("--reviews", required=True, help="reviews file (.json or .json.gz)")
    parser.add_argument("--meta", required=True, help="metadata file (.json or .json.gz)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--name", default=None, help="dataset name (default: base name of --out)")
    parser.add_argument("--core", type=int, default=5, help="k-core threshold (default: 5)")
    parser.add_argument("--top-category", default="Beauty", help="top-level category to drop (default: Beauty)")
    args = parser.parse_args(argv)
    try:
        summary = convert_amazon(
            args.reviews, args.meta, args.out, args.name, core=args.core, top_category=args.top_category
        )
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
