"""Write a commented dataset yaml for a folder of RecBole atomic files, to start from.

Usage::

    python -m recbole_sae.data.init_yaml --dataset=FOLDER [--name=NAME] [--out=FILE] [--force]

``FOLDER`` holds ``NAME.inter`` (and optionally ``NAME.item``, ``NAME.user``); ``NAME`` defaults to
the folder's name. The columns come from the files' ``name:type`` headers; the user, item, time and
rating columns are found by their names, the item text and attribute fields from the ``.item``
file's token columns. What could not be found is written as ``~`` with a comment that says what
to put there. The yaml goes to ``FOLDER/NAME.yaml`` (``--out`` elsewhere; an existing file is kept
unless ``--force``); use it with ``--config_files=FOLDER/NAME.yaml``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from recbole_sae.data.headers import Inferred, infer, separator_in_use, suggest_settings
from recbole_sae.errors import RecboleSAEError

COMMENTS = {
    "USER_ID_FIELD": "(str) User id column of NAME.inter.",
    "ITEM_ID_FIELD": "(str) Item id column of NAME.inter (and NAME.item).",
    "RATING_FIELD": "(str) Rating column; ~ when there is none (the models here do not use ratings).",
    "TIME_FIELD": "(str) Time column: leave-one-out orders each user's items by it (unix time or position).",
    "load_col": "(dict) Columns to load per atomic file (all columns of the headers).",
    "seq_separator": "(str) Separator inside token_seq cells.",
    "item_attributes": "(list) Item fields whose values SASRecSAE's interpretation scores latents against.",
    "item_text_fields": "(list) Item fields composed into SAERec's item text.",
    "item_text_template": "(str) SAERec's item text; {field} is replaced by the field's value.",
    "item_title_field": "(str) Field shown as the item's name in reports.",
}
MISSING = {
    "item_attributes": "no token column in NAME.item: list item fields (genres, categories, brand) here",
    "item_text_fields": "no token column in NAME.item: SAERec needs item text; list its fields here",
    "item_text_template": "no item text fields: e.g. '{title}. Genre: {genre}.'",
    "item_title_field": "no token column in NAME.item: the field that names an item",
    "RATING_FIELD": None,
}


def _value(value) -> str:
    if value is None:
        return "~"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a quoted yaml string
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def _line(text: str, comment: str) -> str:
    return f"{text:<31} # {comment}"


def render(found: Inferred) -> str:
    """The yaml text: one commented key a line (``load_col`` one file a line)."""
    settings = suggest_settings(found)
    sep = separator_in_use(found.folder / f"{found.dataset}.item", found.columns.get("item", []))
    if sep:
        settings["seq_separator"] = sep
    name = found.dataset
    lines = [
        f"# Dataset {name}: settings written by python -m recbole_sae.data.init_yaml from the headers of",
        f"# {', '.join(f'{name}.{s}' for s in found.columns)} in {found.folder}. Check each line, then run with",
        f"#   --dataset={name} --data_path={found.folder.parent} --config_files=THIS_FILE",
        "",
    ]
    for key, value in settings.items():
        comment = COMMENTS[key].replace("NAME", name)
        if key in found.missing:
            comment += " NOT FOUND: " + found.missing[key]
        elif value is None and MISSING.get(key):
            comment += " NOT FOUND: " + MISSING[key].replace("NAME", name)
        if key == "load_col":
            lines.append(_line("load_col:", comment))
            for suffix, columns in value.items():
                lines.append(f"  {suffix}: [{', '.join(columns)}]")
            continue
        lines.append(_line(f"{key}: {_value(value)}", comment))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m recbole_sae.data.init_yaml",
        description="Write a commented dataset yaml for a folder of RecBole atomic files.",
    )
    parser.add_argument("--dataset", required=True, help="the folder holding NAME.inter (NAME.item, NAME.user)")
    parser.add_argument("--name", help="the dataset name (default: the folder's name)")
    parser.add_argument("--out", help="the yaml to write (default: FOLDER/NAME.yaml)")
    parser.add_argument("--force", action="store_true", help="replace an existing yaml")
    ns = parser.parse_args(argv)
    folder = Path(ns.dataset).expanduser().resolve()
    name = ns.name or folder.name
    inter = folder / f"{name}.inter"
    if not inter.is_file():
        found = sorted(p.stem for p in folder.glob("*.inter")) if folder.is_dir() else []
        hint = f" (it holds {', '.join(p + '.inter' for p in found)}: pass --name=NAME)" if found else ""
        print(f"error: no {name}.inter in {folder}{hint}", file=sys.stderr)
        return 2
    out = Path(ns.out).expanduser().resolve() if ns.out else folder / f"{name}.yaml"
    if out.exists() and not ns.force:
        print(f"error: {out} exists; pass --force to replace it, or --out=FILE", file=sys.stderr)
        return 2
    try:
        found = infer(folder, name)
    except RecboleSAEError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out.write_text(render(found), encoding="utf-8")
    print(f"wrote {out}")
    for key, why in found.missing.items():
        print(f"  {key}: NOT FOUND: {why}")
    print(
        f"run with: python run_recbole_sae.py --model=SASRec --dataset={name} --data_path={folder.parent} "
        f"--config_files={out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
