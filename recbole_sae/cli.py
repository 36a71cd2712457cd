"""The ``run_recbole_sae.py`` command line (also installed as ``recbole-sae``)."""

from __future__ import annotations

import json
import sys

USAGE = """usage: run_recbole_sae.py --model=MODEL --dataset=DATASET [--config_files=a.yaml,b.yaml] [--key=value ...]
       run_recbole_sae.py --sweep=SWEEP.yaml [--results=RESULTS.jsonl]

  --model         a plugin model (SASRecSAE, SteerableSASRec, SAERec, SASRecPlus) or any RecBole model (SASRec, BERT4Rec, GRU4Rec, ...)
  --dataset       ml-100k (bundled, default) or a folder of atomic files found via --data_path, $RECBOLE_SAE_DATA or ./dataset
  --config_files  comma-separated yaml files layered over the project's defaults
  --key=value     any RecBole config key (e.g. --epochs=5 --hidden_size=32)
At the end one line 'RESULT {json}' gives the metrics and the run folder."""


def parse_args(argv: list[str]) -> dict:
    """``--key=value`` pairs; anything else is a usage error."""
    args = {}
    for arg in argv:
        if arg in ("-h", "--help"):
            raise SystemExit(USAGE)
        if not arg.startswith("--") or "=" not in arg:
            raise SystemExit(f"error: unrecognised argument '{arg}' (expected --key=value)\n\n{USAGE}")
        key, value = arg[2:].split("=", 1)
        args[key] = value
    return args


def main(argv: list[str] | None = None) -> int:
    if argv is not None:  # RecBole's Config reads the overrides from sys.argv, as on a real command line
        sys.argv = [sys.argv[0], *argv]
    args = parse_args(sys.argv[1:])
    if "sweep" in args:
        from recbole_sae.benchmark import main as sweep_main

        return sweep_main(args)

    from recbole_sae.errors import RecboleSAEError

    try:
        from recbole_sae.quick_start import run_recbole_sae

        result = run_recbole_sae(
            model=args.get("model", "SASRec"),
            dataset=args.get("dataset", "ml-100k"),
            config_file_list=args.get("config_files"),
        )
    except RecboleSAEError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("RESULT " + json.dumps(result))
    return 0
