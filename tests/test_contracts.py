"""The declared model and trainer capabilities (recbole_sae.contracts), and that RecBole's own trainers
and models get the defaults the pipeline gave them when it probed for names."""

from __future__ import annotations

import inspect

import pytest
import torch
from recbole.model.sequential_recommender.gru4rec import GRU4Rec
from recbole.model.sequential_recommender.sasrec import SASRec
from recbole.trainer import Trainer

from recbole_sae.contracts import (
    TARGETS_FIELD,
    FullSequenceModel,
    RunTrainer,
    StagedModel,
    is_epoch_trainer,
    run_view,
)
from recbole_sae.errors import ConfigError
from recbole_sae.model.build import build_model
from recbole_sae.model.saerec import SAERec
from recbole_sae.model.sasrec_plus import SASRecPlus
from recbole_sae.model.sasrec_sae import SASRecSAE
from recbole_sae.model.steerable_sasrec import SteerableSASRec
from recbole_sae.registry import PLUGIN_TRAINERS, get_trainer
from recbole_sae.trainer.sequence_trainer import SequenceTrainer


def test_the_project_models_declare_full_sequence_training_and_recboles_do_not():
    for model in (SASRecPlus, SASRecSAE, SAERec, SteerableSASRec):
        assert issubclass(model, FullSequenceModel), model
    for model in (SASRec, GRU4Rec):
        assert not issubclass(model, FullSequenceModel), model
    assert issubclass(SAERec, StagedModel) and not issubclass(SASRecPlus, StagedModel)


def test_a_full_sequence_model_must_give_its_loss_over_whole_windows():
    class Incomplete(FullSequenceModel):
        pass

    with pytest.raises(TypeError, match="full_sequence_loss"):
        Incomplete()


def test_full_sequence_training_of_a_model_without_it_is_a_config_error(tiny_build):
    config, _, train, *_ = tiny_build("SASRec", train_mode="full_sequence")
    with pytest.raises(ConfigError, match="SASRec does not support train_mode=full_sequence"):
        SequenceTrainer(config, SASRec(config, train.dataset))


def test_a_model_with_nothing_to_precompute_adds_no_field_to_the_batches(tiny_build):
    config, _, train, *_ = tiny_build("SASRecPlus")
    torch.manual_seed(0)
    model = SASRecPlus(config, train.dataset)
    assert model.precompute_rows(torch.ones(2, 3, dtype=torch.long), torch.tensor([3, 2])) == {}
    batches = SequenceTrainer(config, model).batches(train)
    assert batches.extra == {}
    batch = next(batches.epoch(0))
    assert TARGETS_FIELD in batch.interaction and model.calculate_loss(batch).ndim == 0


def test_build_model_hands_a_staged_model_its_stage(tiny_build, monkeypatch):
    config, _, train, *_ = tiny_build("SASRecPlus")
    made = []

    class Staged(SASRecPlus, StagedModel):
        @classmethod
        def prepare_stage(cls, config, dataset):
            made.append(dataset)
            return "stage"

        def __init__(self, config, dataset, stage):
            super().__init__(config, dataset)
            self.stage = stage

    monkeypatch.setattr("recbole_sae.model.build.get_model", lambda name: Staged)
    model = build_model(config, train.dataset)
    assert model.stage == "stage" and made == [train.dataset]
    monkeypatch.setattr("recbole_sae.model.build.get_model", lambda name: SASRecPlus)
    assert type(build_model(config, train.dataset)) is SASRecPlus


def test_every_trainer_of_the_project_is_a_run_trainer_and_an_epoch_trainer():
    for name in PLUGIN_TRAINERS:
        trainer_class = get_trainer(None, name)
        assert issubclass(trainer_class, RunTrainer) and issubclass(trainer_class, Trainer), name


def test_recboles_trainer_gets_the_pipelines_defaults(tiny_build):
    config, _, train, *_ = tiny_build("SASRec")
    trainer = get_trainer(config["MODEL_TYPE"], "SASRec")(config, SASRec(config, train.dataset))
    assert type(trainer) is Trainer and is_epoch_trainer(trainer)
    view = run_view(trainer)
    assert view is not trainer
    assert view.batches_per_epoch(train) == len(train)
    assert view.after_test(train, None, None) == {} and view.result_summary({"x": 1}) is None
    assert not is_epoch_trainer(object())


def test_a_project_trainer_is_its_own_view(tiny_build):
    config, _, train, *_ = tiny_build("SASRecPlus", full_sequence_batch="windows", train_batch_size=16)
    trainer = SequenceTrainer(config, SASRecPlus(config, train.dataset))
    assert run_view(trainer) is trainer
    assert run_view(trainer).batches_per_epoch(train) == len(trainer.batches(train)) != len(train)


def _recbole_trainer_classes():
    import recbole.trainer.trainer as module

    return [cls for _, cls in inspect.getmembers(module, inspect.isclass) if cls.__module__ == module.__name__]


def test_what_is_epoch_trainer_promises_holds_for_every_recbole_trainer():
    """RecBole 1.2.1: every Trainer subclass's fit takes callback_fn and its _train_epoch takes loss_func
    (what the pipeline used to read from their signatures); the decision-tree trainers are no Trainer."""
    classes = _recbole_trainer_classes()
    epoch = [cls for cls in classes if issubclass(cls, Trainer)]
    assert len(epoch) >= 10
    for cls in epoch:
        assert "callback_fn" in inspect.signature(cls.fit).parameters, cls
        assert "loss_func" in inspect.signature(cls._train_epoch).parameters, cls
        assert hasattr(cls, "_full_sort_batch_eval") and hasattr(cls, "_neg_sample_batch_eval"), cls
    others = {cls.__name__ for cls in classes if not issubclass(cls, Trainer)}
    assert {"DecisionTreeTrainer", "XGBoostTrainer", "LightGBMTrainer"} <= others
    for name in others - {"AbstractTrainer"}:
        cls = next(c for c in classes if c.__name__ == name)
        assert "callback_fn" not in inspect.signature(cls.fit).parameters, name
