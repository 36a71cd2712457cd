r"""SASRecPlus: SASRec trained on whole sequences with a loss at every position.

Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018 (the architecture, and its
training on every position of each user's sequence); Klenitskiy & Vasilev, "Turning Dross Into
Gold Loss: is BERT4Rec really better than SASRec?", RecSys 2023 ("SASRec+": that training with
cross-entropy over all items).

The network is RecBole's SASRec, parameter for parameter (same initialisation for the same seed);
what changes is how it is fed and a few per-op costs:

* ``train_mode: full_sequence`` (default): one row per window of up to ``MAX_ITEM_LIST_LENGTH``
  items of a user's training sequence, windows ``full_sequence_stride`` items apart, cross-entropy
  at every position whose target (the next item) no earlier window holds: every training target
  once. The rows are built by ``recbole_sae.trainer.sequence_trainer`` from RecBole's own training
  split, so validation and test items never enter training.
* ``train_mode: prefix``: RecBole's way (every prefix of every sequence is a row, loss at its last
  position), optionally with ``length_bucketing``.
* every batch is trimmed to its longest sequence (RecBole pads all rows to MAX_ITEM_LIST_LENGTH);
* in full_sequence mode the item logits are computed only at real positions;
* attention through ``scaled_dot_product_attention`` (``recbole_sae.model.layers``);
* ``transformer_block: query_pre_ln`` swaps RecBole's post-LayerNorm blocks for the published SASRec
  code's (``recbole_sae.model.query_pre_ln``: normalised query, final LayerNorm, scaled embeddings).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from recbole.model.sequential_recommender.sasrec import SASRec
from torch import nn

from recbole_sae import compat
from recbole_sae.contracts import TARGETS_FIELD, FullSequenceModel
from recbole_sae.errors import ConfigError
from recbole_sae.model.layers import trim, use_sdpa_attention
from recbole_sae.model.query_pre_ln import BLOCKS, query_pre_ln_layers, xavier_init

compat.apply()

TRAIN_MODES = ("full_sequence", "prefix")
POSITIONS = ("from_start", "from_end")


class SASRecPlus(SASRec, FullSequenceModel):
    """SASRec with full-sequence training and a lean forward pass (see the module docstring)."""

    parent_model = "SASRec"  # RecBole's SASRec.yaml is layered under this model's yaml

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.train_mode = config["train_mode"] or "full_sequence"
        if self.train_mode not in TRAIN_MODES:
            raise ConfigError(f"train_mode must be one of {TRAIN_MODES}, got '{self.train_mode}'")
        if self.train_mode == "full_sequence" and self.loss_type != "CE":
            raise ConfigError("train_mode=full_sequence needs loss_type=CE (set --loss_type=CE)")
        if config["sdpa_attention"] is not False:
            use_sdpa_attention(self.trm_encoder)
        self.positions = config["positions"] or "from_start"
        if self.positions not in POSITIONS:
            raise ConfigError(f"positions must be one of {POSITIONS}, got '{self.positions}'")
        self.block = config["transformer_block"] or "post_ln"
        if self.block not in BLOCKS:
            raise ConfigError(f"transformer_block must be one of {BLOCKS}, got '{self.block}'")
        if self.block == "query_pre_ln":
            self._use_query_pre_ln()

    def _use_query_pre_ln(self) -> None:
        """The published SASRec code's blocks, final LayerNorm, embedding scale and initialisation."""
        self.trm_encoder.layer = query_pre_ln_layers(self)
        self.final_norm = nn.LayerNorm(self.hidden_size, eps=self.layer_norm_eps)
        del self.LayerNorm  # no LayerNorm on the embeddings
        for module in (self.item_embedding, self.position_embedding, self.trm_encoder, self.final_norm):
            module.apply(xavier_init)

    # -- encoder ---------------------------------------------------------------------------------
    def position_ids(self, item_seq: torch.Tensor) -> torch.Tensor:
        """Position ids [1 or B, L]: ``from_start`` (RecBole's: the first item is 0) or ``from_end``
        (the last real item of each row is MAX_ITEM_LIST_LENGTH - 1, as in left-padded SASRec code,
        so the position next to the prediction always has the same embedding; padding gets the last id)."""
        steps = torch.arange(item_seq.size(1), device=item_seq.device).unsqueeze(0)
        if self.positions == "from_start":
            return steps
        last = self.max_seq_length - 1
        length = (item_seq > 0).sum(1, keepdim=True)
        return (steps + last + 1 - length).clamp(0, last)

    def item_vectors(self, item_seq: torch.Tensor) -> torch.Tensor:
        """The items' input representations [B, L, H] (subclasses enrich them)."""
        return self.item_embedding(item_seq)

    def embed(self, item_seq: torch.Tensor) -> torch.Tensor:
        """Item + position embeddings, LayerNorm and dropout: the transformer's input [B, L, H]
        (``query_pre_ln``: the item vectors scaled by sqrt(hidden_size), no LayerNorm)."""
        positions = self.position_embedding(self.position_ids(item_seq))
        if self.block == "query_pre_ln":
            return self.dropout(self.item_vectors(item_seq) * self.hidden_size**0.5 + positions)
        return self.dropout(self.LayerNorm(self.item_vectors(item_seq) + positions))

    def encode(self, item_seq: torch.Tensor) -> torch.Tensor:
        """Hidden states of the last layer at every position [B, L, H]."""
        hidden = self.embed(item_seq)
        mask = self.get_attention_mask(item_seq)
        for layer in self.trm_encoder.layer:
            hidden = layer(hidden, mask)
        return self.final_norm(hidden) if self.block == "query_pre_ln" else hidden

    def forward(self, item_seq, item_seq_len, all_positions: bool = False):
        """The sequence representation at the last real position [B, H] (or all positions)."""
        item_seq = trim(item_seq, item_seq_len)
        hidden = self.encode(item_seq)
        if all_positions:
            return hidden
        return self.gather_indexes(hidden, item_seq_len - 1)

    # -- losses ----------------------------------------------------------------------------------
    def calculate_loss(self, interaction):
        """A batch of windows (SequenceTrainer's, holding TARGETS_FIELD): the loss at every position;
        RecBole's prefix rows: SASRec's loss at the last one."""
        if TARGETS_FIELD in interaction.interaction:
            return self.full_sequence_loss(interaction)
        return super().calculate_loss(interaction)

    def sequence_states(self, interaction):
        """Hidden states at every position [B, L, H] of a full-sequence batch."""
        return self.forward(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN], all_positions=True)

    def full_sequence_loss(self, interaction):
        """Mean cross-entropy over all real positions; logits only where there is a target."""
        hidden = self.sequence_states(interaction)
        targets = interaction[TARGETS_FIELD][:, : hidden.size(1)]
        real = targets > 0
        logits = hidden[real] @ self.item_embedding.weight.t()
        return F.cross_entropy(logits, targets[real])
