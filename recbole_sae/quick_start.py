"""One pipeline for plugin models and RecBole baselines: train, validate, test, keep a run folder."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from datetime import datetime
from logging import getLogger

import torch

from recbole_sae import checkpoint as checkpoint_format
from recbole_sae import compat, console, distributed, progress, protocol, resume, runfiles, runlock, threads, validate
from recbole_sae.config import Config, split_config_files
from recbole_sae.contracts import is_epoch_trainer, run_view
from recbole_sae.data import masking
from recbole_sae.data.locate import BUNDLED, locate_dataset
from recbole_sae.errors import (
    CheckpointMismatchError,
    ConfigError,
    FinishedRunError,
    RecboleSAEError,
    TrainingDivergedError,
)
from recbole_sae.fileio import write_text_atomic
from recbole_sae.registry import get_trainer
from recbole_sae.tables import round_metrics

compat.apply()

from recbole.data import create_dataset, data_preparation  # noqa: E402
from recbole.utils import init_seed  # noqa: E402

from recbole_sae.model.build import build_model  # noqa: E402


def _new_run_dir(config) -> str:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    run_dir = os.path.abspath(os.path.join(config["checkpoint_dir"], f"{config['model']}-{config['dataset']}-{stamp}"))
    return runlock.claim(run_dir)


def _finished(run_dir: str) -> bool:
    return os.path.isfile(os.path.join(run_dir, runfiles.RESULT))


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
                + (
                    f"{run_dir} holds a finished run (result.json); there is nothing to resume"
                    if _finished(run_dir)
                    else f"no {runfiles.RESUME} in {run_dir}: not a run folder, or the run stopped before its "
                    "first validation; start it again without --resume"
                )
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
            return run_dir, None, runlock.lock_run_dir(run_dir, config.command)
    else:
        run_dir = _new_run_dir(config)
        return run_dir, None, runlock.lock_run_dir(run_dir, config.command)
    lock = runlock.lock_run_dir(run_dir, config.command)
    try:
        state = resume.load(run_dir)
        resume.check_settings(state, run_settings, run_dir, resume.defaults(config))
    except BaseException:
        lock.release()
        raise
    return run_dir, state, lock


def _best_epoch(scores: list[float], eval_step: int, bigger: bool = True) -> int | None:
    """The (0-based) training epoch whose validation gave the best score: the last one on ties, as
    RecBole's early stopping (``value >= best``) saves that checkpoint, the one tested."""
    if not scores:
        return None
    best = max(scores) if bigger else min(scores)
    last = len(scores) - 1 - scores[::-1].index(best)
    return _validated_epoch(last, eval_step)


def _validated_epoch(index: int, eval_step: int) -> int:
    """The (0-based) epoch after which RecBole ran validation number ``index`` (0-based)."""
    return (index + 1) * eval_step - 1


def _curve(config, outcome: dict, headline: str) -> dict | None:
    """The run's learning curve: every validation's score (``metric`` under ``protocol``, the headline)
    at its 0-based epoch (``valid_epoch``, as ``best_epoch``), and every training epoch's loss and
    seconds; None without a training epoch. A resumed run's curve includes the epochs before the stop."""
    seconds = outcome["seconds"]
    if not seconds:
        return None
    step, losses = int(config["eval_step"] or 1), outcome.get("train_loss") or {}
    loss = [losses.get(epoch) for epoch in range(len(seconds))]
    return {
        "metric": str(config["valid_metric"]).lower(),
        "protocol": headline,
        "valid_epoch": [_validated_epoch(i, step) for i in range(len(outcome["scores"]))],
        "valid": [round(float(score), 6) for score in outcome["scores"]],
        "train_loss": [None if value is None else round(float(value), 6) for value in loss],
        "train_seconds": [round(float(value), 3) for value in seconds],
    }


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
        raise TrainingDivergedError(
            f"{config['model']} on {config['dataset']} stopped: {err} (log: {run_dir})"
        ) from err
    except ValueError as err:
        if str(err) != RECBOLE_NAN_MESSAGE:
            raise
        raise TrainingDivergedError(
            f"{config['model']} on {config['dataset']} stopped: the training loss is NaN (RecBole's trainer). "
            f"Lower learning_rate (now {config['learning_rate']}), set clip_grad_norm "
            "(e.g. --clip_grad_norm=\"{'max_norm': 5}\") or check the data (log: " + run_dir + ")"
        ) from err


class RunResult(dict):
    """A run's result record (a dict, as in ``result.json``); ``compact`` is the record of the RESULT
    line: the metrics at the valid metric's cut-off and a summary of each model report."""

    compact: dict | None = None


def run_recbole_sae(
    model=None,
    dataset=None,
    config_file_list=None,
    config_dict=None,
    saved: bool = True,
    cmd_args: dict | None = None,
    command: str | None = None,
) -> dict:
    """Train, validate and test ``model`` on ``dataset``; return the result record.

    The run folder (``checkpoint_dir/<model>-<dataset>-<time>``, or ``checkpoint_dir/<run_name>``)
    keeps ``model.pth``, ``config.yaml``, ``run.log``, ``result.json``, RecBole's tensorboard events
    (``log_tensorboard/``) and whatever reports the model's trainer writes; until the run finishes also
    ``resume.pth``, from which a killed run continues (``run_name`` again, or ``resume=<run folder>``;
    see :mod:`recbole_sae.resume`). The run uses ``threads`` torch threads (:mod:`recbole_sae.threads`)
    and prints the quiet console of :mod:`recbole_sae.console` (``verbose``: everything).

    ``cmd_args``: the command line's ``--key=value`` strings (:mod:`recbole_sae.cli`), the highest
    config layer; ``command``: the command as typed, for ``run.log``, the folder's lock and ``resume.pth``.
    """
    start = time.perf_counter()
    config = Config(model, dataset, split_config_files(config_file_list), config_dict, cmd_args, command)
    run_settings = resume.settings(config)
    # the processes of a multi-process run share the machine's cores
    n_threads = threads.resolve(config["threads"], distributed.world_size(config))
    if distributed.active(config):  # one of the processes of a multi-process run: the folder is opened
        run_dir = config["run_dir"]
        return _train_and_test(
            config, run_dir, distributed.resume_state(run_dir), run_settings, saved, start, n_threads
        )
    if distributed.wanted(config):  # --nproc=N: N processes train the run in this folder
        distributed.check(config)
        run_args = (model, dataset, config_file_list, config_dict, saved, cmd_args, command)
        return _in_run_folder(config, run_settings, lambda run_dir, _: distributed.launch(config, run_dir, run_args))
    return _in_run_folder(
        config,
        run_settings,
        lambda run_dir, state: _train_and_test(config, run_dir, state, run_settings, saved, start, n_threads),
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


def _train_and_test(config, run_dir: str, state, run_settings: dict, saved: bool, start: float, n_threads: int) -> dict:
    """The run in its folder (several processes: each of them; only rank 0 writes files and prints),
    with its threads, its log file and its console."""
    main = distributed.is_main(config)
    config["checkpoint_dir"] = run_dir
    config["run_dir"] = run_dir
    threads_before, progress_before = torch.get_num_threads(), progress.interval()
    progress.configure(config["progress_seconds"])
    torch.set_num_threads(n_threads)
    log_file = os.path.join(run_dir, runfiles.LOG) if main else None
    try:
        with console.run_logging(log_file, config["state"] or "INFO", bool(config["verbose"]), console=main):
            return _run(config, run_dir, state, run_settings, saved, start, n_threads)
    finally:
        torch.set_num_threads(threads_before)
        progress.configure(progress_before)


def _run(config, run_dir: str, state, run_settings: dict, saved: bool, start: float, n_threads: int) -> RunResult:
    main = distributed.is_main(config)
    init_seed(config["seed"], config["reproducibility"])
    logger = getLogger()
    if config.command:
        logger.info(config.command)
    logger.info(config)
    console.header(config, run_dir)
    if main:
        with open(os.path.join(run_dir, runfiles.CONFIG), "w", encoding="utf-8") as f:
            f.write(config.to_yaml())

    data = create_dataset(config)
    logger.info(data)
    console.header_data(data)
    splits = data_preparation(config, data)
    validate.check_splits(config, *splits)
    masking.attach(config, splits[0])

    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    with _diverged_as_error(config, run_dir):
        net = build_model(config, splits[0]._dataset).to(config["device"])
        logger.info(net)
        console.header_model(config, net, n_threads)
        trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, net)
        trainer.saved_model_file = os.path.join(run_dir, runfiles.CHECKPOINT)
        outcome = _fit_and_evaluate(config, trainer, splits, run_dir, state, run_settings, saved)

    result = _result_record(config, outcome, run_dir, start)
    result_file = os.path.join(run_dir, runfiles.RESULT)
    if main:
        write_text_atomic(json.dumps(result, indent=2), result_file)  # a result.json marks the run finished
        resume.state_file(run_dir).unlink(missing_ok=True)  # finished: nothing to resume
    logger.info("result: %s", json.dumps(result))
    summaries = run_view(trainer).result_summary(outcome["extra"])
    out = RunResult(result)
    out.compact = console.compact_result(result, config["valid_metric"].lower(), summaries, result_file)
    console.summary(out.compact, config["valid_metric"])
    return out


def _fit_and_evaluate(config, trainer, splits, run_dir: str, state, run_settings: dict, saved: bool) -> dict:
    """Fit (or continue from ``state``), evaluate the best checkpoint under both protocols, run the
    model's own reports; what the result record needs."""
    train_data, valid_data, test_data = splits
    target_seen = protocol.attach_to_run(trainer, train_data, valid_data, test_data, config)
    distributed.attach(trainer)  # several processes: the metrics over everyone's users
    watch = console.EpochWatch(trainer, config, {"validation": valid_data, "test": test_data})
    epoch_seconds, valid_scores = watch.seconds, watch.scores
    resumed_at = None
    if state is not None:
        resumed_at = resume.restore(state, trainer, train_data, (epoch_seconds, valid_scores))
        console.say(resume.restart_line(run_dir, resumed_at))
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()

    def save_state(epoch_idx):
        if distributed.is_main(config):
            resume.save(
                run_dir, trainer, train_data, epoch_idx, run_settings, config.command, (epoch_seconds, valid_scores)
            )

    fit_options = {"saved": saved, "show_progress": config["show_progress"]}
    if is_epoch_trainer(trainer):  # its fit calls callback_fn after every validation
        writer = resume.Writer(save_state, config["resume_every"])
        writer.wrap(trainer)  # and between validations, at the start of an epoch
        fit_options["callback_fn"] = writer.after_validation
    trainer.both_protocols = False  # validation while training: the headline protocol only
    if resumed_at is not None and resumed_at >= trainer.epochs:
        # training had ended before the run died (in its test or reports): RecBole's fit would save the
        # resumed last-epoch weights over the best checkpoint, so the best is evaluated as it is
        best_valid_result = trainer.best_valid_result
    else:
        _, best_valid_result = trainer.fit(train_data, valid_data, **fit_options)
    distributed.barrier(config)  # the best checkpoint is written before any process loads it
    trainer.both_protocols = True  # the best checkpoint, under both protocols
    if best_valid_result:
        best_valid_result = trainer.evaluate(valid_data, load_best_model=saved, show_progress=config["show_progress"])
    test_result = trainer.evaluate(
        test_data, load_best_model=saved and not best_valid_result, show_progress=config["show_progress"]
    )
    trainer.both_protocols = False  # a model's own reports (SAE interventions, steering) use the headline
    extra = run_view(trainer).after_test(train_data, valid_data, test_data) or {}
    return {
        "valid": best_valid_result,
        "test": test_result,
        "extra": extra,
        "target_seen": target_seen,
        "seconds": epoch_seconds,
        "scores": valid_scores,
        "train_loss": dict(trainer.train_loss_dict),  # epoch -> loss (RecBole sums a tuple of losses)
        "resumed_at": resumed_at,
    }


def _result_record(config, outcome: dict, run_dir: str, start: float) -> dict:
    headline = protocol.headline(config)
    best_valid, other_valid = protocol.split_result(outcome["valid"])
    test, other_test = protocol.split_result(outcome["test"])
    epoch_seconds, target_seen, resumed_at = outcome["seconds"], outcome["target_seen"], outcome["resumed_at"]
    return {
        "model": config["model"],
        "dataset": config["dataset"],
        "protocol": headline,
        "best_valid": round_metrics(best_valid),
        "test": round_metrics(test),
        **(
            {
                protocol.other(headline): {"best_valid": round_metrics(other_valid), "test": round_metrics(other_test)},
                "target_seen_before": target_seen,
            }
            if target_seen is not None
            else {}
        ),
        # no training epoch (weights loaded: sasrec_checkpoint, sae_run): no best epoch either
        "best_epoch": _best_epoch(outcome["scores"], config["eval_step"], config["valid_metric_bigger"])
        if epoch_seconds
        else None,
        "epochs_run": len(epoch_seconds),
        "seconds_per_epoch": round(sum(epoch_seconds) / len(epoch_seconds), 3) if epoch_seconds else None,
        "curve": _curve(config, outcome, headline),
        "run_dir": run_dir,
        "seconds": round(time.perf_counter() - start, 2),
        "device": str(config["device"]),
        **({"processes": distributed.world_size(config)} if distributed.active(config) else {}),
        "seed": config["seed"],
        **({"resumed_at_epoch": resumed_at} if resumed_at is not None else {}),
        **outcome["extra"],
    }


def load_data_and_model(
    checkpoint: str, expected_model: str | None = None, config_dict=None, trust_checkpoint: bool = False
):
    """Reload a run: ``(config, model, dataset, train_data, valid_data, test_data)``.

    ``checkpoint`` is a ``model.pth`` or the run folder holding one. ``expected_model`` guards
    against a checkpoint of another model. ``config_dict`` overrides keys of the saved config
    (e.g. ``data_path`` on another machine). The file is loaded weights-only; ``trust_checkpoint``
    lets a full pickle (a checkpoint written by RecBole itself) be unpickled, which runs any code it carries.
    """
    if os.path.isdir(checkpoint):
        checkpoint = os.path.join(checkpoint, runfiles.CHECKPOINT)
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
    if config["dataset"] not in BUNDLED:  # the saved folder, or the data on this machine: the same lookup as a run's
        config["data_path"] = locate_dataset(config["dataset"], config["data_path"])
    init_seed(config["seed"], config["reproducibility"])
    console.silence_noise()
    data = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, data)
    masking.attach(config, train_data)
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
