"""Reading and editing a SASRec's hidden states through forward hooks.

A *site* is the output of one module of the network: the embedding block (item + position
embeddings after LayerNorm and dropout), any transformer block, or the last block. While a
``capture`` is open, every forward pass appends the site's output; while an ``intervene`` is open,
the site's output is replaced by ``fn(output, positions)`` where ``positions`` is the boolean
mask [B, L] of the positions the edit applies to (the last real position of each sequence, or
every real position), set by the model before each forward pass.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch
from torch import nn

from recbole_sae.errors import ConfigError

SITE_POSITIONS = ("last", "all")


def resolve_site(model: nn.Module, layer) -> tuple[str, nn.Module]:
    """``layer``: 'embedding', a block index (0-based, negative counts from the end) or 'last'."""
    blocks = model.trm_encoder.layer
    if layer in ("embedding", "emb"):
        return "embedding", model.dropout  # the last op of the embedding block
    if layer == "last":
        layer = len(blocks) - 1
    try:
        index = int(layer)
    except (TypeError, ValueError):
        raise ConfigError(f"sae_layer must be 'embedding', 'last' or a block index, got '{layer}'") from None
    if not -len(blocks) <= index < len(blocks):
        raise ConfigError(
            f"sae_layer={index} is out of range: the model has {len(blocks)} blocks "
            f"(0..{len(blocks) - 1}, 'embedding' or 'last')"
        )
    index %= len(blocks)
    return f"block{index}", blocks[index]


def position_mask(item_seq: torch.Tensor, item_seq_len: torch.Tensor, positions: str) -> torch.Tensor:
    """[B, L] mask of the last real position of each row, or of every real position."""
    steps = torch.arange(item_seq.size(1), device=item_seq.device).unsqueeze(0)
    if positions == "last":
        return steps == (item_seq_len - 1).unsqueeze(1)
    if positions == "all":
        return steps < item_seq_len.unsqueeze(1)
    raise ConfigError(f"positions must be one of {SITE_POSITIONS}, got '{positions}'")


class HiddenSite:
    """One hookable site of a model: capture its outputs or replace them."""

    def __init__(self, model: nn.Module, layer):
        self.name, self.module = resolve_site(model, layer)
        self.positions: torch.Tensor | None = None  # set by the model before each forward pass

    @contextlib.contextmanager
    def capture(self):
        """Collect the site's output of every forward pass: yields a list of [B, L, H] tensors."""
        outputs: list[torch.Tensor] = []
        handle = self.module.register_forward_hook(lambda mod, inp, out: outputs.append(out.detach()))
        try:
            yield outputs
        finally:
            handle.remove()

    @contextlib.contextmanager
    def intervene(self, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
        """Replace the site's output by ``fn(output, positions)`` during the block."""

        def hook(mod, inp, out):
            if self.positions is None:
                raise RuntimeError("the model did not set the positions of the edit")
            return fn(out, self.positions)

        handle = self.module.register_forward_hook(hook)
        try:
            yield self
        finally:
            handle.remove()


def replace_at(output: torch.Tensor, positions: torch.Tensor, new_rows: Callable[[torch.Tensor], torch.Tensor]):
    """``output`` with the rows at ``positions`` replaced by ``new_rows(those rows)``."""
    out = output.clone()
    out[positions] = new_rows(output[positions])
    return out
