"""Evaluation metrics of a sparse autoencoder on a set of activations."""

from __future__ import annotations

from typing import Dict, Union

import torch

from .model import SparseAutoencoder


def _rows(sae: SparseAutoencoder, x: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[-1] != sae.cfg.d_in:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"expected activations of shape [..., {sae.cfg.d_in}], got {shape}")
    x = x.reshape(-1, sae.cfg.d_in)
    if x.shape[0] == 0:
        raise ValueError("cannot evaluate an SAE on zero rows")
    return x


@torch.no_grad()
def evaluate_sae(sae: SparseAutoencoder, x: torch.Tensor, batch_size: int = 4096) -> Dict[str, Union[float, int]]:
    """Reconstruction and sparsity metrics of ``sae`` on ``x`` ``[..., d_in]``.

    Runs in eval mode (the previous mode is restored) and accumulates in
    float64.  All reconstruction metrics are in the RAW input space:

    * ``mse``: mean over rows and dims of ``(x - x_hat)^2``;
    * ``fvu``: ``sum ||x - x_hat||^2 / sum ||x - mean(x)||^2``;
    * ``explained_variance``: ``1 - fvu``;
    * ``l0``: mean number of nonzero latents per row;
    * ``dead_frac`` / ``n_dead``: share / number of latents that never fire
      (activation > 0) on ``x``;
    * ``n_rows``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    x = _rows(sae, x)
    n = x.shape[0]
    mean = x.to(torch.float64).mean(dim=0)
    sse = torch.zeros((), dtype=torch.float64)
    sst = torch.zeros((), dtype=torch.float64)
    nnz = torch.zeros((), dtype=torch.float64)
    fired = torch.zeros(sae.cfg.d_sae, dtype=torch.bool)
    was_training = sae.training
    sae.eval()
    try:
        for start in range(0, n, batch_size):
            xb = x[start : start + batch_size].to(device=sae.device, dtype=sae.dtype)
            x_hat, f = sae(xb)
            xb64 = xb.to(torch.float64)
            sse += (xb64 - x_hat.to(torch.float64)).pow(2).sum().cpu()
            sst += (xb64 - mean.to(xb64.device)).pow(2).sum().cpu()
            active = f > 0
            nnz += active.sum().to(torch.float64).cpu()
            fired |= active.any(dim=0).cpu()
    finally:
        sae.train(was_training)
    fvu = float(sse / sst) if sst.item() > 0 else float("nan")
    n_dead = int((~fired).sum().item())
    return {
        "mse": float(sse / (n * sae.cfg.d_in)),
        "fvu": fvu,
        "explained_variance": 1.0 - fvu,
        "l0": float(nnz / n),
        "dead_frac": n_dead / sae.cfg.d_sae,
        "n_dead": n_dead,
        "n_rows": n,
    }


@torch.no_grad()
def latent_firing_rate(sae: SparseAutoencoder, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """Per-latent share of rows of ``x`` on which it fires (activation > 0).

    Returns a float32 CPU tensor ``[d_sae]`` with values in ``[0, 1]``; eval
    mode is used and the previous mode restored.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    x = _rows(sae, x)
    counts = torch.zeros(sae.cfg.d_sae, dtype=torch.float64)
    was_training = sae.training
    sae.eval()
    try:
        for start in range(0, x.shape[0], batch_size):
            f = sae.encode(x[start : start + batch_size].to(device=sae.device, dtype=sae.dtype))
            counts += (f > 0).sum(dim=0).to(torch.float64).cpu()
    finally:
        sae.train(was_training)
    return (counts / x.shape[0]).to(torch.float32)
