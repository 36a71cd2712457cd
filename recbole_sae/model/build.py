"""Building a model: models whose data is a stage of its own get it made first and handed to them."""

from __future__ import annotations

from recbole_sae.registry import get_model


def build_model(config, dataset):
    """``Model(config, dataset)``, or ``Model(config, dataset, Model.prepare_stage(config, dataset))`` for a
    model with a data stage (SAERec's intents, written to and read back from ``config['run_dir']``)."""
    model_class = get_model(config["model"])
    prepare = getattr(model_class, "prepare_stage", None)
    if prepare is None:
        return model_class(config, dataset)
    return model_class(config, dataset, prepare(config, dataset))
