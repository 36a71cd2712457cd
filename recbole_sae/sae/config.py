"""Configuration of a sparse autoencoder.

The SAE configuration describes only the autoencoder itself (input width,
dictionary size, activation, losses, normalisation, initialisation).  It knows
nothing about recommenders, datasets or where the activations come from.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, List, Mapping, Optional

ACTIVATIONS = ("topk", "batchtopk", "relu")
NORMALIZATIONS = ("none", "global")
B_DEC_INITS = ("mean", "geometric_median", "zeros")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def reject_unknown_fields(cls, data: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` naming the keys of ``data`` that are not fields of dataclass ``cls``."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; valid fields are {sorted(known)}")


@dataclass
class SAEConfig:
    """Hyper-parameters of a :class:`~recbole_sae.sae.model.SparseAutoencoder`.

    Attributes:
        d_in: width of the input activations.
        d_sae: number of latents (dictionary size).
        activation: ``"topk"`` (default), ``"batchtopk"`` or ``"relu"``.
        k: active latents per row for ``topk``; average active latents per row
            for ``batchtopk`` (``k * batch_rows`` are kept across a batch).
            Ignored by ``relu``.
        l1_coeff: weight of the L1 sparsity penalty, used only by ``relu``.
            The penalty is ``sum_i f_i * ||W_dec[i]||`` averaged over rows.
        aux_k: number of dead latents used by the AuxK loss.  ``None`` means
            ``min(2 * k, d_sae)``.
        aux_coeff: weight of the AuxK loss in the total loss (0 disables it).
        dead_tokens_threshold: a latent counts as dead once it has not fired
            on this many consecutive training rows.
        normalize: ``"none"`` or ``"global"``.  ``"global"`` subtracts one
            mean vector ``mu`` and multiplies by one scalar ``s`` chosen so that
            ``E ||(x - mu) * s||^2 = d_in`` on the fitting sample (each
            coordinate then has unit variance on average).  The statistics are
            stored as buffers with the weights.
        b_dec_init: how :meth:`SparseAutoencoder.init_b_dec` sets the decoder
            bias from data: ``"mean"``, ``"geometric_median"`` or ``"zeros"``
            (computed in the normalised space).
        tied_init: initialise the encoder as the transpose of the decoder.
        seed: seed of the weight initialisation.
        matryoshka: ``None`` (a flat dictionary) or the sizes of nested
            prefixes of the dictionary, strictly increasing and below
            ``d_sae`` (e.g. ``[32, 128]``).  The reconstruction loss is then
            the mean of the MSEs of the reconstructions from the first ``m``
            latents, for every ``m`` in ``matryoshka`` and ``d_sae``: the
            first latents must explain the input alone, which pulls broad,
            frequent features into them instead of splitting them across
            many narrow latents.  Encoding and decoding are unchanged.
    """

    d_in: int
    d_sae: int
    activation: str = "topk"
    k: int = 32
    l1_coeff: float = 1e-3
    aux_k: Optional[int] = None
    aux_coeff: float = 1.0 / 32.0
    dead_tokens_threshold: int = 100_000
    normalize: str = "global"
    b_dec_init: str = "geometric_median"
    tied_init: bool = True
    seed: int = 0
    matryoshka: Optional[List[int]] = None

    def __post_init__(self) -> None:
        self.validate()
        if self.aux_k is None:
            self.aux_k = min(2 * self.k, self.d_sae)

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Raise ``ValueError`` describing the first invalid field, if any."""
        if not _is_int(self.d_in) or self.d_in < 1:
            raise ValueError(f"SAEConfig.d_in must be a positive integer, got {self.d_in!r}")
        if not _is_int(self.d_sae) or self.d_sae < 1:
            raise ValueError(f"SAEConfig.d_sae must be a positive integer, got {self.d_sae!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"SAEConfig.activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if not _is_int(self.k) or self.k < 1:
            raise ValueError(f"SAEConfig.k must be a positive integer, got {self.k!r}")
        if self.activation in ("topk", "batchtopk") and self.k > self.d_sae:
            raise ValueError(
                f"SAEConfig.k={self.k} is larger than d_sae={self.d_sae}: "
                f"{self.activation} cannot keep more latents than exist"
            )
        if self.aux_k is not None:
            if not _is_int(self.aux_k) or self.aux_k < 1:
                raise ValueError(f"SAEConfig.aux_k must be a positive integer or None, got {self.aux_k!r}")
            if self.aux_k > self.d_sae:
                raise ValueError(f"SAEConfig.aux_k={self.aux_k} is larger than d_sae={self.d_sae}")
        for name in ("l1_coeff", "aux_coeff"):
            value = getattr(self, name)
            if not _is_real(value) or not math.isfinite(value) or value < 0:
                raise ValueError(f"SAEConfig.{name} must be a finite number >= 0, got {value!r}")
        if not _is_int(self.dead_tokens_threshold) or self.dead_tokens_threshold < 1:
            raise ValueError(
                f"SAEConfig.dead_tokens_threshold must be a positive integer, got {self.dead_tokens_threshold!r}"
            )
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"SAEConfig.normalize must be one of {NORMALIZATIONS}, got {self.normalize!r}")
        if self.b_dec_init not in B_DEC_INITS:
            raise ValueError(f"SAEConfig.b_dec_init must be one of {B_DEC_INITS}, got {self.b_dec_init!r}")
        if not isinstance(self.tied_init, bool):
            raise ValueError(f"SAEConfig.tied_init must be a bool, got {self.tied_init!r}")
        if not _is_int(self.seed):
            raise ValueError(f"SAEConfig.seed must be an integer, got {self.seed!r}")
        if self.matryoshka is not None:
            sizes = self.matryoshka
            if (
                not isinstance(sizes, (list, tuple))
                or not sizes
                or not all(_is_int(m) for m in sizes)
                or any(b <= a for a, b in zip(sizes, sizes[1:]))
                or sizes[0] < 1
                or sizes[-1] >= self.d_sae
            ):
                raise ValueError(
                    "SAEConfig.matryoshka must be None or a non-empty, strictly increasing list of "
                    f"prefix sizes between 1 and d_sae - 1 = {self.d_sae - 1}, got {sizes!r}"
                )
            self.matryoshka = [int(m) for m in sizes]

    # ----------------------------------------------------------- serialisation
    def to_dict(self) -> dict:
        """Plain JSON-serialisable dict of all fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SAEConfig":
        """Build a config from a mapping, rejecting unknown or missing keys."""
        if not isinstance(data, Mapping):
            raise ValueError(f"SAEConfig.from_dict expects a mapping, got {type(data).__name__}")
        reject_unknown_fields(cls, data)
        missing = [name for name in ("d_in", "d_sae") if name not in data]
        if missing:
            raise ValueError(f"SAEConfig is missing required field(s) {missing}")
        return cls(**dict(data))
