"""What the trainers and the run pipeline need from models and trainers, declared by them.

A model or trainer says what it can do by deriving from a class here; the code that needs the
capability asks ``isinstance``. Nothing is found out by probing for attribute names or signatures.

Models
  :class:`FullSequenceModel`: SequenceTrainer trains it with ``train_mode: full_sequence`` (windows
  of whole sequences, a loss at every position). SASRecPlus declares it, and with it SASRecSAE,
  SAERec and SteerableSASRec; RecBole's models do not, and train on RecBole's prefix rows.
  :class:`StagedModel`: a model whose data is a stage of its own, made before the model is built
  (SAERec's intents); ``recbole_sae.model.build`` makes it and hands it over.

Trainers
  RecBole's ``Trainer`` is what the pipeline trains with, for RecBole's models and this project's
  alike (:func:`is_epoch_trainer`). :class:`RunTrainer` is what this project's trainers add for the
  pipeline: the batches of an epoch they build themselves, and reports of their own after the
  test. SequenceTrainer declares it, so every trainer of the project does; the pipeline gives any
  other trainer RunTrainer's defaults (:func:`run_view`): RecBole's batches and no reports.

Base classes rather than ``typing.Protocol``: a runtime-checked Protocol matches any object with
methods of the right names, the same guess as ``hasattr``; a base class is a declaration that a
reader finds in the class statement, and it carries the defaults (no rows to precompute, no reports).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

# The batch field of a full-sequence batch: [B, L] the next item at every position, 0 at padding and
# at positions whose target an earlier window of the user already counts.
TARGETS_FIELD = "target_id_list"


class FullSequenceModel(ABC):
    """A sequential model that trains on whole windows of each user's sequence.

    SequenceTrainer (``train_mode: full_sequence``) hands ``calculate_loss`` batches that hold
    :data:`TARGETS_FIELD`; the model's ``calculate_loss`` sends those to :meth:`full_sequence_loss`
    (and any other batch, e.g. RecBole's prefix rows, to its usual loss).
    """

    @abstractmethod
    def full_sequence_loss(self, interaction):
        """The mean loss over the targets of ``interaction[TARGETS_FIELD]`` (a scalar tensor)."""

    def precompute_rows(self, item_seq, item_seq_len) -> dict:
        """Per-row inputs of the training windows that do not change while the model trains, computed
        once before the first epoch: field name -> [R, L, ...] tensor, added to every batch of those
        rows. ``item_seq`` [R, L] and ``item_seq_len`` [R] are all the windows. None by default."""
        return {}


class StagedModel(ABC):
    """A model built as ``Model(config, dataset, Model.prepare_stage(config, dataset))``."""

    @classmethod
    @abstractmethod
    def prepare_stage(cls, config, dataset):
        """The data stage of this run (e.g. SAERec's intents), made, or read from the run folder."""


class RunTrainer:
    """What the run pipeline calls on a trainer beyond RecBole's ``fit`` and ``evaluate``.

    The defaults are what a RecBole trainer does: RecBole's own batches, no reports of its own.
    """

    def batches_per_epoch(self, train_data) -> int:
        """Training batches in one epoch (for the progress lines)."""
        return len(train_data)

    def after_test(self, train_data, valid_data, test_data) -> dict:
        """The trainer's own reports once the best model is tested (SAE fidelity, steering, intents):
        result-record key -> report, merged into ``result.json``."""
        return {}

    def result_summary(self, extra: dict) -> dict | None:
        """What the console and the RESULT line show of ``after_test``'s reports: report key -> summary
        (None, or a key left out: the report's top-level numbers and words)."""
        return None


_RECBOLE_TRAINER = RunTrainer()  # the defaults, for a trainer that is not a RunTrainer


def run_view(trainer) -> RunTrainer:
    """``trainer`` as a RunTrainer: itself when it is one, else RunTrainer's defaults."""
    return trainer if isinstance(trainer, RunTrainer) else _RECBOLE_TRAINER


def is_epoch_trainer(trainer) -> bool:
    """Whether ``trainer`` is RecBole's ``Trainer`` (or derives from it), which trains in epochs of batches:

    * ``fit(train_data, valid_data, verbose, saved, show_progress, callback_fn)`` calls
      ``callback_fn(epoch_idx, valid_score)`` after every validation;
    * ``_train_epoch(train_data, epoch_idx, loss_func, show_progress)`` calls ``loss_func`` once per batch;
    * ``_full_sort_batch_eval`` and ``_neg_sample_batch_eval`` evaluate one batch.

    Every trainer of this project is one, and every RecBole trainer but the decision-tree ones
    (``DecisionTreeTrainer``: xgboost, lightgbm), which train at once.
    """
    from recbole.trainer import Trainer

    return isinstance(trainer, Trainer)
