"""Training loop for :class:`~recbole_sae.sae.model.SparseAutoencoder`."""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple, Union

import torch
from tqdm import tqdm

from .config import reject_unknown_fields
from .model import SparseAutoencoder

BatchSource = Union[torch.Tensor, Iterable, Callable[[], Any]]


@dataclass
class SAETrainConfig:
    """Optimisation settings for :func:`train_sae`.

    Attributes:
        lr: peak Adam learning rate.
        batch_size: rows per step when ``data`` is a tensor.
        n_steps: number of optimiser steps; ``None`` means ``epochs`` passes
            over the data (needs a tensor or a sized iterable).
        epochs: passes over the data when ``n_steps`` is ``None``.
        warmup_steps: linear warm-up from ``lr / warmup_steps`` to ``lr``.
        decay_frac: the lr decays linearly towards 0 over this last fraction
            of the steps.
        weight_decay: Adam weight decay (0 recommended for SAEs).
        betas, adam_eps: Adam parameters.
        max_grad_norm: clip the global gradient norm (``None``: no clipping).
        init_from_data: before training, fit the normalisation and initialise
            ``b_dec`` on a data sample (set ``False`` to continue training).
        init_sample_size: rows used for that initialisation (tensor data;
            iterable data uses its first batch).
        seed: seed of the data shuffling.
        log_every: record history every this many steps (and at the last).
        device: device to train on (``None``: the SAE's current device).
        show_progress: show a tqdm progress bar.
    """

    lr: float = 3e-4
    batch_size: int = 1024
    n_steps: Optional[int] = None
    epochs: int = 1
    warmup_steps: int = 100
    decay_frac: float = 0.2
    weight_decay: float = 0.0
    betas: Tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    max_grad_norm: Optional[float] = None
    init_from_data: bool = True
    init_sample_size: int = 16384
    seed: int = 0
    log_every: int = 100
    device: Optional[str] = None
    show_progress: bool = True

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        self.validate()

    def validate(self) -> None:
        def positive_int(name: str, allow_none: bool = False) -> None:
            v = getattr(self, name)
            if allow_none and v is None:
                return
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"SAETrainConfig.{name} must be a positive integer, got {v!r}")

        if not isinstance(self.lr, (int, float)) or not math.isfinite(self.lr) or self.lr <= 0:
            raise ValueError(f"SAETrainConfig.lr must be a finite number > 0, got {self.lr!r}")
        positive_int("batch_size")
        positive_int("n_steps", allow_none=True)
        positive_int("epochs")
        positive_int("log_every")
        positive_int("init_sample_size")
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"SAETrainConfig.warmup_steps must be an integer >= 0, got {self.warmup_steps!r}")
        if not (0.0 <= float(self.decay_frac) <= 1.0):
            raise ValueError(f"SAETrainConfig.decay_frac must be in [0, 1], got {self.decay_frac!r}")
        if self.weight_decay < 0:
            raise ValueError(f"SAETrainConfig.weight_decay must be >= 0, got {self.weight_decay!r}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"SAETrainConfig.betas must be two numbers in [0, 1), got {self.betas!r}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"SAETrainConfig.max_grad_norm must be > 0 or None, got {self.max_grad_norm!r}")
        if not isinstance(self.seed, int):
            raise ValueError(f"SAETrainConfig.seed must be an integer, got {self.seed!r}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SAETrainConfig":
        reject_unknown_fields(cls, data)
        return cls(**dict(data))


def lr_at_step(step: int, total_steps: int, cfg: SAETrainConfig) -> float:
    """Learning rate used at 0-based ``step`` of ``total_steps``.

    Linear warm-up over ``warmup_steps`` then constant, then linear decay over
    the last ``decay_frac * total_steps`` steps (reaching ``lr / n_decay`` at
    the final step, i.e. 0 just after it).
    """
    factor = 1.0
    if cfg.warmup_steps > 0:
        factor = min(1.0, (step + 1) / cfg.warmup_steps)
    n_decay = int(round(cfg.decay_frac * total_steps))
    if n_decay > 0:
        decay_start = total_steps - n_decay
        if step >= decay_start:
            factor *= (total_steps - step) / n_decay
    return cfg.lr * factor


def _as_batch(batch: Any) -> torch.Tensor:
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        batch = batch[0]
    if not isinstance(batch, torch.Tensor):
        raise TypeError(f"data must yield tensors (or tuples whose first item is a tensor), got {type(batch).__name__}")
    return batch


def _tensor_batches(data: torch.Tensor, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    n = data.shape[0]
    while True:
        perm = torch.randperm(n, generator=gen).to(data.device)
        for start in range(0, n, batch_size):
            yield data[perm[start : start + batch_size]]


def _iterable_batches(data: Iterable) -> Iterator[torch.Tensor]:
    while True:
        yielded = False
        for batch in data:
            yielded = True
            yield _as_batch(batch)
        if not yielded:
            return


def _callable_batches(data: Callable[[], Any]) -> Iterator[torch.Tensor]:
    while True:
        yield _as_batch(data())


def _prepare(data: BatchSource, sae: SparseAutoencoder, cfg: SAETrainConfig):
    """Return (batch iterator, total steps, init sample or None)."""
    d_in = sae.cfg.d_in
    if isinstance(data, torch.Tensor):
        if data.dim() < 2 or data.shape[-1] != d_in:
            raise ValueError(f"data must have shape [N, {d_in}], got {tuple(data.shape)}")
        data = data.reshape(-1, d_in)
        n = data.shape[0]
        if n == 0:
            raise ValueError("data is empty")
        total = cfg.n_steps if cfg.n_steps is not None else cfg.epochs * math.ceil(n / cfg.batch_size)
        sample = None
        if cfg.init_from_data:
            gen = torch.Generator().manual_seed(cfg.seed + 1)
            idx = torch.randperm(n, generator=gen)[: cfg.init_sample_size].to(data.device)
            sample = data[idx]
        return _tensor_batches(data, cfg.batch_size, cfg.seed), total, sample

    if isinstance(data, Iterable):
        if cfg.n_steps is not None:
            total = cfg.n_steps
        elif hasattr(data, "__len__"):
            total = cfg.epochs * len(data)
        else:
            raise ValueError(
                "cannot tell how many steps an unsized iterable gives (the lr schedule needs it): "
                "set SAETrainConfig.n_steps"
            )
        it = _iterable_batches(data)
    elif callable(data):
        if cfg.n_steps is None:
            raise ValueError("a callable batch source needs SAETrainConfig.n_steps")
        total = cfg.n_steps
        it = _callable_batches(data)
    else:
        raise TypeError(
            f"data must be a tensor [N, d_in], an iterable of batches or a callable returning a batch, "
            f"got {type(data).__name__}"
        )
    sample = None
    if cfg.init_from_data:
        try:
            first = next(it)
        except StopIteration:
            raise ValueError("data yielded no batch") from None
        sample = first
        it = itertools.chain([first], it)
    return it, total, sample


def _raise_non_finite(value: float, step: int, x: torch.Tensor, cfg: SAETrainConfig) -> None:
    bad_input = not bool(torch.isfinite(x).all())
    hint = (
        "the input batch itself contains NaN/inf values: clean the activations"
        if bad_input
        else f"lower the learning rate (lr={cfg.lr}), add warm-up or gradient clipping, "
        "and check the inputs (scale, NaN/inf)"
    )
    raise FloatingPointError(f"SAE training loss is {value} at step {step + 1}: {hint}")


def _init_from_sample(sae: SparseAutoencoder, sample: torch.Tensor) -> None:
    """Fit the normalisation and initialise ``b_dec`` on a data sample."""
    sample = sample.to(device=sae.device, dtype=sae.dtype).reshape(-1, sae.cfg.d_in)
    if not bool(torch.isfinite(sample).all()):
        raise FloatingPointError("the training data contains NaN/inf values: clean the activations before training")
    sae.fit_normalization(sample)
    sae.init_b_dec(sample)


def _train_step(
    sae: SparseAutoencoder,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    step: int,
    total: int,
    cfg: SAETrainConfig,
) -> Tuple[Dict[str, torch.Tensor], float, float]:
    """One optimiser step on batch ``x``; returns (the loss terms, the loss, the learning rate)."""
    lr = lr_at_step(step, total, cfg)
    for group in optimizer.param_groups:
        group["lr"] = lr

    out = sae.loss(x)
    loss = out["total"]
    loss_value = float(loss.detach().item())
    if not math.isfinite(loss_value):
        _raise_non_finite(loss_value, step, x, cfg)

    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    sae.remove_parallel_decoder_grad()
    if cfg.max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(sae.parameters(), cfg.max_grad_norm)
    optimizer.step()
    sae.normalize_decoder()
    return out, loss_value, lr


def _history_record(
    sae: SparseAutoencoder, step_no: int, out: Dict[str, torch.Tensor], loss_value: float, lr: float
) -> Dict[str, float]:
    return {
        "step": step_no,
        "loss": loss_value,
        "mse": float(out["mse"].item()),
        "aux": float(out["aux"].item()),
        "l1": float(out["l1"].item()),
        "fvu": float(out["fvu"].item()),
        "l0": float(out["l0"].item()),
        "dead_frac": float(sae.dead_mask().float().mean().item()),
        "lr": lr,
    }


def train_sae(
    sae: SparseAutoencoder,
    data: BatchSource,
    train_cfg: Optional[SAETrainConfig] = None,
    log_fn: Optional[Callable[[Dict[str, float]], None]] = None,
    progress_fn: Optional[Callable[[int, int], None]] = None,
) -> List[Dict[str, float]]:
    """Train ``sae`` in place with Adam and return the logged history.

    ``data`` is either a float tensor ``[N, d_in]`` (reshuffled every epoch by
    a generator seeded with ``train_cfg.seed``), an iterable of batches
    (tensors, or tuples whose first item is the tensor; re-iterated for
    further epochs), or a callable returning one batch per call.

    Each step: loss (MSE + AuxK [+ L1]), backward, removal of the decoder
    gradient parallel to the decoder rows, Adam step, decoder row
    renormalisation; dead-latent counters are updated by ``sae.loss``.
    Every ``log_every`` steps (and at the last step) a record
    ``{step, loss, mse, aux, l1, fvu, l0, dead_frac, lr}`` (batch values) is
    appended to the history and passed to ``log_fn``.

    ``progress_fn(steps done, total steps)`` is called after every step (e.g. a
    progress line with an ETA).

    Raises ``FloatingPointError`` when the loss becomes NaN/inf.  The SAE is
    left in eval mode.  On CPU the result is a deterministic function of the
    SAE's initial state, the data and ``train_cfg``.
    """
    cfg = train_cfg if train_cfg is not None else SAETrainConfig()
    cfg.validate()
    if cfg.device is not None:
        sae.to(cfg.device)
    batches, total, sample = _prepare(data, sae, cfg)
    if sample is not None:
        _init_from_sample(sae, sample)

    optimizer = torch.optim.Adam(
        sae.parameters(), lr=cfg.lr, betas=cfg.betas, eps=cfg.adam_eps, weight_decay=cfg.weight_decay
    )
    history: List[Dict[str, float]] = []
    sae.normalize_decoder()
    last = None

    def _log(*logged) -> None:
        record = _history_record(sae, *logged)
        history.append(record)
        bar.set_postfix(loss=f"{record['loss']:.4g}", fvu=f"{record['fvu']:.3f}", l0=f"{record['l0']:.1f}")
        if log_fn is not None:
            log_fn(record)

    sae.train()
    bar = tqdm(total=total, disable=not cfg.show_progress, desc="SAE", dynamic_ncols=True)
    try:
        for step in range(total):
            try:
                x = next(batches)
            except StopIteration:
                break
            x = x.to(device=sae.device, dtype=sae.dtype).reshape(-1, sae.cfg.d_in)
            out, loss_value, lr = _train_step(sae, optimizer, x, step, total, cfg)
            bar.update(1)
            if progress_fn is not None:
                progress_fn(step + 1, total)

            last = (step + 1, out, loss_value, lr)
            if (step + 1) % cfg.log_every == 0 or step + 1 == total:
                _log(*last)
        if last is not None and (not history or history[-1]["step"] != last[0]):
            _log(*last)  # the data ran out before `total` steps
    finally:
        bar.close()
        sae.eval()
    return history
