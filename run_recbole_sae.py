#!/usr/bin/env python
"""Command line of recbole-sae.

    python run_recbole_sae.py --model=SAERec --dataset=amazon-beauty [--config_files=a.yaml,b.yaml] [--key=value ...]
    python run_recbole_sae.py --sweep=properties/sweep/quick.yaml

Any ``--key=value`` besides the ones below is a RecBole config override, as in RecBole itself.
"""

from recbole_sae.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
