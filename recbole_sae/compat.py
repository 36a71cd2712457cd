"""The one place that adapts RecBole 1.2.1 to today's numpy, pandas and torch.

``apply()`` is idempotent and is called by Config, the pipeline and the model modules. Each fix is a small function so
that a test can show the failure without it and the repair with it:

* ``numpy_aliases``: RecBole uses ``np.float``, ``np.bool``, ``np.long`` ... and its ``Config``
  assigns ``np.float_`` / ``np.complex_`` / ``np.unicode_``; numpy 2 removed the latter and numpy
  1.24 the former. The old names are restored as aliases of today's types.
* ``pandas_fillna``: RecBole imputes missing values with ``df[col].fillna(..., inplace=True)``.
  Under copy-on-write (the default in pandas 3, opt-in in pandas 2) that chained in-place call
  changes a temporary copy and the NaN stay, silently. The imputation is replaced by one that
  assigns the filled column back.
* ``checkpoint loading``: torch >= 2.6 loads with ``weights_only=True``; RecBole's trainer pickles
  the whole Config into its checkpoints, which then load only with ``weights_only=False`` (and so
  could run code). RecBole's trainer module is given a ``torch`` whose ``save`` writes the config as
  a plain dict and whose ``load`` is always weights-only (:mod:`recbole_sae.checkpoint`);
  ``load_checkpoint`` loads weights-only too, and a foreign pickle only when trusted.
* ``data_pickles``: RecBole unpickles a saved dataset or dataloader found in ``checkpoint_dir`` (the
  run folder); those files are refused (:class:`_PickleForData`), never unpickled.
* ``anomaly mode``: importing RecBole's SINE model calls ``torch.autograd.set_detect_anomaly(True)``
  for the whole process, which slows every training step that follows. It is switched off after the
  import.
* ``BERT4Rec's mask token``: at evaluation RecBole's BERT4Rec writes the mask token after each user's
  history in a Python loop over the batch, one indexed write per user; on a GPU each of them waits for
  the device, and the loop dominates evaluation (BENCHMARKS.md has the timings). ``bert4rec_mask_token``
  makes it one indexed assignment with the same output, RecBole's quirks included.
* ``tensorboard_in_run_folder``: RecBole's trainer writes its tensorboard events under
  ``./log_tensorboard/`` of the working directory. They go to ``log_tensorboard/`` of the run
  folder instead (the folder of the run's ``run.log``); a trainer outside a run keeps RecBole's place.
* ``ray``: ``recbole.quick_start`` imports ray at import time (which needs ``pkg_resources`` and
  ``np.bool8``). This package never imports ``recbole.quick_start``; ray is only touched when
  hyperparameter tuning is asked for, and ``numpy_aliases`` restores ``np.bool8`` for that case.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

_NUMPY_ALIASES = {
    "float": float,
    "int": int,
    "bool": bool,
    "long": int,
    "complex": complex,
    "object": object,
    "str": str,
    "unicode": str,
    "float_": np.float64,
    "complex_": np.complex128,
    "unicode_": np.str_,
    "bool8": np.bool_,
    "int_": np.int64,
}


def numpy_aliases() -> list[str]:
    """Restore the numpy names RecBole 1.2.1 uses; returns the names that were added."""
    added = []
    for name, value in _NUMPY_ALIASES.items():
        if name not in vars(np):  # removed names live only in numpy's module __getattr__
            setattr(np, name, value)
            added.append(name)
    return added


def fill_nan(dataset) -> None:
    """RecBole's ``Dataset._fill_nan`` without chained in-place calls (safe under copy-on-write)."""
    from recbole.utils import FeatureType

    for feat_name in dataset.feat_name_list:
        feat = getattr(dataset, feat_name)
        for field in feat:
            ftype = dataset.field2type[field]
            if ftype == FeatureType.TOKEN:
                feat[field] = feat[field].fillna(value=0)
            elif ftype == FeatureType.FLOAT:
                feat[field] = feat[field].fillna(value=feat[field].mean())
            else:
                dtype = np.int64 if ftype == FeatureType.TOKEN_SEQ else np.float64
                feat[field] = feat[field].apply(
                    lambda x, dtype=dtype: np.array([], dtype=dtype) if isinstance(x, float) else x
                )


class _PandasForDataset:
    """``pandas`` as RecBole's dataset module sees it: ``read_csv`` gives sequence columns no NaN.

    RecBole fills missing sequence fields with ``df[field].fillna("", inplace=True)`` right after
    reading, which copy-on-write turns into a no-op (then ``str.split`` meets a float NaN).
    """

    def __getattr__(self, name):
        import pandas

        return getattr(pandas, name)

    @staticmethod
    def read_csv(*args, **kwargs):
        import pandas

        df = pandas.read_csv(*args, **kwargs)
        for column in df.columns:
            if str(column).endswith("seq"):
                df[column] = df[column].fillna(value="")
        return df


def pandas_fillna() -> None:
    """Replace RecBole's NaN imputation (and its empty-string fill of sequence fields)."""
    from recbole.data.dataset import dataset as ds

    if getattr(ds.Dataset._fill_nan, "_recbole_sae", False):
        return
    recbole_pandas, recbole_fill_nan = ds.pd, ds.Dataset._fill_nan
    ds.pd = _PandasForDataset()

    def _fill_nan(self):
        fill_nan(self)

    _fill_nan._recbole_sae = True
    _fill_nan.recbole_originals = (recbole_pandas, recbole_fill_nan)  # for the tests
    ds.Dataset._fill_nan = _fill_nan


def load_checkpoint(path: str, map_location="cpu", trust: bool = False):
    """Load a checkpoint weights-only (see :func:`recbole_sae.checkpoint.load`; ``trust``: the
    ``trust_checkpoint`` key, which lets a RecBole pickle be unpickled in full)."""
    from recbole_sae import checkpoint

    return checkpoint.load(path, map_location=map_location, trust=trust)


class _TorchForTrainer:
    """``torch`` as RecBole's trainer module sees it: ``save`` writes checkpoints that load
    weights-only (the Config as a plain dict), ``load`` never unpickles more than weights."""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def save(obj, f, *args, **kwargs):
        from recbole_sae import checkpoint

        checkpoint.save(obj, f)

    @staticmethod
    def load(f, map_location=None, **kwargs):
        kwargs["weights_only"] = True
        return torch.load(f, map_location=map_location, **kwargs)


def checkpoint_loading() -> None:
    import recbole.trainer.trainer as trainer_module

    if not isinstance(trainer_module.torch, _TorchForTrainer):
        trainer_module.torch = _TorchForTrainer()


class _PickleForData:
    """``pickle`` as RecBole's data module sees it: ``dump`` as usual, but ``load`` refuses.

    RecBole's ``create_dataset`` and ``data_preparation`` unpickle ``<checkpoint_dir>/<dataset>-<Class>.pth``
    and ``...-dataloader.pth`` whenever such a file exists (or ``dataset_save_path`` /
    ``dataloaders_save_path`` name one), and unpickling runs any code the file carries: a run folder from
    someone else could hold one. They are never loaded; the data is built from the atomic files.
    """

    def __getattr__(self, name):
        import pickle

        return getattr(pickle, name)

    @staticmethod
    def load(f, *args, **kwargs):
        from recbole_sae.errors import ConfigError

        name = getattr(f, "name", "a saved dataset")
        raise ConfigError(
            f"{name} is a pickled RecBole dataset or dataloader; unpickling could run code, so it is not loaded. "
            "Delete it (or unset dataset_save_path / dataloaders_save_path): the data is built from the atomic files"
        )


def data_pickles() -> None:
    import recbole.data.utils as data_utils

    if not isinstance(data_utils.pickle, _PickleForData):
        data_utils.pickle = _PickleForData()


def anomaly_off() -> None:
    import recbole.model.sequential_recommender  # noqa: F401  (its SINE import turns anomaly on)

    torch.autograd.set_detect_anomaly(False)


def reconstruct_test_data(self, item_seq, item_seq_len):
    """RecBole's ``BERT4Rec.reconstruct_test_data`` without its loop over the batch.

    As there: a padding column is appended, the mask token goes to index ``item_seq_len`` of each row, and the
    first column is dropped, with it the oldest item of every history, so that the mask sits at
    ``item_seq_len - 1``, where ``full_sort_predict`` reads it.
    """
    rows = torch.arange(item_seq.size(0), device=item_seq.device)
    item_seq = torch.cat((item_seq, item_seq.new_zeros(item_seq.size(0), 1)), dim=-1)
    item_seq[rows, item_seq_len] = self.mask_token
    return item_seq[:, 1:]


def bert4rec_mask_token() -> None:
    from recbole.model.sequential_recommender.bert4rec import BERT4Rec

    if BERT4Rec.reconstruct_test_data is not reconstruct_test_data:
        reconstruct_test_data.recbole_original = BERT4Rec.reconstruct_test_data  # for the tests
        BERT4Rec.reconstruct_test_data = reconstruct_test_data


def run_tensorboard(logger):
    """RecBole's ``get_tensorboard``, writing into the folder of the logger's ``run.log`` when it has one."""
    import os

    from recbole.utils.utils import get_tensorboard

    for handler in logger.handlers:
        path = getattr(handler, "baseFilename", None)
        if path and os.path.basename(path) == "run.log":
            from torch.utils.tensorboard import SummaryWriter

            return SummaryWriter(os.path.join(os.path.dirname(path), "log_tensorboard"))
    return get_tensorboard(logger)


def tensorboard_in_run_folder() -> None:
    import recbole.trainer.trainer as trainer_module

    trainer_module.get_tensorboard = run_tensorboard


@functools.lru_cache(maxsize=None)
def apply() -> None:
    """Apply every fix once. Config, the pipeline and the model modules call this."""
    numpy_aliases()
    pandas_fillna()
    checkpoint_loading()
    data_pickles()
    anomaly_off()
    bert4rec_mask_token()
    tensorboard_in_run_folder()
