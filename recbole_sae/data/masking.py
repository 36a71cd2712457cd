"""Masked-item training on whole sequences: each training interaction's target joins its history.

RecBole trains a sequential model on one interaction per training item: the history before the item
(``item_id_list``, right-padded, at most ``MAX_ITEM_LIST_LENGTH`` items) and the item itself
(``item_id``). Its masked-item transform (``transform: mask_itemseq``, BERT4Rec's) masks items of the
history only and never reads the target, so the item a user interacted with last in training (the
one before the validation item) never enters any training sequence: 22,363 of amazon-beauty's
153,776 training items, a third of a 5-item user's. The original BERT4Rec masks the user's whole
training sequence. ``mask_with_target: True`` appends the target to the history before RecBole's
transform masks it (the oldest item makes room when the history is full), in the training loader
only: evaluation loaders apply the transform too and must not see their targets.
"""

from __future__ import annotations

import torch
from recbole.data.interaction import Interaction
from recbole.data.transform import MaskItemSequence

from recbole_sae.errors import ConfigError

MASKED = "mask_itemseq"  # RecBole's name of its masked-item transform


def check(config) -> None:
    """``mask_with_target`` set for a model that trains without RecBole's masked-item transform."""
    if config["mask_with_target"] and config["transform"] != MASKED:
        raise ConfigError(
            f"mask_with_target=True: {config['model']} trains without RecBole's masked-item transform "
            f"(transform: {MASKED}, BERT4Rec's), so nothing would read it; drop the setting for this model"
        )


def with_target(interaction: Interaction, seq_field: str, len_field: str, item_field: str) -> Interaction:
    """The batch with each row's target item appended to its right-padded history (a full history
    loses its oldest item) and its length one more."""
    seq = interaction[seq_field].clone()
    length = interaction[len_field].clone()
    full = length >= seq.size(1)
    if bool(full.any()):
        seq[full] = torch.roll(seq[full], -1, dims=1)
        length[full] -= 1
    seq[torch.arange(seq.size(0), device=seq.device), length] = interaction[item_field]
    interaction.update(Interaction({seq_field: seq, len_field: length + 1}))
    return interaction


class MaskWithTarget:
    """RecBole's masked-item transform over histories that end with their target."""

    def __init__(self, masked: MaskItemSequence):
        self.masked = masked

    def __call__(self, dataset, interaction):
        m = self.masked
        return m(dataset, with_target(interaction, m.ITEM_SEQ, m.ITEM_SEQ_LEN, m.ITEM_ID))


def attach(config, train_data) -> None:
    """With ``mask_with_target``, the training loader's transform appends targets before masking."""
    if config["mask_with_target"]:  # :func:`check` made sure the transform is RecBole's MaskItemSequence
        train_data.transform = MaskWithTarget(train_data.transform)
