"""A dataset folder without a dataset yaml: its columns read from the atomic files' headers.

RecBole's atomic files start with a header of ``name:type`` columns (``user_id:token``,
``timestamp:float``, ``genre:token_seq``). For a dataset that neither this project
(``properties/dataset/<name>.yaml``) nor RecBole ships a yaml for, and whose config does not name
its columns (``load_col``), :func:`complete_dataset_settings` loads every column of the ``.inter``,
``.item`` and ``.user`` files and finds the user, item, time and rating columns by their names; what
it cannot find is a clear error that says what to add. :func:`suggest_settings` is what
``python -m recbole_sae.data.init_yaml`` writes as a commented yaml to start from.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from recbole_sae.errors import ConfigError

SUFFIXES = ("inter", "item", "user")
TEXT_TYPES = ("token", "token_seq")
INIT_COMMAND = "python -m recbole_sae.data.init_yaml --dataset={folder}"


@dataclass
class Column:
    name: str
    type: str

    def __str__(self) -> str:
        return f"{self.name}:{self.type}"


@dataclass
class Inferred:
    """What the headers tell: the columns of each file, the key fields found, and what is missing."""

    folder: Path
    dataset: str
    columns: dict = field(default_factory=dict)  # suffix -> [Column]
    settings: dict = field(default_factory=dict)  # config keys found
    missing: dict = field(default_factory=dict)  # config key -> why it could not be found


def read_header(path: Path, separator: str = "\t") -> list[Column]:
    """The ``name:type`` columns of an atomic file's first line; a column without a type is an error."""
    with open(path, encoding="utf-8") as f:
        line = f.readline().rstrip("\r\n")
    columns = []
    for cell in line.split(separator):
        name, _, kind = cell.strip().partition(":")
        if not name or not kind:
            raise ConfigError(
                f"{path}: the header cell {cell!r} is not 'name:type' (RecBole's atomic files start with a line "
                f"such as 'user_id:token<TAB>item_id:token<TAB>timestamp:float'; types: token, token_seq, float, "
                "float_seq)"
            )
        columns.append(Column(name, kind))
    return columns


def _find(columns: list[Column], exact: str, words: tuple, types: tuple) -> str | None:
    names = [c.name for c in columns]
    if exact in names:
        return exact
    for column in columns:
        if column.type in types and any(w in column.name.lower() for w in words):
            return column.name
    return None


def infer(folder, dataset: str, separator: str = "\t") -> Inferred:
    """Columns and key fields of ``folder/<dataset>.{inter,item,user}`` from their headers."""
    folder = Path(folder)
    found = Inferred(folder, dataset)
    for suffix in SUFFIXES:
        path = folder / f"{dataset}.{suffix}"
        if path.is_file():
            found.columns[suffix] = read_header(path, separator)
    inter = found.columns.get("inter", [])
    shown = ", ".join(map(str, inter))
    rules = [
        (
            "USER_ID_FIELD",
            "user_id",
            ("user",),
            ("token",),
            f"no user column in {dataset}.inter (columns: {shown}): name it user_id:token",
        ),
        (
            "ITEM_ID_FIELD",
            "item_id",
            ("item",),
            ("token",),
            f"no item column in {dataset}.inter (columns: {shown}): name it item_id:token",
        ),
        (
            "TIME_FIELD",
            "timestamp",
            ("time", "date"),
            ("float",),
            f"no timestamp column in {dataset}.inter (columns: {shown}): leave-one-out needs each user's "
            "items in time order (eval_args order: TO); add a column timestamp:float (unix time, or the "
            "position in the user's history)"
            + "".join(
                f", or pass --TIME_FIELD={c.name} if that column is the time" for c in inter if c.type == "float"
            ),
        ),
    ]
    for key, exact, words, types, why in rules:
        name = _find(inter, exact, words, types)
        if name:
            found.settings[key] = name
        else:
            found.missing[key] = why
    found.settings["RATING_FIELD"] = _find(inter, "rating", ("rating", "score"), ("float",))
    found.settings["load_col"] = {suffix: [c.name for c in cols] for suffix, cols in found.columns.items()}
    return found


def _has_dataset_yaml(config) -> bool:
    from recbole_sae.config import PROPERTIES, RECBOLE_PROPERTIES

    name = f"{config.dataset}.yaml"
    return (PROPERTIES / "dataset" / name).is_file() or (RECBOLE_PROPERTIES / "dataset" / name).is_file()


def complete_dataset_settings(config) -> None:
    """Fill in the column settings of a dataset that has no yaml from its files' headers (in place).

    Nothing happens when a dataset yaml exists or the config names its columns (``load_col``). Keys
    the config gives (``TIME_FIELD``, ...) are kept; a key field that is neither given nor found is a
    :class:`ConfigError` that names it, says why it is needed and how to write a yaml to start from.
    """
    external = config.external_config_dict
    final = config.final_config_dict
    if "load_col" in external or _has_dataset_yaml(config):
        if _needs_time(final) and not final.get("TIME_FIELD"):
            raise ConfigError(
                f"dataset '{config.dataset}': TIME_FIELD is not set, and leave-one-out needs each user's items in "
                "time order (eval_args order: TO): set TIME_FIELD to the time column of its .inter file"
            )
        return
    folder = final["data_path"]
    found = infer(folder, config.dataset, str(final.get("field_separator") or "\t"))
    inter_names = {c.name for c in found.columns.get("inter", [])}
    problems = []
    for key in ("USER_ID_FIELD", "ITEM_ID_FIELD", "TIME_FIELD"):
        if key in external:
            if external[key] and external[key] not in inter_names:
                problems.append(
                    f"{key}={external[key]} is not a column of {config.dataset}.inter "
                    f"(columns: {', '.join(map(str, found.columns.get('inter', [])))})"
                )
        elif key in found.missing:
            if key == "TIME_FIELD" and not _needs_time(final):
                continue
            problems.append(found.missing[key])
        else:
            final[key] = found.settings[key]
    if problems:
        raise ConfigError(
            f"dataset '{config.dataset}' ({folder}) has no dataset yaml and its columns could not all be read "
            f"from the headers: {'; '.join(problems)}. A yaml to start from: "
            f"{INIT_COMMAND.format(folder=folder)}, then pass it with --config_files"
        )
    if "RATING_FIELD" not in external:
        final["RATING_FIELD"] = found.settings["RATING_FIELD"]
    final["load_col"] = found.settings["load_col"]
    logging.getLogger(__name__).info(
        "dataset %s has no yaml: columns read from the headers of its atomic files: %s",
        config.dataset,
        "; ".join(f"{s}: {', '.join(map(str, cols))}" for s, cols in found.columns.items()),
    )


def _needs_time(final: dict) -> bool:
    order = (final.get("eval_args") or {}).get("order", "RO")
    return str(order).upper() == "TO"


def _item_text_columns(found: Inferred) -> list[Column]:
    item_id = found.settings.get("ITEM_ID_FIELD", "item_id")
    return [c for c in found.columns.get("item", []) if c.type in TEXT_TYPES and c.name != item_id]


def suggest_settings(found: Inferred) -> dict:
    """Settings for a dataset yaml: the inferred columns plus the item text and attribute fields
    that the ``.item`` file's token columns suggest (None where nothing fits)."""
    settings = {
        key: found.settings.get(key) for key in ("USER_ID_FIELD", "ITEM_ID_FIELD", "RATING_FIELD", "TIME_FIELD")
    }
    settings["load_col"] = found.settings["load_col"]
    text_columns = _item_text_columns(found)
    names = [c.name for c in text_columns]
    title = next((n for n in names if n.lower() in ("title", "name", "movie_title", "item_name")), None)
    if title is None and names:
        title = names[0]
    attributes = [n for n in names if n != title]
    settings["item_title_field"] = title
    settings["item_attributes"] = attributes or None
    settings["item_text_fields"] = names or None
    if names:
        rest = [n for n in names if n != title]
        settings["item_text_template"] = (f"{{{title}}}. " if title else "") + " ".join(
            f"{n.replace('_', ' ').capitalize()}: {{{n}}}." for n in rest
        )
    else:
        settings["item_text_template"] = None
    return settings


def separator_in_use(path: Path, columns: list[Column], separator: str = "\t", rows: int = 2000) -> str | None:
    """'|' when the token_seq cells of the first ``rows`` rows hold '|' (RecBole's default is ' ')."""
    seq = [i for i, c in enumerate(columns) if c.type.endswith("_seq")]
    if not seq or not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        next(f, None)
        for n, line in enumerate(f):
            if n >= rows:
                break
            cells = line.rstrip("\r\n").split(separator)
            if any(i < len(cells) and "|" in cells[i] for i in seq):
                return "|"
    return None
