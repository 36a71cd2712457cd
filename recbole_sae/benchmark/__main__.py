"""``python -m recbole_sae.benchmark sweep|report ...``."""

from recbole_sae.benchmark.commands import cli

raise SystemExit(cli())
