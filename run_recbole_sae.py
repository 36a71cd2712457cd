#!/usr/bin/env python
"""Command line of recbole-sae.

    python run_recbole_sae.py --model=SAERec --dataset=amazon-beauty [--config_files=a.yaml,b.yaml] [--key=value ...]
    python run_recbole_sae.py --sweep=properties/sweep/quick.yaml
    python run_recbole_sae.py --help [--model=SAERec]

Any other ``--key=value`` is a config override, as in RecBole itself; a key that nothing reads is an
error (``--extra_keys=a,b`` lets free-form keys through). ``--help`` lists every option.
"""

from recbole_sae.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
