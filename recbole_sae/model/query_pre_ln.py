"""The transformer block of the left-padded SASRec code (``transformer_block: query_pre_ln``).

RecBole's SASRec (``post_ln``, the default) normalises after each residual sum: ``x = LN(x +
Attn(x))``, ``x = LN(x + FFN(x))``, with a LayerNorm on the embeddings. The SASRec code behind the
published cross-entropy numbers on amazon-beauty normalises only the attention's *query* and the
feed-forward's input:

    q = LN_a(x);  x = x + Attn(q, x, x);  y = LN_f(x);  x = y + FFN(y)

with a final LayerNorm after the last block, item embeddings scaled by sqrt(hidden_size) and no
LayerNorm on the embeddings, and xavier-normal initialisation. Its feed-forward is two position-wise
linear maps with dropout after each (inner size = hidden size, ReLU there: set ``inner_size`` and
``hidden_act`` to match). Padding keys stay masked here (RecBole's mask); with right padding and a
causal mask no real position reads a padding one either way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recbole_sae.errors import ConfigError
from recbole_sae.model.layers import multi_head_context

BLOCKS = ("post_ln", "query_pre_ln")
# RecBole's hidden_act names (its gelu is the erf form, F.gelu's default)
ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu, "swish": F.silu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}


class QueryPreLNLayer(nn.Module):
    """One block: pre-LayerNorm on the attention's query, an unnormalised residual, then a
    normalised feed-forward with its own residual. Same call as RecBole's TransformerLayer."""

    def __init__(self, n_heads, hidden_size, inner_size, hidden_dropout, attn_dropout, hidden_act, eps):
        super().__init__()
        if hidden_size % n_heads:
            raise ConfigError(f"hidden_size {hidden_size} is not a multiple of n_heads {n_heads}")
        if hidden_act not in ACTIVATIONS:
            raise ConfigError(f"hidden_act must be one of {sorted(ACTIVATIONS)}, got '{hidden_act}'")
        self.n_heads = n_heads
        self.attn_dropout = attn_dropout
        self.attn_norm = nn.LayerNorm(hidden_size, eps=eps)
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.value = nn.Linear(hidden_size, hidden_size)
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.ffn_norm = nn.LayerNorm(hidden_size, eps=eps)
        self.ffn_in = nn.Linear(hidden_size, inner_size)
        self.ffn_out = nn.Linear(inner_size, hidden_size)
        self.act = ACTIVATIONS[hidden_act]
        self.dropout = nn.Dropout(hidden_dropout)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        context = multi_head_context(
            self.query(self.attn_norm(hidden)),
            self.key(hidden),
            self.value(hidden),
            self.n_heads,
            attention_mask,
            self.attn_dropout if self.training else 0.0,
        )
        hidden = hidden + self.dense(context)
        normed = self.ffn_norm(hidden)
        return normed + self.dropout(self.ffn_out(self.dropout(self.act(self.ffn_in(normed)))))


def xavier_init(module: nn.Module) -> None:
    """Xavier-normal weights for linear maps and embeddings, zero biases (the published code's)."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.xavier_normal_(module.weight)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
    if isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def query_pre_ln_layers(model) -> nn.ModuleList:
    """``model.n_layers`` query-pre-LN blocks with the model's sizes, dropouts and activation."""
    return nn.ModuleList(
        QueryPreLNLayer(
            model.n_heads,
            model.hidden_size,
            model.inner_size,
            model.hidden_dropout_prob,
            model.attn_dropout_prob,
            model.hidden_act,
            model.layer_norm_eps,
        )
        for _ in range(model.n_layers)
    )
