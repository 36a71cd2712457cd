"""Benchmark sweeps: many runs of the single-run pipeline, one results file, one report (docs/sweeps.md).

Modules: ``spec`` (sweep files, grid, run keys), ``results`` (the results file), ``process`` (one run in
its own process), ``runner`` (scheduling a sweep), ``stats`` and ``report`` (the report), ``commands``
(the command lines).
"""

from recbole_sae.benchmark.commands import main
from recbole_sae.benchmark.spec import SWEEP_KEYS, load_sweep

__all__ = ["SWEEP_KEYS", "load_sweep", "main"]  # what modules and tests outside the package import
