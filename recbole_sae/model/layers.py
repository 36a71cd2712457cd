"""Building blocks shared by the SASRec-family models: a faster attention, batch trimming."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from recbole.model.layers import MultiHeadAttention


class SDPAMultiHeadAttention(MultiHeadAttention):
    """RecBole's MultiHeadAttention computed with ``scaled_dot_product_attention``.

    Same parameters, same maths (scale 1/sqrt(head size), RecBole's additive 0/-10000 mask, so
    rows that mask every key still give RecBole's uniform attention rather than NaN); the fused
    kernel avoids materialising the score and probability tensors and their dropout mask.
    Dropout on the attention probabilities is drawn inside the kernel, so training draws
    differ from RecBole's (the same distribution); in eval mode the outputs agree to float error.
    """

    def forward(self, input_tensor, attention_mask):
        batch, length, _ = input_tensor.shape
        heads, size = self.num_attention_heads, self.attention_head_size

        def split(x):
            return x.view(batch, length, heads, size).transpose(1, 2)

        query = split(self.query(input_tensor))
        key = split(self.key(input_tensor))
        value = split(self.value(input_tensor))
        dropout = self.attn_dropout.p if self.training else 0.0
        context = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask.to(query.dtype), dropout_p=dropout
        )
        context = context.transpose(1, 2).reshape(batch, length, heads * size)
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
