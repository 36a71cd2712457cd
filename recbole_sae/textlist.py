"""One reading of list values given in yaml or on the command line.

RecBole hands a ``--key=[a,b]`` override to the config as text when it cannot evaluate it (names
are not Python literals), and yaml gives a real list: every list-valued key of this project goes
through :func:`split_list` so that ``a,b``, ``[a, b]``, ``a;b`` and ``[a, b]`` as a list all mean
the same two items.
"""

from __future__ import annotations

from typing import Any, List

__all__ = ["split_list"]


def split_list(value: Any) -> List[Any]:
    """The items of a list value.

    * ``None`` or blank text -> ``[]``;
    * text -> split on ``,`` or ``;`` after removing surrounding brackets, items stripped, empty
      items dropped (``"[32, 128]"`` -> ``["32", "128"]``);
    * a list or tuple -> its items as a list (text items stripped, blank ones dropped);
    * anything else (a number from yaml) -> ``[value]``.
    """
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip().strip("[]()").replace(";", ",")
        return [item.strip() for item in text.split(",") if item.strip()]
    if isinstance(value, (list, tuple)):
        return [
            item.strip() if isinstance(item, str) else item
            for item in value
            if not (isinstance(item, str) and not item.strip())
        ]
    return [value]
