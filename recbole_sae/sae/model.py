"""Sparse autoencoder model (pure PyTorch).

Forward pass, with ``x`` a raw input of shape ``[..., d_in]``::

    x_n   = (x - norm_mean) * norm_scale            # normalised input
    f     = act((x_n - b_dec) @ W_enc + b_enc)       # latents, [..., d_sae]
    x_hat = (f @ W_dec + b_dec) / norm_scale + norm_mean

``W_dec`` has shape ``[d_sae, d_in]``; each row is the direction of one latent
in the normalised space and is kept at unit norm during training.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, Optional, Union

import torch
from torch import nn

from .config import SAEConfig

# Momentum of the running estimate of the BatchTopK inference threshold.
BATCHTOPK_THRESHOLD_MOMENTUM = 0.99


def topk_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask selecting exactly ``k`` entries per row (last dim).

    The ``k`` largest scores are selected; among entries tied with the k-th
    largest value, the ones with the lowest index win, so the result does not
    depend on how ``torch.topk`` orders ties.  Rows must not contain NaN.
    """
    n = scores.shape[-1]
    if k >= n:
        return torch.ones_like(scores, dtype=torch.bool)
    kth = torch.topk(scores, k, dim=-1, sorted=False).values.amin(dim=-1, keepdim=True)
    above = scores > kth
    n_above = above.sum(dim=-1, keepdim=True)
    tied = scores == kth
    tie_rank = torch.cumsum(tied.to(torch.int64), dim=-1)
    return above | (tied & (tie_rank <= k - n_above))


def geometric_median(x: torch.Tensor, n_iter: int = 100, eps: float = 1e-8, tol: float = 1e-7) -> torch.Tensor:
    """Geometric median of the rows of ``x`` ([N, d]) by Weiszfeld iterations.

    Starts from the mean and iterates ``y <- sum_i w_i x_i / sum_i w_i`` with
    ``w_i = 1 / max(||x_i - y||, eps)`` until the step is below
    ``tol * (1 + ||y||)`` or ``n_iter`` iterations ran.  Computed in float64,
    returned in the dtype of ``x``.
    """
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"geometric_median expects a non-empty [N, d] tensor, got {tuple(x.shape)}")
    xd = x.detach().to(torch.float64)
    y = xd.mean(dim=0)
    for _ in range(n_iter):
        dist = torch.linalg.vector_norm(xd - y, dim=1).clamp_min(eps)
        w = 1.0 / dist
        y_new = (w[:, None] * xd).sum(dim=0) / w.sum()
        step = torch.linalg.vector_norm(y_new - y).item()
        y = y_new
        if step <= tol * (1.0 + torch.linalg.vector_norm(y).item()):
            break
    return y.to(x.dtype)


class SparseAutoencoder(nn.Module):
    """Sparse autoencoder with TopK, BatchTopK or ReLU+L1 latents.

    Parameters: ``W_enc`` [d_in, d_sae], ``b_enc`` [d_sae], ``W_dec``
    [d_sae, d_in] (unit-norm rows), ``b_dec`` [d_in] (normalised space).

    Buffers (saved with the weights):

    * ``norm_mean`` [d_in] and ``norm_scale`` [] -- input normalisation
      (zeros / one when ``normalize == "none"`` or before fitting);
    * ``rows_since_fired`` [d_sae] int64 -- training rows seen since each
      latent last fired (dead when ``>= dead_tokens_threshold``);
    * ``batchtopk_threshold`` [] -- BatchTopK inference threshold (negative
      while not yet estimated);
    * ``n_rows_seen`` [] int64 -- training rows that updated the statistics.

    Activations:

    * ``topk``: per row, the ``k`` largest pre-activations are kept (ties go
      to the lowest index) and passed through ReLU, so a row has exactly ``k``
      nonzeros unless some of its k largest pre-activations are <= 0.
    * ``batchtopk``: in training mode the ``k * rows`` largest pre-activations
      of the whole batch (all leading dims flattened) are kept, then ReLU.  In
      eval mode a latent fires when its pre-activation exceeds
      ``batchtopk_threshold``, an exponential moving average (momentum
      ``BATCHTOPK_THRESHOLD_MOMENTUM``) of the smallest positive activation kept
      in each training batch.  Until that estimate exists, eval mode falls
      back to per-row TopK.
    * ``relu``: plain ReLU; sparsity comes from the L1 penalty in the loss.
    """

    def __init__(self, cfg: SAEConfig):
        super().__init__()
        if not isinstance(cfg, SAEConfig):
            raise ValueError(f"cfg must be an SAEConfig, got {type(cfg).__name__}")
        cfg.validate()
        if cfg.aux_k is None:
            cfg.aux_k = min(2 * cfg.k, cfg.d_sae)
        self.cfg = cfg
        d_in, d_sae = cfg.d_in, cfg.d_sae

        gen = torch.Generator().manual_seed(cfg.seed)
        w_dec = torch.randn(d_sae, d_in, generator=gen)
        w_dec = w_dec / torch.linalg.vector_norm(w_dec, dim=1, keepdim=True).clamp_min(1e-12)
        if cfg.tied_init:
            w_enc = w_dec.t().clone()
        else:
            bound = 1.0 / math.sqrt(d_in)
            w_enc = (torch.rand(d_in, d_sae, generator=gen) * 2.0 - 1.0) * bound

        self.W_enc = nn.Parameter(w_enc.contiguous())
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.W_dec = nn.Parameter(w_dec.contiguous())
        self.b_dec = nn.Parameter(torch.zeros(d_in))

        self.register_buffer("norm_mean", torch.zeros(d_in))
        self.register_buffer("norm_scale", torch.ones(()))
        self.register_buffer("rows_since_fired", torch.zeros(d_sae, dtype=torch.int64))
        self.register_buffer("batchtopk_threshold", torch.full((), -1.0))
        self.register_buffer("n_rows_seen", torch.zeros((), dtype=torch.int64))

    # -------------------------------------------------------------- properties
    @property
    def d_in(self) -> int:
        return self.cfg.d_in

    @property
    def d_sae(self) -> int:
        return self.cfg.d_sae

    @property
    def device(self) -> torch.device:
        return self.W_dec.device

    @property
    def dtype(self) -> torch.dtype:
        return self.W_dec.dtype

    def extra_repr(self) -> str:
        c = self.cfg
        extra = f", k={c.k}" if c.activation != "relu" else f", l1_coeff={c.l1_coeff}"
        return f"d_in={c.d_in}, d_sae={c.d_sae}, activation={c.activation}{extra}, normalize={c.normalize}"

    # ------------------------------------------------------------ data stats
    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"expected a torch.Tensor, got {type(x).__name__}")
        if x.dim() == 0 or x.shape[-1] != self.cfg.d_in:
            raise ValueError(f"expected input of shape [..., {self.cfg.d_in}], got {tuple(x.shape)}")

    @torch.no_grad()
    def fit_normalization(self, x: torch.Tensor) -> None:
        """Fit the normalisation buffers on a data sample ``[..., d_in]``.

        With ``normalize == "none"`` the buffers are reset to the identity
        (mean 0, scale 1).  With ``"global"``: ``norm_mean`` is the sample mean
        and ``norm_scale = sqrt(d_in / mean_i ||x_i - norm_mean||^2)``.
        """
        self._check_input(x)
        if self.cfg.normalize == "none":
            self.norm_mean.zero_()
            self.norm_scale.fill_(1.0)
            return
        xd = x.detach().reshape(-1, self.cfg.d_in).to(torch.float64)
        if xd.shape[0] == 0:
            raise ValueError("fit_normalization needs at least one row")
        if not torch.isfinite(xd).all():
            raise FloatingPointError("fit_normalization: the data contains NaN or inf values")
        mean = xd.mean(dim=0)
        mean_sq = ((xd - mean) ** 2).sum(dim=1).mean()
        if mean_sq.item() <= 0.0:
            raise ValueError(
                "fit_normalization: the sample has zero variance (all rows equal); use more rows or normalize='none'"
            )
        self.norm_mean.copy_(mean.to(self.norm_mean.dtype))
        self.norm_scale.fill_(math.sqrt(self.cfg.d_in / mean_sq.item()))

    @torch.no_grad()
    def init_b_dec(self, x: torch.Tensor, n_iter: int = 100) -> None:
        """Set ``b_dec`` from a data sample according to ``cfg.b_dec_init``.

        The statistic (mean, geometric median via Weiszfeld, or zeros) is
        computed on the normalised sample, so call :meth:`fit_normalization`
        first.
        """
        self._check_input(x)
        if self.cfg.b_dec_init == "zeros":
            self.b_dec.zero_()
            return
        xn = self.normalize_input(x.detach().to(self.dtype)).reshape(-1, self.cfg.d_in)
        if xn.shape[0] == 0:
            raise ValueError("init_b_dec needs at least one row")
        if not torch.isfinite(xn).all():
            raise FloatingPointError("init_b_dec: the data contains NaN or inf values")
        if self.cfg.b_dec_init == "mean":
            value = xn.to(torch.float64).mean(dim=0)
        else:
            value = geometric_median(xn.to(torch.float64), n_iter=n_iter)
        self.b_dec.copy_(value.to(self.b_dec.dtype))

    # ----------------------------------------------------------- forward pass
    def normalize_input(self, x: torch.Tensor) -> torch.Tensor:
        """Raw input -> normalised space."""
        return (x - self.norm_mean) * self.norm_scale

    def denormalize(self, x_n: torch.Tensor) -> torch.Tensor:
        """Normalised space -> raw input space."""
        return x_n / self.norm_scale + self.norm_mean

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder pre-activations ``(x_n - b_dec) @ W_enc + b_enc`` for raw ``x``."""
        self._check_input(x)
        return self._pre_from_normalized(self.normalize_input(x))

    def _pre_from_normalized(self, x_n: torch.Tensor) -> torch.Tensor:
        return (x_n - self.b_dec) @ self.W_enc + self.b_enc

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        """Apply the configured sparse activation to pre-activations."""
        act = self.cfg.activation
        if act == "relu":
            return torch.relu(pre)
        if act == "topk":
            return self._topk(pre, self.cfg.k)
        # batchtopk
        if self.training:
            flat = pre.reshape(-1)
            n_rows = flat.numel() // self.cfg.d_sae
            mask = topk_mask(flat, self.cfg.k * n_rows).reshape(pre.shape)
            return torch.where(mask, torch.relu(pre), torch.zeros_like(pre))
        threshold = float(self.batchtopk_threshold.item())
        if threshold < 0.0:
            return self._topk(pre, self.cfg.k)
        return torch.where(pre > threshold, pre, torch.zeros_like(pre))

    @staticmethod
    def _topk(pre: torch.Tensor, k: int) -> torch.Tensor:
        mask = topk_mask(pre, k)
        return torch.where(mask, torch.relu(pre), torch.zeros_like(pre))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Raw input ``[..., d_in]`` -> latents ``f`` ``[..., d_sae]``."""
        return self.activate(self.pre_activations(x))

    def decode_normalized(self, f: torch.Tensor) -> torch.Tensor:
        """Latents -> reconstruction in the normalised space."""
        return f @ self.W_dec + self.b_dec

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """Latents ``[..., d_sae]`` -> reconstruction in the RAW input space."""
        if f.dim() == 0 or f.shape[-1] != self.cfg.d_sae:
            raise ValueError(f"expected latents of shape [..., {self.cfg.d_sae}], got {tuple(f.shape)}")
        return self.denormalize(self.decode_normalized(f))

    def forward(self, x: torch.Tensor):
        """Return ``(x_hat, f)``, ``x_hat`` in the raw input space."""
        f = self.encode(x)
        return self.decode(f), f

    def reconstruct_with_error(
        self,
        x: torch.Tensor,
        f_edited: Optional[torch.Tensor] = None,
        f: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Reconstruction that keeps the SAE error term.

        Returns ``decode(f_edited) + (x - decode(encode(x)))``, computed as
        ``x + (decode(f_edited) - decode(f))`` with the latent difference
        decoded linearly, so that only the edit changes the output.

        * With ``f_edited=None`` this short-circuits and returns ``x`` itself
          (the very same tensor object, not a copy): bit-exact, no SAE pass.
        * With ``f_edited`` equal to ``encode(x)`` the result also equals ``x``
          bit-exactly (the decoded difference is exactly zero).
        * ``f`` may pass precomputed latents ``encode(x)`` to skip the encoder.
        """
        if f_edited is None:
            return x
        if f is None:
            f = self.encode(x)
        delta = ((f_edited - f) @ self.W_dec) / self.norm_scale
        return x + delta

    # ------------------------------------------------------------------ loss
    def dead_mask(self) -> torch.Tensor:
        """Boolean [d_sae]: latents that have not fired for ``dead_tokens_threshold`` rows."""
        return self.rows_since_fired >= self.cfg.dead_tokens_threshold

    def loss(self, x: torch.Tensor, update_stats: Optional[bool] = None) -> Dict[str, torch.Tensor]:
        """Training losses for a raw batch ``x`` ``[..., d_in]``.

        Returns a dict of scalar tensors:

        * ``total`` = ``mse + aux_coeff * aux (+ l1_coeff * l1 for relu)``, where with
          ``cfg.matryoshka`` the ``mse`` term is the mean of the MSEs of the nested prefixes'
          reconstructions and of the full one;
        * ``mse``: mean squared error per element in the normalised space (full dictionary);
        * ``aux``: AuxK loss -- the residual ``x_n - x_hat_n`` (detached) is
          reconstructed from the top ``aux_k`` pre-activations of the DEAD
          latents only (through ``W_dec``, no bias) and the per-element MSE of
          that is returned.  Exactly zero when no latent is dead;
        * ``l1``: ``sum_i f_i * ||W_dec[i]||`` averaged over rows (in the total
          only for ``relu``);
        * ``l0``, ``fvu`` (batch, normalised space): detached diagnostics.

        When ``update_stats`` is true (default: ``self.training``), the dead
        latent counters and the BatchTopK threshold are updated from this
        batch after the AuxK loss was computed.
        """
        self._check_input(x)
        if update_stats is None:
            update_stats = self.training
        x_n = self.normalize_input(x).reshape(-1, self.cfg.d_in)
        pre = self._pre_from_normalized(x_n)
        f = self.activate(pre)
        err = x_n - self.decode_normalized(f)
        mse = err.pow(2).mean()
        reconstruction = mse
        if self.cfg.matryoshka:
            reconstruction = torch.stack(self._prefix_mses(x_n, f) + [mse]).mean()

        l1 = (f * torch.linalg.vector_norm(self.W_dec, dim=1)).sum(dim=-1).mean()
        total = reconstruction
        if self.cfg.activation == "relu" and self.cfg.l1_coeff > 0:
            total = total + self.cfg.l1_coeff * l1

        dead = self.dead_mask()
        n_dead = int(dead.sum().item())
        if n_dead == 0:
            aux = torch.zeros((), dtype=mse.dtype, device=mse.device)
        else:
            k_aux = min(int(self.cfg.aux_k), n_dead)
            dead_pre = pre.masked_fill(~dead, float("-inf"))
            mask = topk_mask(dead_pre, k_aux)
            f_aux = torch.where(mask, torch.relu(pre), torch.zeros_like(pre))
            aux = (f_aux @ self.W_dec - err.detach()).pow(2).mean()
            if self.cfg.aux_coeff > 0:
                total = total + self.cfg.aux_coeff * aux

        with torch.no_grad():
            l0 = (f != 0).sum(dim=-1).to(mse.dtype).mean()
            centered = x_n - x_n.mean(dim=0, keepdim=True)
            denom = centered.pow(2).sum()
            fvu = torch.where(denom > 0, err.pow(2).sum() / denom, torch.full_like(denom, float("nan")))
            if update_stats:
                self._update_stats(f)

        return {"total": total, "mse": mse, "aux": aux, "l1": l1, "l0": l0, "fvu": fvu.detach()}

    def _prefix_mses(self, x_n: torch.Tensor, f: torch.Tensor):
        """Per-element MSE of the reconstruction from the first ``m`` latents, for each ``m`` in
        ``cfg.matryoshka`` (the decoder bias included), computed group by group."""
        out, x_hat, start = [], self.b_dec.expand_as(x_n), 0
        for m in self.cfg.matryoshka:
            x_hat = x_hat + f[:, start:m] @ self.W_dec[start:m]
            out.append((x_n - x_hat).pow(2).mean())
            start = m
        return out

    @torch.no_grad()
    def _update_stats(self, f: torch.Tensor) -> None:
        f = f.detach().reshape(-1, self.cfg.d_sae)
        n_rows = f.shape[0]
        fired = (f > 0).any(dim=0)
        self.rows_since_fired.add_(n_rows)
        self.rows_since_fired.masked_fill_(fired, 0)
        self.n_rows_seen.add_(n_rows)
        if self.cfg.activation == "batchtopk":
            positive = f[f > 0]
            if positive.numel() > 0:
                batch_min = positive.min().to(self.batchtopk_threshold.dtype)
                if self.batchtopk_threshold.item() < 0:
                    self.batchtopk_threshold.copy_(batch_min)
                else:
                    m = BATCHTOPK_THRESHOLD_MOMENTUM
                    self.batchtopk_threshold.mul_(m).add_((1.0 - m) * batch_min)

    # -------------------------------------------------------- decoder upkeep
    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Rescale every row of ``W_dec`` to unit norm (call after each step)."""
        norms = torch.linalg.vector_norm(self.W_dec, dim=1, keepdim=True).clamp_min(1e-12)
        self.W_dec.div_(norms)

    @torch.no_grad()
    def remove_parallel_decoder_grad(self) -> None:
        """Project out of ``W_dec.grad`` the component parallel to each row.

        Call between ``backward()`` and the optimiser step so the update does
        not (to first order) change the row norms.
        """
        grad = self.W_dec.grad
        if grad is None:
            return
        w = self.W_dec
        sq = (w * w).sum(dim=1, keepdim=True).clamp_min(1e-12)
        grad.sub_(((grad * w).sum(dim=1, keepdim=True) / sq) * w)

    @torch.no_grad()
    def decoder_directions(self, raw: bool = True) -> torch.Tensor:
        """Latent directions ``[d_sae, d_in]`` (detached copy).

        With ``raw=True`` row ``i`` is the change of the raw-space output per
        unit of activation of latent ``i``, i.e. ``W_dec[i] / norm_scale``, so
        ``decode(f) - decode(0) == f @ decoder_directions(raw=True)``.  With
        ``raw=False`` the unit-norm rows of ``W_dec`` (normalised space).
        """
        if raw:
            return (self.W_dec / self.norm_scale).detach().clone()
        return self.W_dec.detach().clone()

    # ------------------------------------------------------------------- io
    def save(self, directory: Union[str, Path]) -> Path:
        """Write ``sae.safetensors`` and ``cfg.json`` into ``directory``."""
        from .io import save_sae

        return save_sae(self, directory)

    @classmethod
    def load(cls, directory: Union[str, Path], device: Union[str, torch.device] = "cpu") -> "SparseAutoencoder":
        """Load an SAE written by :meth:`save` (eval mode, bit-exact)."""
        from .io import load_sae

        return load_sae(directory, device=device)
