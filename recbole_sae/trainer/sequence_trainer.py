"""Training on whole sequences, batched by length: RecBole's Trainer with its own epoch loop.

RecBole's training split of a sequential dataset holds one row per prefix of each user's training
sequence (target = the next item), consecutive per user and in time order. ``full_sequence``
keeps, per user, the row of the user's last training item and every ``full_sequence_stride``-th
row before it; each kept row's item list (up to ``MAX_ITEM_LIST_LENGTH`` items) plus its target is
a window of the sequence, and the next-item targets of its positions are the list shifted by one
with the row's target last. A window's loss covers only the targets that no earlier window of the
user holds (its last ``stride`` positions), so every training target counts exactly once and, with
a stride below the window length, long histories keep at least ``length - stride`` items of
context. Validation and test items are in other splits and never appear.

Both modes can group rows of similar length into a batch (``length_bucketing``) so that trimming a
batch to its longest row removes most padding; the batch order is shuffled every epoch with a
generator seeded from ``seed`` and the epoch, so runs are reproducible.

``full_sequence_batch`` says what ``train_batch_size`` counts in full_sequence mode: ``targets``
(default) fills each batch with about ``train_batch_size`` loss targets, as many as a batch of
RecBole's prefix rows has, so both modes take the same number of optimiser steps per epoch and a
``train_batch_size`` tuned for one suits the other; ``windows`` puts ``train_batch_size`` windows in
a batch (several targets each: fewer, larger steps).
"""

from __future__ import annotations

import math
import time

import torch
from recbole.data.interaction import Interaction
from recbole.trainer import Trainer
from torch.nn.utils import clip_grad_norm_
from tqdm import tqdm

from recbole_sae import distributed
from recbole_sae.contracts import TARGETS_FIELD, FullSequenceModel, RunTrainer
from recbole_sae.data.rows import last_row_mask
from recbole_sae.errors import ConfigError

BATCH_UNITS = ("targets", "windows")  # what train_batch_size counts in full_sequence mode


def _row_offsets(user_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: its distance from the user's last row, and from the user's first row."""
    n = user_ids.numel()
    last_index = torch.nonzero(last_row_mask(user_ids)).squeeze(1)
    first_index = torch.cat([torch.zeros(1, dtype=torch.long), last_index[:-1] + 1])
    owner = torch.searchsorted(last_index, torch.arange(n))
    return last_index[owner] - torch.arange(n), torch.arange(n) - first_index[owner]


def default_stride(max_len: int) -> int:
    """A quarter of the window: every counted target keeps at least 3/4 of the window as context."""
    return max(1, max_len // 4)


def full_sequence_rows(user_ids: torch.Tensor, stride: int) -> torch.Tensor:
    """Indices of the prefix rows that end a window, every ``stride`` rows back from each user's last.

    ``user_ids`` are the training rows' users, consecutive per user in time order.
    """
    if user_ids.numel() == 0:
        return torch.zeros(0, dtype=torch.long)
    back, _ = _row_offsets(user_ids)
    return torch.nonzero(back % stride == 0).squeeze(1)


def new_target_mask(
    user_ids: torch.Tensor, rows: torch.Tensor, item_len: torch.Tensor, stride: int, width: int
) -> torch.Tensor:
    """[R, width] mask of the positions whose target no earlier window of the user holds.

    A window ends ``stride`` rows after the previous one, so only its last ``stride`` positions are
    new, except in the user's first window (fewer than ``stride`` rows before it), where all are.
    """
    _, ahead = _row_offsets(user_ids)
    positions = torch.arange(width).unsqueeze(0)
    first = (ahead[rows] < stride).unsqueeze(1)
    return (positions < item_len.unsqueeze(1)) & (first | (positions >= (item_len - stride).unsqueeze(1)))


def shifted_targets(item_seq: torch.Tensor, item_len: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Next-item targets of every position: the list shifted left, the row's target at its end."""
    targets = torch.zeros_like(item_seq)
    targets[:, :-1] = item_seq[:, 1:]
    targets[torch.arange(item_seq.size(0)), item_len - 1] = target
    positions = torch.arange(item_seq.size(1)).unsqueeze(0)
    return torch.where(positions < item_len.unsqueeze(1), targets, torch.zeros_like(targets))


def check_loss(loss: float, epoch_idx: int) -> float:
    """``loss``, or the error that says what to change when it is NaN or infinite."""
    if not math.isfinite(loss):
        raise FloatingPointError(
            f"training loss is {loss} at epoch {epoch_idx}: lower learning_rate, "
            "set clip_grad_norm (e.g. --clip_grad_norm=\"{'max_norm': 5}\") or check the data"
        )
    return loss


class LengthBatches:
    """Rows of a RecBole training split as length-grouped, trimmed batches of Interactions."""

    def __init__(self, dataset, config, full_sequence: bool, bucketing: bool = True):
        feat = dataset.inter_feat
        seq_field = config["ITEM_ID_FIELD"] + config["LIST_SUFFIX"]
        len_field = config["ITEM_LIST_LENGTH_FIELD"]
        item_field, user_field = config["ITEM_ID_FIELD"], config["USER_ID_FIELD"]
        self.seq_field, self.len_field, self.item_field = seq_field, len_field, item_field
        self.user_field = user_field
        rows = torch.arange(len(feat))
        max_len = config["MAX_ITEM_LIST_LENGTH"]
        stride = int(config["full_sequence_stride"] or default_stride(max_len))
        if not 1 <= stride <= max_len:
            raise ConfigError(f"full_sequence_stride must be in 1..MAX_ITEM_LIST_LENGTH ({max_len}), got {stride}")
        if full_sequence:
            rows = full_sequence_rows(feat[user_field], stride)
        self.item_seq = feat[seq_field][rows]
        self.item_len = feat[len_field][rows]
        self.target = feat[item_field][rows]
        self.user = feat[user_field][rows]
        self.targets = None
        if full_sequence:
            targets = shifted_targets(self.item_seq, self.item_len, self.target)
            new = new_target_mask(feat[user_field], rows, self.item_len, stride, targets.size(1))
            self.targets = torch.where(new, targets, torch.zeros_like(targets))
        self.extra: dict[str, torch.Tensor] = {}  # more per-row [R, L, ...] fields (see SequenceTrainer)
        self.batch_size = config["train_batch_size"]
        unit = (config["full_sequence_batch"] or "targets") if full_sequence else "windows"
        if unit not in BATCH_UNITS:
            raise ConfigError(f"full_sequence_batch must be one of {BATCH_UNITS}, got '{unit}'")
        # loss targets per row: a batch holds about batch_size of them (prefix rows: one each)
        self.row_targets = (self.targets > 0).sum(1) if unit == "targets" else None
        self.bucketing = bucketing
        self.seed = config["seed"]

    def __len__(self) -> int:
        """Batches per epoch (counting targets: an upper bound, since a batch may overshoot)."""
        if self.row_targets is not None:
            return math.ceil(self.n_targets / self.batch_size)
        return math.ceil(self.item_seq.size(0) / self.batch_size)

    @property
    def n_rows(self) -> int:
        return self.item_seq.size(0)

    @property
    def n_targets(self) -> int:
        return int((self.targets > 0).sum()) if self.targets is not None else self.n_rows

    def _batch_sizes(self, order: torch.Tensor) -> list[int] | int:
        """Rows per batch along ``order``: ``batch_size`` rows, or rows holding ~``batch_size`` targets."""
        if self.row_targets is None:
            return self.batch_size
        sizes, rows, targets = [], 0, 0
        for count in self.row_targets[order].tolist():  # a batch closes at the row that fills it
            rows, targets = rows + 1, targets + count
            if targets >= self.batch_size:
                sizes.append(rows)
                rows = targets = 0
        return sizes + [rows] if rows else sizes

    def index_batches(self, epoch_idx: int) -> list[torch.Tensor]:
        """The row indices of each batch of one epoch, in a reproducible random order."""
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch_idx)
        order = torch.randperm(self.n_rows, generator=gen)
        if self.bucketing:  # sort the shuffled rows by length (stable): random within a length
            order = order[torch.sort(self.item_len[order], stable=True).indices]
        batches = list(torch.split(order, self._batch_sizes(order)))
        if self.bucketing:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]
        return batches

    def count(self, index: torch.Tensor) -> int:
        """Loss targets in the rows ``index`` (prefix rows: one each)."""
        return int((self.targets[index] > 0).sum()) if self.targets is not None else index.numel()

    def interaction(self, index: torch.Tensor) -> Interaction:
        """The rows ``index`` as one batch, trimmed to its longest sequence."""
        item_len = self.item_len[index]
        width = int(item_len.max())
        fields = {
            self.seq_field: self.item_seq[index, :width],
            self.len_field: item_len,
            self.item_field: self.target[index],
            self.user_field: self.user[index],
        }
        if self.targets is not None:
            fields[TARGETS_FIELD] = self.targets[index, :width]
        for name, values in self.extra.items():
            fields[name] = values[index, :width]
        return Interaction(fields)

    def epoch(self, epoch_idx: int):
        """The batches of one epoch, in a reproducible random order."""
        for index in self.index_batches(epoch_idx):
            yield self.interaction(index)


class SequenceTrainer(Trainer, RunTrainer):
    """RecBole's Trainer; ``train_mode`` and ``length_bucketing`` choose how batches are built.

    With ``train_mode: prefix`` and ``length_bucketing: False`` the epoch is RecBole's own;
    ``full_sequence`` needs a :class:`~recbole_sae.contracts.FullSequenceModel`.
    """

    def __init__(self, config, model):
        super().__init__(config, model)
        self.train_mode = config["train_mode"] or "full_sequence"
        self.length_bucketing = config["length_bucketing"] is not False
        if self.train_mode == "full_sequence" and not isinstance(model, FullSequenceModel):
            raise ConfigError(f"{type(model).__name__} does not support train_mode=full_sequence")
        self._batches = None

    def own_batches(self) -> bool:
        return self.train_mode == "full_sequence" or self.length_bucketing

    def batches(self, train_data) -> LengthBatches:
        if self._batches is None:
            self._batches = LengthBatches(
                train_data.dataset, self.config, self.train_mode == "full_sequence", self.length_bucketing
            )
            self.logger.info(
                f"{self.train_mode} training: {self._batches.n_rows} rows, "
                f"{self._batches.n_targets} targets, {len(self._batches)} batches per epoch"
            )
            if self.train_mode == "full_sequence":
                self._precompute_rows(self._batches)
        return self._batches

    def _precompute_rows(self, batches: LengthBatches) -> None:
        """The model's per-row inputs that do not change during training, computed once (e.g. SAERec's
        personal intents at every position)."""
        start = time.perf_counter()
        rows = self.model.precompute_rows(batches.item_seq, batches.item_len)
        if rows:
            batches.extra.update(rows)
            self.logger.info(f"precomputed {sorted(batches.extra)} in {time.perf_counter() - start:.1f} s")

    def batches_per_epoch(self, train_data) -> int:
        """Training batches of one epoch (counting targets: an upper bound)."""
        return len(self.batches(train_data)) if self.own_batches() else len(train_data)

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        if not self.own_batches():
            return super()._train_epoch(train_data, epoch_idx, loss_func, show_progress)
        self.model.train()
        loss_func = loss_func or self.model.calculate_loss
        batches = self.batches(train_data)
        if distributed.active(self.config):  # this process's share of each batch, gradients all-reduced
            return check_loss(distributed.train_epoch(self, batches, epoch_idx, loss_func), epoch_idx)
        iterator = batches.epoch(epoch_idx)
        if show_progress:
            iterator = tqdm(iterator, total=len(batches), desc=f"Train {epoch_idx:>5}", ncols=100)
        total = 0.0
        for interaction in iterator:
            interaction = interaction.to(self.device)
            self.optimizer.zero_grad()
            loss = loss_func(interaction)
            check_loss(loss.item(), epoch_idx)
            loss.backward()
            if self.clip_grad_norm:
                clip_grad_norm_(self.model.parameters(), **self.clip_grad_norm)
            self.optimizer.step()
            total += loss.item()
        return total
