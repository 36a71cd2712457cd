"""Numbers and tables of the reports: rounding of stored values, number cells and markdown tables.

Every report of the project rounds and formats through here, so that one value reads the same in
every file. Standard library only.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

__all__ = ["ALIGN", "fmt", "markdown_table", "round_float", "round_metrics", "round_tree", "table_cell"]

# the separator cell of each column alignment
ALIGN = {"left": "---", "right": "---:", "center": ":---:"}


# --------------------------------------------------------------------------- rounding
def round_float(x: Any, digits: int = 6, nonfinite_none: bool = True) -> Optional[float]:
    """``x`` as a float rounded to ``digits`` decimals; ``None`` stays ``None``, and so does a NaN or an
    infinity become (``nonfinite_none``: strict JSON has neither) or stay as it is."""
    if x is None:
        return None
    x = float(x)
    if nonfinite_none and not math.isfinite(x):
        return None
    return round(x, digits)


def round_metrics(metrics: Optional[Mapping[str, Any]], digits: int = 6) -> dict:
    """``{name: value}`` with every value a float rounded to ``digits`` decimals (``None``: ``{}``)."""
    return {key: round(float(value), digits) for key, value in dict(metrics or {}).items()}


def round_tree(obj: Any, digits: int = 4) -> Any:
    """``obj`` with every float rounded to ``digits`` decimals (a non-finite one ``None``), through
    nested dicts, lists and tuples (tuples become lists); other values as they are."""
    if isinstance(obj, float):
        return round_float(obj, digits)
    if isinstance(obj, dict):
        return {key: round_tree(val, digits) for key, val in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [round_tree(val, digits) for val in obj]
    return obj


# --------------------------------------------------------------------------- cells and tables
def fmt(value: Optional[float], digits: int = 4) -> str:
    """A number with ``digits`` decimals, ``n/a`` for ``None``."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def table_cell(value: Any, float_digits: int = 4) -> str:
    """One markdown table cell: floats with ``float_digits`` decimals, ``None`` empty, ``|`` and
    backslashes escaped, line breaks as spaces."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        text = f"{value:.{float_digits}f}" if math.isfinite(value) else str(value)
    else:
        text = str(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _rule(headers: Sequence[str], align: Optional[Sequence[str]], spaced: bool) -> str:
    marks = [ALIGN["left"]] * len(headers) if align is None else [ALIGN.get(a, a) for a in align]
    if len(marks) != len(headers) or any(m not in ALIGN.values() for m in marks):
        raise ValueError(f"align needs one of {sorted(ALIGN)} per header, got {list(align or [])!r}")
    return "| " + " | ".join(marks) + " |" if spaced else "|" + "|".join(marks) + "|"


def markdown_table(
    rows: Iterable[Union[Sequence[Any], Mapping[str, Any]]],
    headers: Sequence[str],
    float_digits: int = 4,
    align: Optional[Sequence[str]] = None,
    spaced_rule: bool = True,
) -> str:
    """A GitHub-flavoured markdown table.

    ``rows`` are sequences (one cell per header) or mappings (looked up by
    header; missing keys give empty cells); each cell goes through :func:`table_cell`.
    ``align``: per column ``left``, ``right`` or ``center`` (or the rule's own ``---``,
    ``---:``, ``:---:``); all left by default. ``spaced_rule=False`` writes the rule
    without spaces (``|---|---:|``). Every line ends with a newline::

        | a | b |
        | --- | --- |
        | 1 | 0.5000 |
    """
    headers = [str(h) for h in headers]
    if not headers:
        raise ValueError("a markdown table needs at least one header")
    lines = ["| " + " | ".join(table_cell(h, float_digits) for h in headers) + " |", _rule(headers, align, spaced_rule)]
    for row in rows:
        if isinstance(row, Mapping):
            cells = [row.get(h) for h in headers]
        else:
            cells = list(row)
            if len(cells) != len(headers):
                raise ValueError(f"row has {len(cells)} cells for {len(headers)} headers: {cells!r}")
        lines.append("| " + " | ".join(table_cell(c, float_digits) for c in cells) + " |")
    return "\n".join(lines) + "\n"
