"""Building a model: models whose data is a stage of its own get it made first and handed to them."""

from __future__ import annotations

from recbole_sae.contracts import StagedModel
from recbole_sae.registry import get_model


def build_model(config, dataset):
    """``Model(config, dataset)``, or ``Model(config, dataset, Model.prepare_stage(config, dataset))`` for a
    model with a data stage (SAERec's intents, written to and read back from ``config['run_dir']``)."""
    model_class = get_model(config["model"])
    if not issubclass(model_class, StagedModel):
        return model_class(config, dataset)
    return model_class(config, dataset, model_class.prepare_stage(config, dataset))
