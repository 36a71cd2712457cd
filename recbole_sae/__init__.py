"""recbole-sae: sparse autoencoders for RecBole's sequential recommenders.

Models: SASRecSAE (interpretation), SteerableSASRec (control), SAERec (intent priors), SASRecPlus
(full-sequence SASRec). ``run_recbole_sae`` trains, validates and tests them and any RecBole model
under one protocol; ``load_data_and_model`` reloads a run.
"""

__version__ = "0.1.0"

from recbole_sae.paths import anchor_environment as _anchor_environment

# A relative RECBOLE_SAE_DATA means the folder as seen from where the package was first imported,
# whatever the working directory is later (recbole_sae.paths).
_anchor_environment()

# Importing the package stays light (``recbole_sae.sae`` needs no RecBole): the RecBole
# compatibility fixes (``recbole_sae.compat.apply``) run when a Config, the pipeline or a model
# module is first used.


def run_recbole_sae(*args, **kwargs):
    from recbole_sae.quick_start import run_recbole_sae as _run

    return _run(*args, **kwargs)


def load_data_and_model(*args, **kwargs):
    from recbole_sae.quick_start import load_data_and_model as _load

    return _load(*args, **kwargs)


__all__ = ["run_recbole_sae", "load_data_and_model", "__version__"]
