"""Resumable training: a run killed mid-training continues where it stopped, with the same result.

After every validation the pipeline writes ``resume.pth`` into the run folder (atomically: a crash
while writing leaves the previous state; as tensors, lists and numbers only, so that it loads with
``torch.load(weights_only=True)`` and can run no code): the model and optimizer, RecBole's early-stopping state
(epoch, steps without improvement, best score and result, losses), the timings the result reports,
and every random state training draws from (torch's, numpy's, Python's and the training loader's
shuffling generator). A run started again in the same folder (``run_name``, or ``--resume=FOLDER``)
rebuilds its data and model, restores that state and trains on from the next epoch; on the CPU the
resumed run gives the same metrics as one that was never stopped. ``resume.pth`` is deleted when
the run finishes. Between validations (:class:`Writer`, ``resume_every`` seconds) the state is also
written at the start of a training epoch, so that a run whose validations are far apart (long CPU
epochs, ``eval_step`` 5) loses about one epoch when killed instead of up to ``eval_step``.

Only the training loop resumes: a model's later stage (the SAE of SASRecSAE) runs again in full.
The settings must be the run's own (the ones that change training: everything except where files
go, logging and the device); a difference is an error that names it.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np
import torch

from recbole_sae import checkpoint, runfiles
from recbole_sae.errors import CheckpointMismatchError, ConfigError

# Keys that may differ between the first start of a run and its resumption.
FREE_KEYS = frozenset(
    {
        "resume",
        "resume_every",
        "run_name",
        "run_dir",
        "checkpoint_dir",
        "data_path",
        "show_progress",
        "state",
        "device",
        "gpu_id",
        "use_gpu",
        "worker",
        "local_rank",
        "nproc",
        "world_size",
        "offset",
        "ip",
        "port",
        "single_spec",
        "eval_batch_size",
        "log_wandb",
        "wandb_project",
        "trust_checkpoint",
        "threads",
        "verbose",
        "progress_seconds",
    }
)


def _as_settings(values: dict) -> dict:
    return {str(key): repr(value) for key, value in values.items() if key not in FREE_KEYS}


def settings(config) -> dict:
    """What the run's training depends on, as text: the resolved config without :data:`FREE_KEYS`."""
    return _as_settings(config.final_config_dict)


def defaults(config) -> dict:
    """The defaults of those settings (RecBole's and this project's yaml layers), written alike."""
    return _as_settings(getattr(config, "internal_config_dict", None) or {})


def state_file(run_dir) -> Path:
    return Path(run_dir) / runfiles.RESUME


def restart_line(run_dir, start_epoch: int) -> str:
    """The run log's and console's one line for a resumed run. ``start_epoch`` counts from 0, as
    RecBole's log lines do; the console counts from 1, so the line gives both."""
    return (
        f"resumed from {state_file(run_dir)}: training goes on at epoch {start_epoch + 1}"
        f" (RecBole's log counts from 0: its epoch {start_epoch})"
    )


def _rng_state(train_data) -> dict:
    """Every random state training draws from, as tensors, lists and numbers (weights-only loadable)."""
    generator = getattr(train_data, "generator", None)
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": {"version": int(version), "internal": list(internal), "gauss_next": gauss_next},
        "loader": generator.get_state() if isinstance(generator, torch.Generator) else None,
    }


def _set_rng_state(rng: dict, train_data) -> None:
    torch.set_rng_state(rng["torch"])
    if rng.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    state = rng["numpy"]
    np.random.set_state(
        (
            state["name"],
            state["keys"].numpy().astype(np.uint32),
            state["pos"],
            state["has_gauss"],
            state["cached_gaussian"],
        )
    )
    python = rng["python"]
    random.setstate((python["version"], tuple(python["internal"]), python["gauss_next"]))
    generator = getattr(train_data, "generator", None)
    if rng.get("loader") is not None and isinstance(generator, torch.Generator):
        generator.set_state(rng["loader"])


def save(run_dir, trainer, train_data, epoch: int, run_settings: dict, command: str, timings: tuple) -> None:
    """Write the state after training epoch ``epoch`` and its validation, if it had one (atomically)."""
    epoch_seconds, valid_scores = timings
    state = {
        "epoch": epoch,
        "stopped": trainer.cur_step > trainer.stopping_step,
        "cur_step": trainer.cur_step,
        "best_valid_score": trainer.best_valid_score,
        "best_valid_result": trainer.best_valid_result,
        "train_loss_dict": dict(trainer.train_loss_dict),
        "state_dict": trainer.model.state_dict(),
        "other_parameter": trainer.model.other_parameter(),
        "optimizer": trainer.optimizer.state_dict(),
        "rng": _rng_state(train_data),
        "epoch_seconds": list(epoch_seconds),
        "valid_scores": list(valid_scores),
        "settings": run_settings,
        "command": command,
    }
    checkpoint.save(state, state_file(run_dir))


def load(run_dir) -> dict:
    """The saved state, loaded weights-only (a state that needs more is refused, never unpickled)."""
    try:
        return checkpoint.load(
            state_file(run_dir), trust=None, what="resume state", hint="delete it to start the run afresh"
        )
    except CheckpointMismatchError as exc:
        raise ConfigError(str(exc)) from None


def check_settings(state: dict, run_settings: dict, run_dir, default_settings: dict | None = None) -> None:
    """The run's own settings, or an error naming what differs and the command that started it. A
    setting the state does not know that holds its default (``default_settings``: :func:`defaults`) is
    no difference: a newer version added it, and at its default it trains as the run did."""
    saved = state.get("settings") or {}
    differ = sorted(
        key
        for key in set(saved) | set(run_settings)
        if saved.get(key) != run_settings.get(key)
        and not (key not in saved and run_settings.get(key) == (default_settings or {}).get(key))
    )
    if differ:
        shown = "; ".join(
            f"{key}: run {saved.get(key, 'unset')}, now {run_settings.get(key, 'unset')}" for key in differ[:8]
        )
        more = f" (and {len(differ) - 8} more)" if len(differ) > 8 else ""
        raise ConfigError(
            f"{run_dir} holds an unfinished run with other settings ({shown}{more}). It was started with: "
            f"{state.get('command') or '?'}. Resume it with the same settings, or choose another run_name "
            f"(or delete {state_file(run_dir)} to start it afresh)"
        )


def restore(state: dict, trainer, train_data, timings: tuple) -> int:
    """Put the trainer, model, optimizer and random states back; return the first epoch to train."""
    trainer.model.load_state_dict(state["state_dict"])
    trainer.model.load_other_parameter(state.get("other_parameter"))
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.cur_step = state["cur_step"]
    trainer.best_valid_score = state["best_valid_score"]
    trainer.best_valid_result = state["best_valid_result"]
    trainer.train_loss_dict = dict(state["train_loss_dict"])
    epoch_seconds, valid_scores = timings
    epoch_seconds[:] = state["epoch_seconds"]
    valid_scores[:] = state["valid_scores"]
    _set_rng_state(state["rng"], train_data)
    # a run that had met its stopping rule trains no further epoch
    trainer.start_epoch = trainer.epochs if state["stopped"] else state["epoch"] + 1
    return trainer.start_epoch


class Writer:
    """When the resume state is written: ``write(epoch_idx)`` after every validation (RecBole's
    ``callback_fn``: :meth:`after_validation`) and, once ``every`` seconds have passed since the last
    state (0: never), at the start of a training epoch for the epoch before it (:meth:`wrap`).

    The start of an epoch is the one point between validations where the state is whole: RecBole's
    ``fit`` has logged the epoch before and added its loss to ``train_loss_dict``, early stopping has
    not moved, and nothing random has been drawn since that epoch ended (the next one's shuffle and
    dropout come after). A state written there resumes to the same metrics as one written after a
    validation."""

    def __init__(self, write, every: float, clock=time.monotonic):
        self.write, self.every, self.clock = write, float(every or 0), clock
        self.last = clock()

    def after_validation(self, epoch_idx: int, valid_score=None) -> None:
        self._write(epoch_idx)

    def _write(self, epoch_idx: int) -> None:
        self.write(epoch_idx)
        self.last = self.clock()

    def wrap(self, trainer) -> None:
        """Write the state between validations from ``trainer._train_epoch`` (outermost, so that the
        writing is not counted in the epoch's seconds)."""
        if self.every <= 0:
            return
        train_epoch = trainer._train_epoch

        def train_epoch_after_writing(train_data, epoch_idx, *args, **kwargs):
            step = trainer.eval_step
            previous_validated = step > 0 and epoch_idx % step == 0  # epoch_idx - 1 had a validation
            due = self.clock() - self.last >= self.every
            if due and epoch_idx > trainer.start_epoch and not previous_validated:
                self._write(epoch_idx - 1)
            return train_epoch(train_data, epoch_idx, *args, **kwargs)

        trainer._train_epoch = train_epoch_after_writing
