"""One pipeline for plugin models and RecBole baselines: train, validate, test, keep a run folder."""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
import platform
import sys
import time
from datetime import datetime
from logging import getLogger

import torch

from recbole_sae import checkpoint as checkpoint_format
from recbole_sae import compat, distributed, protocol, resume, runlock, validate
from recbole_sae.config import Config, split_config_files
from recbole_sae.errors import (
    CheckpointMismatchError, ConfigError, FinishedRunError, RecboleSAEError, TrainingDivergedError,
)
from recbole_sae.registry import get_trainer

compat.apply()

from recbole.data import create_dataset, data_preparation  # noqa: E402
from recbole.utils import init_logger, init_seed  # noqa: E402

from recbole_sae.model.build import build_model  # noqa: E402
from recbole_sae.model.saved_run import CHECKPOINT_NAME  # noqa: E402


def _new_run_dir(config) -> str:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    run_dir = os.path.abspath(
        os.path.join(config["checkpoint_dir"], f"{config['model']}-{config['dataset']}-{stamp}")
    )
    return runlock.claim(run_dir)


RESULT_NAME = "result.json"  # written when a run finishes


def _finished(run_dir: str) -> bool:
    return os.path.isfile(os.path.join(run_dir, RESULT_NAME))


def _open_run_dir(config, run_settings: dict) -> tuple[str, dict | None, runlock.FileLock]:
    """The run folder, the resume state to continue from (None: a fresh start) and the folder's lock,
    taken before anything in the folder is read or written (one writer per run folder).

    ``resume``: a run folder whose ``resume.pth`` the run continues from (the folder must hold one).
    ``run_name``: the folder's name under ``checkpoint_dir``; an unfinished run there with the same
    settings is continued, a finished one is an error. Neither: a new folder ``<model>-<dataset>-<time>``.
    """
    if config["resume"]:
        run_dir = os.path.abspath(os.path.expanduser(str(config["resume"])))
        if not resume.state_file(run_dir).is_file():
            raise ConfigError(
                f"--resume={config['resume']}: "
                + (f"{run_dir} holds a finished run (result.json); there is nothing to resume"
                   if _finished(run_dir) else
                   f"no {resume.STATE_NAME} in {run_dir}: not a run folder, or the run stopped before its "
                   "first validation; start it again without --resume")
            )
    elif config["run_name"]:
        run_dir = runlock.claim(runlock.run_dir_for_name(config["checkpoint_dir"], config["run_name"]))
        if not resume.state_file(run_dir).is_file():
            if _finished(run_dir):
                raise FinishedRunError(
                    f"run_name={config['run_name']}: {run_dir} holds a finished run (result.json); choose "
                    "another run_name, or delete the folder to run it again",
                    run_dir,
                )
            return run_dir, None, runlock.lock_run_dir(run_dir)
    else:
        run_dir = _new_run_dir(config)
        return run_dir, None, runlock.lock_run_dir(run_dir)
    lock = runlock.lock_run_dir(run_dir)
    try:
        state = resume.load(run_dir)
        resume.check_settings(state, run_settings, run_dir)
    except BaseException:
        lock.release()
        raise
    return run_dir, state, lock


def _log_to_file(path: str, level: str) -> logging.Handler:
    """Copy the run's log into the run folder (RecBole's own log stays under ./log)."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = getLogger()
    root.addHandler(handler)
    # RecBole's init_logger uses logging.basicConfig, a no-op when the root logger already has a
    # handler (as under pytest or in a notebook); the run log still wants INFO.
    root.setLevel(min(root.level or logging.WARNING, logging.getLevelName(str(level).upper())))
    return handler


def _record_epochs(trainer) -> tuple[list[float], list[float]]:
    """Wrap the trainer's epoch methods: wall seconds of each training epoch, score of each validation."""
    seconds: list[float] = []
    scores: list[float] = []
    train_epoch, valid_epoch = trainer._train_epoch, trainer._valid_epoch

    def timed(*args, **kwargs):
        start = time.perf_counter()
        out = train_epoch(*args, **kwargs)
        seconds.append(time.perf_counter() - start)
        return out

    def scored(*args, **kwargs):
        out = valid_epoch(*args, **kwargs)
        scores.append(float(out[0]))
        return out

    trainer._train_epoch, trainer._valid_epoch = timed, scored
    return seconds, scores


def _best_epoch(scores: list[float], eval_step: int, bigger: bool = True) -> int | None:
    """The (0-based) training epoch whose validation gave the best score; first one on ties."""
    if not scores:
        return None
    best = max(scores) if bigger else min(scores)
    return (scores.index(best) + 1) * eval_step - 1


def _round(metrics) -> dict:
    return {k: round(float(v), 6) for k, v in dict(metrics or {}).items()}


# RecBole's Trainer._check_nan raises a bare ValueError with this text.
RECBOLE_NAN_MESSAGE = "Training loss is nan"


@contextlib.contextmanager
def _diverged_as_error(config, run_dir: str):
    """A NaN/inf loss while building or training the model becomes a :class:`TrainingDivergedError` that
    names the run and what to change (the plugin's trainers and SAEs raise ``FloatingPointError``,
    RecBole's trainer a ``ValueError``); the CLI prints it without a traceback."""
    try:
        yield
    except TrainingDivergedError:
        raise
    except FloatingPointError as err:
        raise TrainingDivergedError(f"{config['model']} on {config['dataset']} stopped: {err} (log: {run_dir})") from err
    except ValueError as err:
        if str(err) != RECBOLE_NAN_MESSAGE:
            raise
        raise TrainingDivergedError(
            f"{config['model']} on {config['dataset']} stopped: the training loss is NaN (RecBole's trainer). "
            f"Lower learning_rate (now {config['learning_rate']}), set clip_grad_norm "
            "(e.g. --clip_grad_norm=\"{'max_norm': 5}\") or check the data (log: " + run_dir + ")"
        ) from err


def run_recbole_sae(
    model=None,
    dataset=None,
    config_file_list=None,
    config_dict=None,
    saved: bool = True,
) -> dict:
    """Train, validate and test ``model`` on ``dataset``; return the result record.

    The run folder (``checkpoint_dir/<model>-<dataset>-<time>``, or ``checkpoint_dir/<run_name>``)
    keeps ``model.pth``, ``config.yaml``, ``run.log``, ``result.json`` and whatever reports the
    model's trainer writes; until the run finishes also ``resume.pth``, from which a killed run
    continues (``run_name`` again, or ``resume=<run folder>``; see :mod:`recbole_sae.resume`).
    """
    start = time.perf_counter()
    config = Config(model, dataset, split_config_files(config_file_list), config_dict)
    run_settings = resume.settings(config)
    if distributed.active(config):  # one of the processes of a multi-process run: the folder is opened
        run_dir = config["run_dir"]
        return _train_and_test(config, run_dir, distributed.resume_state(run_dir), run_settings, saved, start)
    if distributed.wanted(config):  # --nproc=N: N processes train the run in this folder
        distributed.check(config)
        run_args = (model, dataset, config_file_list, config_dict, saved)
        return _in_run_folder(config, run_settings, lambda run_dir, _: distributed.launch(config, run_dir, run_args))
    return _in_run_folder(
        config, run_settings, lambda run_dir, state: _train_and_test(config, run_dir, state, run_settings, saved, start)
    )


def _in_run_folder(config, run_settings: dict, work):
    """``work(run_dir, resume_state)`` in the run's folder, opened and locked; a failure marks it failed."""
    run_dir, state, lock = _open_run_dir(config, run_settings)
    runlock.clear_failed(run_dir)
    try:
        return work(run_dir, state)
    except Exception as err:
        # the folder says it failed and keeps its log and config (and what a rerun resumes from, after a crash)
        runlock.mark_failed(run_dir, err, resumable=not isinstance(err, RecboleSAEError))
        raise
    finally:
        lock.release()


def _train_and_test(config, run_dir: str, state, run_settings: dict, saved: bool, start: float) -> dict:
    """The run in its folder (several processes: each of them; only rank 0 writes files)."""
    main = distributed.is_main(config)
    config["checkpoint_dir"] = run_dir
    config["run_dir"] = run_dir
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    handler = _log_to_file(os.path.join(run_dir, "run.log"), config["state"] or "INFO") if main else None
    logger = getLogger()
    try:
        logger.info(" ".join(sys.argv))
        logger.info(config)
        if main:
            with open(os.path.join(run_dir, "config.yaml"), "w", encoding="utf-8") as f:
                f.write(config.to_yaml())

        data = create_dataset(config)
        logger.info(data)
        train_data, valid_data, test_data = data_preparation(config, data)
        validate.check_splits(config, train_data, valid_data, test_data)

        init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
        with _diverged_as_error(config, run_dir):
            net = build_model(config, train_data._dataset).to(config["device"])
            logger.info(net)

            trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, net)
            trainer.saved_model_file = os.path.join(run_dir, CHECKPOINT_NAME)
            headline = protocol.headline(config)
            target_seen = protocol.attach_to_run(trainer, train_data, valid_data, test_data, config)
            distributed.attach(trainer)  # several processes: the metrics over everyone's users
            epoch_seconds, valid_scores = _record_epochs(trainer)
            resumed_at = None
            if state is not None:
                resumed_at = resume.restore(state, trainer, train_data, (epoch_seconds, valid_scores))
                logger.info(f"resumed from {resume.state_file(run_dir)}: training goes on at epoch {resumed_at}")
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            command = " ".join(sys.argv)

            def save_state(epoch_idx, valid_score):
                if main:
                    resume.save(run_dir, trainer, train_data, epoch_idx, run_settings, command, (epoch_seconds, valid_scores))

            fit_options = {"saved": saved, "show_progress": config["show_progress"]}
            if "callback_fn" in inspect.signature(trainer.fit).parameters:  # RecBole's Trainer and ours
                fit_options["callback_fn"] = save_state
            trainer.both_protocols = False  # validation while training: the headline protocol only
            best_valid_score, best_valid_result = trainer.fit(train_data, valid_data, **fit_options)
            distributed.barrier(config)  # the best checkpoint is written before any process loads it
            trainer.both_protocols = True  # the best checkpoint, under both protocols
            if best_valid_result:
                best_valid_result = trainer.evaluate(
                    valid_data, load_best_model=saved, show_progress=config["show_progress"]
                )
            test_result = trainer.evaluate(
                test_data, load_best_model=saved and not best_valid_result, show_progress=config["show_progress"]
            )
            extra = {}
            trainer.both_protocols = False  # a model's own reports (SAE interventions, steering) use the headline
            if hasattr(trainer, "after_test"):
                extra = trainer.after_test(train_data, valid_data, test_data) or {}

        best_valid, other_valid = protocol.split_result(best_valid_result)
        test, other_test = protocol.split_result(test_result)
        result = {
            "model": config["model"],
            "dataset": config["dataset"],
            "protocol": headline,
            "best_valid": _round(best_valid),
            "test": _round(test),
            **({protocol.other(headline): {"best_valid": _round(other_valid), "test": _round(other_test)},
                "target_seen_before": target_seen} if target_seen is not None else {}),
            # no training epoch (weights loaded: sasrec_checkpoint, sae_run): no best epoch either
            "best_epoch": _best_epoch(
                valid_scores, config["eval_step"], config["valid_metric_bigger"]
            ) if epoch_seconds else None,
            "epochs_run": len(epoch_seconds),
            "seconds_per_epoch": round(sum(epoch_seconds) / len(epoch_seconds), 3)
            if epoch_seconds
            else None,
            "run_dir": run_dir,
            "seconds": round(time.perf_counter() - start, 2),
            "device": str(config["device"]),
            **({"processes": distributed.world_size(config)} if distributed.active(config) else {}),
            "seed": config["seed"],
            **({"resumed_at_epoch": resumed_at} if resumed_at is not None else {}),
            **extra,
        }
        if main:
            with open(os.path.join(run_dir, RESULT_NAME), "w", encoding="utf-8") as f:
                json.dump(result, f, indent=2)
            resume.state_file(run_dir).unlink(missing_ok=True)  # finished: nothing to resume
        logger.info("result: %s", json.dumps(result))
        return result
    finally:
        if handler is not None:
            logger.removeHandler(handler)
            handler.close()


def load_data_and_model(checkpoint: str, expected_model: str | None = None, config_dict=None,
                        trust_checkpoint: bool = False):
    """Reload a run: ``(config, model, dataset, train_data, valid_data, test_data)``.

    ``checkpoint`` is a ``model.pth`` or the run folder holding one. ``expected_model`` guards
    against a checkpoint of another model. ``config_dict`` overrides keys of the saved config
    (e.g. ``data_path`` on another machine). The file is loaded weights-only; ``trust_checkpoint``
    lets a full pickle (a checkpoint written by RecBole itself) be unpickled, which runs any code it carries.
    """
    if os.path.isdir(checkpoint):
        checkpoint = os.path.join(checkpoint, CHECKPOINT_NAME)
    state = compat.load_checkpoint(checkpoint, trust=trust_checkpoint)
    if not isinstance(state, dict) or not isinstance(state.get("config"), dict) or "state_dict" not in state:
        raise CheckpointMismatchError(
            f"{checkpoint} is not a RecBole/recbole-sae checkpoint (no 'config' and 'state_dict')"
        )
    saved = state["config"]
    if expected_model is not None and saved.get("model") != expected_model:
        raise CheckpointMismatchError(
            f"{checkpoint} holds a {saved.get('model')} model, not {expected_model}: "
            f"pass a checkpoint of a {expected_model} run"
        )
    config = checkpoint_format.restore_config(saved, config_dict)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    data = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, data)
    init_seed(config["seed"], config["reproducibility"])
    config["run_dir"] = os.path.dirname(os.path.abspath(checkpoint))  # data stages (intents/) are read from here
    model = build_model(config, train_data._dataset).to(config["device"])
    model.load_state_dict(state["state_dict"])
    model.load_other_parameter(state.get("other_parameter"))
    return config, model, data, train_data, valid_data, test_data


def environment() -> dict:
    """Versions and machine, for benchmark records."""
    import numpy
    import pandas
    import recbole

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "recbole": recbole.__version__,
        "numpy": numpy.__version__,
        "pandas": pandas.__version__,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
