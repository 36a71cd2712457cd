"""Building blocks shared by the SASRec-family models: a faster attention, batch trimming."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from recbole.model.layers import MultiHeadAttention


def multi_head_context(query, key, value, heads: int, attention_mask, dropout_p: float) -> torch.Tensor:
    """Scaled dot-product attention over ``heads`` heads of already projected ``query``, ``key`` and
    ``value`` [B, L, H] with an additive ``attention_mask``; the heads' contexts side by side [B, L, H]."""
    batch, length, width = query.shape

    def split(x):
        return x.view(batch, length, heads, width // heads).transpose(1, 2)

    context = F.scaled_dot_product_attention(
        split(query), split(key), split(value), attn_mask=attention_mask.to(query.dtype), dropout_p=dropout_p
    )
    return context.transpose(1, 2).reshape(batch, length, width)


class SDPAMultiHeadAttention(MultiHeadAttention):
    """RecBole's MultiHeadAttention computed with ``scaled_dot_product_attention``.

    Same parameters, same maths (scale 1/sqrt(head size), RecBole's additive 0/-10000 mask, so
    rows that mask every key still give RecBole's uniform attention rather than NaN); the fused
    kernel avoids materialising the score and probability tensors and their dropout mask.
    Dropout on the attention probabilities is drawn inside the kernel, so training draws
    differ from RecBole's (the same distribution); in eval mode the outputs agree to float error.
    """

    def forward(self, input_tensor, attention_mask):
        context = multi_head_context(
            self.query(input_tensor),
            self.key(input_tensor),
            self.value(input_tensor),
            self.num_attention_heads,
            attention_mask,
            self.attn_dropout.p if self.training else 0.0,
        )
        hidden = self.out_dropout(self.dense(context))
        return self.LayerNorm(hidden + input_tensor)


def use_sdpa_attention(module: torch.nn.Module) -> int:
    """Switch every RecBole MultiHeadAttention inside ``module`` to the SDPA forward, in place.

    The parameters (and so the state dict) are untouched. Returns how many were switched.
    """
    switched = 0
    for sub in module.modules():
        if type(sub) is MultiHeadAttention:
            sub.__class__ = SDPAMultiHeadAttention
            switched += 1
    return switched


def trim(item_seq: torch.Tensor, item_seq_len: torch.Tensor) -> torch.Tensor:
    """Drop the trailing all-padding columns (RecBole pads on the right)."""
    longest = int(item_seq_len.max()) if item_seq_len.numel() else item_seq.size(1)
    return item_seq[:, : max(longest, 1)]
