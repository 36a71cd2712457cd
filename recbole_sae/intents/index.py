"""The intent index: FAISS inner-product search over intent directions, personal and public intents.

:class:`IntentIndex` keeps the (float32, contiguous) intent directions in a FAISS
``IndexFlatIP`` (exact search), on a GPU when faiss sees one (sharded over all GPUs when it sees
several), else on the CPU.

Personal intents of a sequence are found from the sequence's own items only. Its query is the
recency-weighted mean of its items' vectors: the item at distance ``j`` from the last real item
has weight ``recency_decay ** j``; padding (item 0) and every position at or after the
sequence's length have weight 0, so no item after the last real position can change the result.
The items' vectors are the item embeddings ``[n_items, d]`` the SAE was trained on; the query minus
the index's ``center`` (the SAE's ``decode(0)``, what all items share), L2 normalised, is searched by
inner product: the score is the cosine between the query and the unit-norm direction.

:meth:`IntentIndex.personal_intents_per_position` gives, for every prefix position ``t``, the
personal intents of items ``0..t`` (causal), for training on all positions at once. The weighted
sums are one running sum over the positions (``acc_t = decay * acc_{t-1} + v_t``), so building the
``B * L`` queries costs ``O(B * L * d)``; the search costs ``O(B * L * n * d)`` multiply-adds for
``n`` intents of width ``d`` (exact search). Precomputing it for every training sequence once
stores ``B * L * k`` ids.

Public intents (:func:`public_intents`) are the ``k`` intents with the lowest IDF
``log((1 + N) / (1 + df))`` over ``N`` users, df = the number of users whose personal intents
include the intent: the most widely shared ones. They are fixed once computed and saved with the
index.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import NamedTuple, Optional, Tuple, Union

import numpy as np
import torch

from recbole_sae.fileio import write_atomic, write_text_atomic

logger = logging.getLogger(__name__)

__all__ = [
    "IntentIndex",
    "PersonalIntents",
    "causal_recency_means",
    "faiss_gpu_support",
    "intent_idf",
    "public_intents",
    "recency_weighted_mean",
]

META_SUFFIX = ".meta.json"
FORMAT_VERSION = 1
MEANS_BUDGET = 1 << 25  # floats of query means built at once by the per-position retrieval (128 MiB)
GPU_HINT = 'install faiss with GPU support: pip install -e ".[gpu]" (faiss-gpu)'


def _faiss():
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - faiss-cpu is a dependency
        raise ImportError("the intent index needs faiss: pip install faiss-cpu (or faiss-gpu for a GPU)") from exc
    return faiss


def faiss_gpu_support() -> bool:
    """Whether this faiss build has GPU support (``StandardGpuResources``)."""
    return hasattr(_faiss(), "StandardGpuResources")


def _faiss_num_gpus() -> int:
    faiss = _faiss()
    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get is not None else 0


def _want_gpu(use_gpu: Union[str, bool]) -> bool:
    """Resolve ``use_gpu`` ("auto", True or False) against what faiss and torch see."""
    if isinstance(use_gpu, str):
        key = use_gpu.strip().lower()
        if key in ("true", "gpu", "yes", "1"):
            use_gpu = True
        elif key in ("false", "cpu", "no", "0"):
            use_gpu = False
        elif key != "auto":
            raise ValueError(f"use_gpu must be 'auto', True or False, got {use_gpu!r}")
    elif not isinstance(use_gpu, bool):
        raise ValueError(f"use_gpu must be 'auto', True or False, got {use_gpu!r}")
    if use_gpu is False:
        return False
    n_gpus = _faiss_num_gpus()
    if use_gpu is True:
        if n_gpus == 0:
            why = "" if faiss_gpu_support() else " (this faiss build has no GPU support)"
            raise RuntimeError(
                f"use_gpu=True but faiss sees no GPU (faiss.get_num_gpus() == 0){why}: "
                f"{GPU_HINT}, check the CUDA driver, or set use_gpu to 'auto' or False"
            )
        return True
    if n_gpus > 0:
        return True
    if not faiss_gpu_support() and torch.cuda.is_available():
        logger.warning(
            "torch sees a CUDA GPU but this faiss build has no GPU support; the intent index runs on "
            "the CPU. To search on the GPU, %s",
            GPU_HINT,
        )
    return False


def _place_on_gpus(cpu_index, gpu_device: int):
    """``(gpu index, resources or None, GPUs used)``: sharded over all GPUs when faiss sees more
    than one (each holds a slice of the intents; the results are merged), else on ``gpu_device``."""
    faiss = _faiss()
    n_gpus = _faiss_num_gpus()
    if n_gpus > 1:
        options = faiss.GpuMultipleClonerOptions()
        options.shard = True
        index = faiss.index_cpu_to_all_gpus(cpu_index, co=options)
        logger.info("intent index of %d intents sharded over %d GPUs", cpu_index.ntotal, n_gpus)
        return index, None, n_gpus
    resources = faiss.StandardGpuResources()
    index = faiss.index_cpu_to_gpu(resources, gpu_device, cpu_index)
    logger.info("intent index of %d intents on GPU %d", cpu_index.ntotal, gpu_device)
    return index, resources, 1


def _as_float32(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float32).numpy()
    arr = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-d [rows, d] array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf values")
    return arr


class PersonalIntents(NamedTuple):
    """Retrieved intents: ``ids`` (long) and their ``scores`` (float32), best first."""

    ids: torch.Tensor
    scores: torch.Tensor


# ---------------------------------------------------------------------- queries
def _valid_mask(item_seq: torch.Tensor, item_lengths: Optional[torch.Tensor]) -> torch.Tensor:
    if item_seq.dim() != 2:
        raise ValueError(f"item_seq must be [B, L], got shape {tuple(item_seq.shape)}")
    mask = item_seq != 0
    if item_lengths is not None:
        lengths = torch.as_tensor(item_lengths, device=item_seq.device).reshape(-1)
        if lengths.numel() != item_seq.shape[0]:
            raise ValueError(f"item_lengths has {lengths.numel()} entries for {item_seq.shape[0]} sequences")
        positions = torch.arange(item_seq.shape[1], device=item_seq.device)
        mask = mask & (positions[None, :] < lengths[:, None])
    return mask


def _check_decay(recency_decay: float) -> float:
    decay = float(recency_decay)
    if not 0.0 < decay <= 1.0:
        raise ValueError(f"recency_decay must be in (0, 1], got {recency_decay!r}")
    return decay


def recency_weighted_mean(
    item_seq: torch.Tensor,
    item_lengths: torch.Tensor,
    item_vectors: torch.Tensor,
    recency_decay: float = 0.8,
) -> torch.Tensor:
    """Recency-weighted mean of each sequence's item vectors, ``[B, w]`` float32.

    Position ``s < length`` (non-padding) has weight ``decay ** (length - 1 - s)``; every other
    position has weight 0. A sequence with no real item gets a zero vector.
    """
    decay = _check_decay(recency_decay)
    item_seq = torch.as_tensor(item_seq)
    lengths = torch.as_tensor(item_lengths, device=item_seq.device).reshape(-1).to(torch.long)
    mask = _valid_mask(item_seq, lengths)
    positions = torch.arange(item_seq.shape[1], device=item_seq.device)
    distance = (lengths[:, None] - 1 - positions[None, :]).clamp_min(0).to(torch.float64)
    weights = torch.where(mask, decay**distance, torch.zeros_like(distance)).to(torch.float32)
    vectors = item_vectors.to(device=item_seq.device, dtype=torch.float32)[item_seq]  # [B, L, w]
    total = (weights[..., None] * vectors).sum(1)
    norm = weights.sum(1, keepdim=True)
    return torch.where(norm > 0, total / norm.clamp_min(1e-30), torch.zeros_like(total))


def _causal_means_time_major(
    item_seq: torch.Tensor, item_vectors: torch.Tensor, decay: float, item_lengths: Optional[torch.Tensor]
) -> torch.Tensor:
    """:func:`causal_recency_means` laid out ``[L, B, w]`` (each position's slice contiguous)."""
    mask = _valid_mask(item_seq, item_lengths)
    vectors = item_vectors.to(device=item_seq.device, dtype=torch.float32)
    sums = vectors[item_seq.t()]  # [L, B, w], a fresh tensor
    weights = mask.t().to(torch.float32).contiguous()  # [L, B]
    sums.mul_(weights[..., None])
    for t in range(1, sums.shape[0]):  # running sums: acc_t = decay * acc_{t-1} + v_t
        sums[t].add_(sums[t - 1], alpha=decay)
        weights[t].add_(weights[t - 1], alpha=decay)
    # a position with no real item so far has a zero sum: 0 / tiny = 0
    return sums.div_(weights.clamp_min(1e-30)[..., None])


def causal_recency_means(
    item_seq: torch.Tensor,
    item_vectors: torch.Tensor,
    recency_decay: float = 0.8,
    item_lengths: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """For every position ``t``, the recency-weighted mean of items ``0..t``, ``[B, L, w]`` float32.

    One running sum over the positions: ``acc_t = decay * acc_{t-1} + v_t`` (and likewise for the
    weights), so position ``t`` reads nothing after ``t``. Padding positions add nothing; a
    position after the sequence's end repeats the last real position's mean.
    """
    decay = _check_decay(recency_decay)
    item_seq = torch.as_tensor(item_seq)
    return _causal_means_time_major(item_seq, item_vectors, decay, item_lengths).permute(1, 0, 2).contiguous()


# ---------------------------------------------------------------------- public intents
def intent_idf(personal_ids: torch.Tensor, n_intents: int) -> torch.Tensor:
    """IDF ``log((1 + N) / (1 + df))`` of every intent, ``[n_intents]`` float64.

    ``personal_ids`` is ``[N, k]`` (one row per user; ids ``< 0`` are ignored); df counts the users
    whose row holds the intent (a user counts once per intent).
    """
    ids = torch.as_tensor(personal_ids).to("cpu", torch.long)
    if ids.dim() != 2:
        raise ValueError(f"personal_ids must be [N users, k], got shape {tuple(ids.shape)}")
    n_users = ids.shape[0]
    if n_intents < 1:
        raise ValueError(f"n_intents must be >= 1, got {n_intents}")
    if ids.numel() and int(ids.max()) >= n_intents:
        raise ValueError(f"personal_ids holds intent {int(ids.max())}, but there are only {n_intents} intents")
    rows = torch.arange(n_users)[:, None].expand_as(ids)
    valid = ids >= 0
    pairs = torch.unique(rows[valid] * n_intents + ids[valid])
    df = torch.bincount(pairs % n_intents, minlength=n_intents).to(torch.float64)
    return torch.log((1.0 + n_users) / (1.0 + df))


def public_intents(personal_ids: torch.Tensor, n_intents: int, k: int = 5) -> torch.Tensor:
    """The ``k`` intents with the lowest IDF over the users' personal intents (ties: lower id)."""
    if not 1 <= int(k) <= n_intents:
        raise ValueError(f"k must be in 1..{n_intents}, got {k}")
    idf = intent_idf(personal_ids, n_intents)
    order = torch.sort(idf, stable=True).indices
    return order[: int(k)].clone()


# ---------------------------------------------------------------------- the index
class IntentIndex:
    """Exact inner-product search over intent directions with FAISS.

    Args:
        directions: ``[n, d]`` intent directions (converted to contiguous float32).
        use_gpu: ``"auto"`` (GPU when faiss sees one; warns when torch sees a GPU that this faiss
            build cannot use), ``True`` (a GPU or a ``RuntimeError``) or ``False``.
        center: optional ``[d]`` vector subtracted from the queries of the personal
            intents (the SAE's ``decode(0)``).
        public_ids: public intents, when already computed.
        gpu_device: the GPU to use when faiss sees one; with more than one, the index is sharded
            over all of them (``gpu_count`` says how many hold it).
    """

    def __init__(
        self,
        directions,
        use_gpu: Union[str, bool] = "auto",
        center=None,
        public_ids=None,
        gpu_device: int = 0,
    ):
        faiss = _faiss()
        dirs = _as_float32(directions, "directions")
        if dirs.shape[0] < 1:
            raise ValueError("directions must hold at least one intent")
        self.dim = int(dirs.shape[1])
        self.cpu_index = faiss.IndexFlatIP(self.dim)
        self.cpu_index.add(dirs)
        self.center = None
        if center is not None:
            c = torch.as_tensor(center).detach().to("cpu", torch.float32).reshape(-1)
            if c.numel() != self.dim:
                raise ValueError(f"center has {c.numel()} values for directions of width {self.dim}")
            self.center = c
        self.public_ids = None if public_ids is None else torch.as_tensor(public_ids).to(torch.long).reshape(-1)
        self._gpu_resources = None
        self.index = self.cpu_index
        self.gpu_count = 0
        self.on_gpu = _want_gpu(use_gpu)
        if self.on_gpu:
            self.index, self._gpu_resources, self.gpu_count = _place_on_gpus(self.cpu_index, int(gpu_device))

    @property
    def ntotal(self) -> int:
        """Number of intents."""
        return int(self.cpu_index.ntotal)

    def __len__(self) -> int:
        return self.ntotal

    def __repr__(self) -> str:
        return f"IntentIndex(n={self.ntotal}, d={self.dim}, gpu={self.on_gpu})"

    @property
    def directions(self) -> torch.Tensor:
        """The stored directions, ``[n, d]`` float32."""
        return torch.from_numpy(self.cpu_index.reconstruct_n(0, self.ntotal))

    # ------------------------------------------------------------------ search
    def search(self, queries, k: int, batch_size: int = 16384) -> Tuple[torch.Tensor, torch.Tensor]:
        """Exact top-``k`` by inner product: ``(scores [m, k] float32, ids [m, k] long)`` on the CPU."""
        if not 1 <= int(k) <= self.ntotal:
            raise ValueError(f"k must be in 1..{self.ntotal} (the number of intents), got {k}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        q = _as_float32(queries, "queries")
        if q.shape[1] != self.dim:
            raise ValueError(f"queries have width {q.shape[1]}, the index holds width {self.dim}")
        m = q.shape[0]
        scores = np.empty((m, int(k)), dtype=np.float32)
        ids = np.empty((m, int(k)), dtype=np.int64)
        for start in range(0, m, int(batch_size)):
            s, i = self.index.search(q[start : start + int(batch_size)], int(k))
            scores[start : start + len(s)] = s
            ids[start : start + len(s)] = i
        return torch.from_numpy(scores), torch.from_numpy(ids)

    def _check_width(self, item_vectors: torch.Tensor) -> None:
        width = item_vectors.shape[-1]
        if width != self.dim:
            raise ValueError(f"item embeddings have width {width}, the index holds width {self.dim}")

    def _retrieve(self, means: torch.Tensor, k: int, batch_size: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Top-k intents of query means ``[m, d]``: ``(ids, scores)`` on the means' device."""
        if not 1 <= int(k) <= self.ntotal:
            raise ValueError(f"k must be in 1..{self.ntotal} (the number of intents), got {k}")
        q = means
        if self.center is not None:
            q = q - self.center.to(q.device)
        q = torch.nn.functional.normalize(q, dim=-1)
        scores, ids = self.search(q, int(k), batch_size=batch_size)
        return ids.to(means.device), scores.to(means.device)

    def personal_intents(
        self,
        item_seq: torch.Tensor,
        item_lengths: torch.Tensor,
        item_vectors: torch.Tensor,
        k: int = 5,
        recency_decay: float = 0.8,
        batch_size: int = 16384,
    ) -> PersonalIntents:
        """Personal intents of each sequence from its own items: ``ids``/``scores`` ``[B, k]``.

        ``item_vectors`` are the item embeddings; see the module docstring.
        """
        item_vectors = torch.as_tensor(item_vectors)
        self._check_width(item_vectors)
        means = recency_weighted_mean(item_seq, item_lengths, item_vectors, recency_decay)
        ids, scores = self._retrieve(means, k, batch_size)
        return PersonalIntents(ids, scores)

    def personal_intents_per_position(
        self,
        item_seq: torch.Tensor,
        item_vectors: torch.Tensor,
        k: int = 5,
        recency_decay: float = 0.8,
        item_lengths: Optional[torch.Tensor] = None,
        batch_size: int = 16384,
        seq_batch: Optional[int] = None,
    ) -> PersonalIntents:
        """For every prefix position ``t``, the personal intents of items ``0..t``: ``[B, L, k]``.

        Causal: position ``t`` never sees an item after ``t``. Sequences are processed
        ``seq_batch`` at a time to bound memory (``seq_batch * L * width`` floats; by default
        as many as fit in ``MEANS_BUDGET`` floats).
        """
        item_vectors = torch.as_tensor(item_vectors)
        self._check_width(item_vectors)
        decay = _check_decay(recency_decay)
        item_seq = torch.as_tensor(item_seq)
        b, length = item_seq.shape
        k = int(k)
        if seq_batch is None:
            seq_batch = max(1, MEANS_BUDGET // max(1, length * item_vectors.shape[1]))
        ids_out = torch.empty(b, length, k, dtype=torch.long, device=item_seq.device)
        scores_out = torch.empty(b, length, k, dtype=torch.float32, device=item_seq.device)
        for start in range(0, b, int(seq_batch)):
            stop = min(b, start + int(seq_batch))
            lengths = None if item_lengths is None else torch.as_tensor(item_lengths).reshape(-1)[start:stop]
            means = _causal_means_time_major(item_seq[start:stop], item_vectors, decay, lengths)  # [L, b, w]
            ids, scores = self._retrieve(means.reshape(-1, means.shape[-1]), k, batch_size)
            ids_out[start:stop] = ids.reshape(length, stop - start, k).transpose(0, 1)
            scores_out[start:stop] = scores.reshape(length, stop - start, k).transpose(0, 1)
        return PersonalIntents(ids_out, scores_out)

    # ------------------------------------------------------------------ public intents
    def set_public_intents(self, personal_ids: torch.Tensor, k: int = 5) -> torch.Tensor:
        """Compute the public intents from many users' personal intents, store and return them."""
        self.public_ids = public_intents(personal_ids, self.ntotal, k)
        return self.public_ids

    # ------------------------------------------------------------------ io
    def save(self, path: Union[str, Path]) -> Path:
        """Write the CPU index to ``path`` (``faiss.write_index``) and ``path + '.meta.json'``
        (center, public intents), each atomically; the meta is serialised before either is written."""
        faiss = _faiss()
        path = Path(path)
        meta = {
            "format_version": FORMAT_VERSION,
            "dim": self.dim,
            "ntotal": self.ntotal,
            "center": None if self.center is None else [float(v) for v in self.center.tolist()],
            "public_ids": None if self.public_ids is None else [int(v) for v in self.public_ids.tolist()],
        }
        meta_text = json.dumps(meta)
        write_atomic(lambda tmp: faiss.write_index(self.cpu_index, tmp), path)
        write_text_atomic(meta_text, str(path) + META_SUFFIX)
        return path

    @classmethod
    def load(cls, path: Union[str, Path], use_gpu: Union[str, bool] = "auto", gpu_device: int = 0) -> "IntentIndex":
        """Read an index written by :meth:`save` (the meta file is optional)."""
        faiss = _faiss()
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"intent index {str(path)!r} does not exist (written by IntentIndex.save)")
        cpu_index = faiss.read_index(str(path))
        directions = cpu_index.reconstruct_n(0, cpu_index.ntotal)
        meta = {}
        meta_path = Path(str(path) + META_SUFFIX)
        if meta_path.is_file():
            with open(meta_path, "r", encoding="utf-8") as fh:
                meta = json.load(fh)
        center = meta.get("center")
        return cls(
            directions,
            use_gpu=use_gpu,
            center=None if center is None else torch.tensor(center, dtype=torch.float32),
            public_ids=meta.get("public_ids"),
            gpu_device=gpu_device,
        )
