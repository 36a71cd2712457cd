"""Model and trainer lookup: the plugin's models first, then RecBole's."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

from recbole_sae.errors import UnknownModelError

# name -> "module:Class"; imported lazily so that a plain RecBole baseline pays for nothing else.
PLUGIN_MODELS = {
    "SASRecPlus": "recbole_sae.model.sasrec_plus:SASRecPlus",
    "SASRecSAE": "recbole_sae.model.sasrec_sae:SASRecSAE",
    "SteerableSASRec": "recbole_sae.model.steerable_sasrec:SteerableSASRec",
    "SAERec": "recbole_sae.model.saerec:SAERec",
}

# model name -> "module:Trainer" for plugin models that need their own trainer.
PLUGIN_TRAINERS = {
    "SASRecPlus": "recbole_sae.trainer.sequence_trainer:SequenceTrainer",
    "SASRecSAE": "recbole_sae.trainer.sae_trainer:SASRecSAETrainer",
    "SteerableSASRec": "recbole_sae.trainer.steer_trainer:SteerableTrainer",
    "SAERec": "recbole_sae.trainer.saerec_trainer:SAERecTrainer",
}

# model name -> its family: keys several models share, in properties/family/<family>.yaml, layered under the
# model's own yaml (recbole_sae.config). By name, as the model's yaml is: SteerableSASRec, a SASRecPlus that
# trains nothing, takes its training keys from the SASRecSAE run it loads and is in no family.
PLUGIN_FAMILIES = {
    "SASRecPlus": "full_sequence",
    "SASRecSAE": "full_sequence",
    "SAERec": "full_sequence",
}


def _load(target: str):
    module_name, attr = target.split(":")
    return getattr(importlib.import_module(module_name), attr)


def _available(table: dict) -> list[str]:
    return [name for name, target in table.items() if importlib.util.find_spec(target.split(":")[0])]


def plugin_model_names() -> list[str]:
    """The plugin models whose module is present in this installation."""
    return _available(PLUGIN_MODELS)


def is_plugin_model(name: str) -> bool:
    return name in plugin_model_names()


def get_model(name: str):
    """The model class called ``name``: a plugin model if there is one, else RecBole's."""
    if not isinstance(name, str):
        return name
    if is_plugin_model(name):
        return _load(PLUGIN_MODELS[name])
    if name.lower() not in recbole_model_modules():
        raise UnknownModelError(
            f"unknown model '{name}'. Plugin models: {', '.join(plugin_model_names())}. "
            "Any RecBole model works too, by its class name (e.g. SASRec, BERT4Rec, GRU4Rec); "
            "RecBole's sequential models: "
            + ", ".join(sorted(recbole_model_modules("sequential_recommender")))
            + " (module names; the class names are in RecBole's model list)."
        )
    from recbole.utils import get_model as recbole_get_model

    try:
        return recbole_get_model(name)
    except AttributeError:  # the module exists, the class is spelled differently
        module = _recbole_module(name.lower())
        spelled = [a for a in dir(module) if a.lower() == name.lower()]
        raise UnknownModelError(
            f"unknown model '{name}'" + (f"; did you mean '{spelled[0]}'?" if spelled else "")
        ) from None


def _recbole_module(module_name: str):
    import recbole.model

    root = Path(recbole.model.__file__).parent
    for folder in root.iterdir():
        if (folder / f"{module_name}.py").is_file():
            return importlib.import_module(f"recbole.model.{folder.name}.{module_name}")
    return None


def recbole_model_modules(package: str | None = None) -> set[str]:
    """Module names of RecBole's models (one module per model, named after it in lower case).

    Read from the file listing, so that asking does not import optional libraries (lightgbm...).
    """
    import recbole.model

    root = Path(recbole.model.__file__).parent
    folders = [root / package] if package else [p for p in root.iterdir() if p.name.endswith("_recommender")]
    return {f.stem for folder in folders for f in folder.glob("*.py") if not f.stem.startswith("_")}


def get_trainer(model_type, model_name: str):
    """The trainer class for ``model_name``: the plugin's own trainer if it has one, else RecBole's."""
    if model_name in PLUGIN_TRAINERS and is_plugin_model(model_name):
        return _load(PLUGIN_TRAINERS[model_name])
    from recbole.utils import get_trainer as recbole_get_trainer

    return recbole_get_trainer(model_type, model_name)
