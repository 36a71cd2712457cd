"""What a run prints: a short header, one line per epoch, progress lines, a summary, one RESULT line.

The quiet console (the default) shows only the lines of the loggers ``recbole_sae.console`` (header,
epochs, stages, summary; :func:`say`) and ``recbole_sae.progress`` (:mod:`recbole_sae.progress`),
and warnings and errors from anywhere. Everything, RecBole's config dump and model printout
included, goes to the run folder's ``run.log``. ``verbose: True`` shows every log line on the
terminal as RecBole does. Noise that reads like an error is dropped in both modes: faiss's "Could
not load library with AVX512 support" (it then loads its AVX2 build, as it should), the pandas
FutureWarnings RecBole 1.2.1's data code raises under pandas 2 and torch's about RecBole's GradScaler.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import time
import warnings

from recbole_sae import progress
from recbole_sae.contracts import is_epoch_trainer, run_view
from recbole_sae.progress import Progress, duration

CONSOLE = "recbole_sae.console"
SHOWN = (CONSOLE, progress.LOGGER_NAME)

# FutureWarnings raised from RecBole's own code: pandas' in its data code (the code works; pandas 3 would
# change it) and torch's about the GradScaler its trainer builds (disabled unless enable_scaler)
RECBOLE_FUTURE_WARNINGS = (
    r"`torch\.cuda\.amp\.GradScaler\(args\.\.\.\)` is deprecated",
    r"A value is trying to be set on a copy of a DataFrame or Series through chained assignment",
    r"using <built-in function \w+> in Series\.agg cannot aggregate",
    r"The default of observed=False is deprecated",
    r"DataFrameGroupBy\.apply operated on the grouping columns",
    r"Downcasting object dtype arrays on \.fillna",
)
FAISS_LOADER = "faiss.loader"


def say(message: str) -> None:
    """A line of the quiet console (and of the run log)."""
    logging.getLogger(CONSOLE).info(message)


class QuietFilter(logging.Filter):
    """Console lines, progress lines, and warnings or worse from any logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.name in SHOWN


class FaissLoaderNoise(logging.Filter):
    """faiss tries its AVX512 builds first and logs their absence at INFO in words of a failure."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Could not load library with")


def silence_noise() -> None:
    """Drop the faiss loader's failed-attempt lines and RecBole's FutureWarnings (idempotent)."""
    loader = logging.getLogger(FAISS_LOADER)
    if not any(isinstance(f, FaissLoaderNoise) for f in loader.filters):
        loader.addFilter(FaissLoaderNoise())
    for message in RECBOLE_FUTURE_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=FutureWarning, module=r"recbole\.")


class _Stderr(logging.StreamHandler):
    """A stream handler on whatever ``sys.stderr`` is when a line is written."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


@contextlib.contextmanager
def run_logging(log_file: str | None, level="INFO", verbose: bool = False, console: bool = True):
    """During a run: every record at ``level`` or above into ``log_file``; the quiet (or, with
    ``verbose``, the full) console on stderr (``console=False``: warnings and errors only, as in the
    other processes of a multi-process run). The handlers go when the run ends."""
    silence_noise()
    root = logging.getLogger()
    handlers = []
    if log_file:
        file_handler = logging.FileHandler(log_file, encoding="utf-8")
        file_handler.setFormatter(_PlainFormatter("%(asctime)s %(levelname)s %(message)s"))
        handlers.append(file_handler)
    terminal = _Stderr()
    if verbose and console:
        terminal.setFormatter(logging.Formatter("%(asctime)s %(levelname)s  %(message)s", "%d %b %H:%M"))
    else:
        terminal.setFormatter(_QuietFormatter())
        terminal.addFilter(QuietFilter() if console else _WarningsOnly())
    handlers.append(terminal)
    level = logging.getLevelName(str(level or "INFO").upper())
    level = level if isinstance(level, int) else logging.INFO
    for handler in handlers:
        handler.setLevel(level)
        root.addHandler(handler)
    old_level = root.level
    root.setLevel(min(old_level or logging.WARNING, level))
    try:
        yield
    finally:
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(old_level)


class _PlainFormatter(logging.Formatter):
    """Without the terminal colour codes RecBole puts into its messages (the log is a text file)."""

    def format(self, record: logging.LogRecord) -> str:
        return _COLOUR.sub("", super().format(record))


_COLOUR = re.compile(r"\x1b\[[0-9;]*m")


class _WarningsOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING


class _QuietFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {text}"


# ------------------------------------------------------------------------------------------------
# the header


def protocol_name(name: str | None) -> str:
    """``seen_removed`` -> ``seen items removed``."""
    return (name or "metrics").replace("seen_", "seen items ").replace("_", " ")


def header(config, run_dir: str) -> None:
    say(f"{config['model']} on {config['dataset']}; run folder {run_dir} (full config and log: run.log)")


def header_data(data) -> None:
    say(f"data: {data.user_num - 1:,} users, {data.item_num - 1:,} items, {data.inter_num:,} interactions")


def header_model(config, net, threads: int) -> None:
    params = sum(p.numel() for p in net.parameters() if p.requires_grad)
    from recbole_sae import protocol

    plan = (
        f"up to {config['epochs']} epochs, early stop after {config['stopping_step']} validations "
        f"without a better {config['valid_metric']} ({protocol_name(protocol.headline(config))})"
    )
    say(
        f"model: {params:,} trainable parameters; device {config['device']}, {threads} torch "
        f"thread{'s' if threads != 1 else ''}; {plan}"
    )


# ------------------------------------------------------------------------------------------------
# epochs


class EpochWatch:
    """Wraps a trainer's ``_train_epoch``, ``_valid_epoch`` and ``evaluate``: records each training
    epoch's seconds and each validation's score (the result and :mod:`recbole_sae.resume` read
    them), prints one line per epoch, and progress lines inside long epochs and evaluations."""

    def __init__(self, trainer, config, splits: dict | None = None):
        self.trainer, self.config = trainer, config
        self.seconds: list[float] = []
        self.scores: list[float] = []
        self.epochs = int(config["epochs"])
        self.eval_step = int(config["eval_step"] or 0)
        self.bigger = config["valid_metric_bigger"] is not False
        self.metric = str(config["valid_metric"]).lower()
        self.splits = {id(data): name for name, data in (splits or {}).items()}
        self._pending = None  # (epoch_idx, loss, seconds) of a training epoch not printed yet
        self._valid_seconds: list[float] = []
        self._eval_progress = None
        self._wrap()

    def _wrap(self) -> None:
        trainer = self.trainer
        self._train, self._valid, self._evaluate = trainer._train_epoch, trainer._valid_epoch, trainer.evaluate
        self._counts_batches = is_epoch_trainer(trainer)  # its _train_epoch calls loss_func once per batch
        trainer._train_epoch, trainer._valid_epoch, trainer.evaluate = self.train_epoch, self.valid_epoch, self.evaluate
        if self._counts_batches:
            trainer._full_sort_batch_eval = self._ticking(trainer._full_sort_batch_eval)
            trainer._neg_sample_batch_eval = self._ticking(trainer._neg_sample_batch_eval)

    def _batches(self, train_data) -> int | None:
        try:
            return int(run_view(self.trainer).batches_per_epoch(train_data))
        except TypeError:
            return None

    def _run_left(self, epoch_idx: int, meter: Progress, epoch_eta: float) -> str:
        """The ETA of the run if it goes to its last epoch (the first epoch estimates from its own pace)."""
        later = self.epochs - epoch_idx - 1
        per_epoch = self._epoch_cost() or (meter.clock() - meter.start + epoch_eta)
        if later <= 0:
            return ""
        return f"; run at most {duration(epoch_eta + per_epoch * later)} more ({self.epochs} epochs)"

    def _epoch_cost(self) -> float | None:
        """Seconds of a training epoch plus its share of validation, over the epochs so far."""
        if not self.seconds:
            return None
        valid = sum(self._valid_seconds) / len(self.seconds)
        return sum(self.seconds) / len(self.seconds) + valid

    def train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False, **kwargs):
        start = time.perf_counter()
        if self._counts_batches:
            # after the first epoch its line says how long one takes: fewer progress lines
            meter = Progress(
                f"epoch {epoch_idx + 1}/{self.epochs}",
                self._batches(train_data),
                "batches",
                step=0.1 if not self.seconds else 0.25,
                note=lambda eta: self._run_left(epoch_idx, meter, eta),
            )
            base = loss_func or self.trainer.model.calculate_loss

            def counted(interaction):
                out = base(interaction)
                meter.update()
                return out

            kwargs["loss_func"] = counted
        elif loss_func is not None:
            kwargs["loss_func"] = loss_func
        loss = self._train(train_data, epoch_idx, show_progress=show_progress, **kwargs)
        self.seconds.append(time.perf_counter() - start)
        self._pending = (epoch_idx, loss, self.seconds[-1])
        if self.eval_step <= 0 or (epoch_idx + 1) % self.eval_step:
            self._epoch_line(None)
        return loss

    def valid_epoch(self, *args, **kwargs):
        start = time.perf_counter()
        out = self._valid(*args, **kwargs)
        self._valid_seconds.append(time.perf_counter() - start)
        score = float(out[0])
        best = not self.scores or (score > max(self.scores) if self.bigger else score < min(self.scores))
        self.scores.append(score)
        self._epoch_line((score, best, self._valid_seconds[-1]))
        return out

    def _epoch_line(self, valid) -> None:
        pending, self._pending = self._pending, None
        if pending is None:  # a validation outside the epochs (weights loaded)
            if valid is not None:
                say(f"loaded weights: valid {self.metric} {valid[0]:.4f}")
            return
        epoch_idx, loss, seconds = pending
        text = (
            f"epoch {epoch_idx + 1:>{len(str(self.epochs))}}/{self.epochs}  train loss {_loss(loss)}  {seconds:.1f} s"
        )
        if valid is not None:
            score, best, valid_seconds = valid
            text += f"  valid {self.metric} {score:.4f}{' *' if best else '  '} ({valid_seconds:.1f} s)"
        cost = self._epoch_cost()
        left = cost * (self.epochs - epoch_idx - 1) if cost is not None else 0.0
        if left >= 1:
            text += f"  at most {duration(left)} left"
        say(text)

    def evaluate(self, eval_data, *args, **kwargs):
        name = self.splits.get(id(eval_data), "evaluation")
        try:
            total = len(eval_data)
        except TypeError:
            total = None
        self._eval_progress = Progress(name, total, "batches")
        try:
            result = self._evaluate(eval_data, *args, **kwargs)
            self._eval_progress.finish()
            return result
        finally:
            self._eval_progress = None

    def _ticking(self, batch_eval):
        def ticking(*args, **kwargs):
            out = batch_eval(*args, **kwargs)
            if self._eval_progress is not None:
                self._eval_progress.update()
            return out

        return ticking


def _loss(loss) -> str:
    if isinstance(loss, tuple):
        return "(" + ", ".join(f"{float(x):.4f}" for x in loss) + ")"
    return f"{float(loss):.4f}"


# ------------------------------------------------------------------------------------------------
# the end: a summary for people, one RESULT line for programs


def cutoff_metrics(metrics: dict | None, metric: str) -> dict | None:
    """The metrics at the cut-off of ``metric`` (``ndcg@10`` -> every ``*@10``); all when none match."""
    if not isinstance(metrics, dict) or "@" not in metric:
        return metrics
    suffix = "@" + metric.split("@", 1)[1]
    kept = {k: v for k, v in metrics.items() if str(k).endswith(suffix)}
    return kept or metrics


CORE_KEYS = (
    "model",
    "dataset",
    "protocol",
    "best_valid",
    "test",
    "target_seen_before",
    "best_epoch",
    "epochs_run",
    "seconds_per_epoch",
    "seconds",
    "device",
    "seed",
    "resumed_at_epoch",
    "run_dir",
)


FILE_ONLY_KEYS = ("curve",)  # in result.json and sweep records, not on the RESULT line


def compact_result(result: dict, metric: str, summaries: dict | None = None, result_file: str | None = None) -> dict:
    """The RESULT line's record: the run's facts, the metrics at the cut-off of ``metric`` under both
    protocols, and per model report (``sae``, ``intents``, ...) its summary from ``summaries`` or its
    top-level numbers and words; ``result_file`` holds everything."""
    from recbole_sae import protocol

    out = {}
    for key, value in result.items():
        if key in FILE_ONLY_KEYS:
            continue
        if key in ("best_valid", "test"):
            out[key] = cutoff_metrics(value, metric)
        elif key in CORE_KEYS:
            out[key] = value
        elif key in (protocol.SEEN_KEPT, protocol.SEEN_REMOVED) and isinstance(value, dict):
            out[key] = {split: cutoff_metrics(m, metric) for split, m in value.items()}
        elif summaries and key in summaries:
            out[key] = summaries[key]
        elif isinstance(value, dict):
            out[key] = {k: v for k, v in value.items() if isinstance(v, (int, float, str, bool)) or v is None}
        else:
            out[key] = value
    if result_file:
        out["result_file"] = result_file
    return out


def summary(compact: dict, metric: str) -> None:
    """The end of the quiet console: best epoch, headline metrics of both protocols, the reports."""
    from recbole_sae import protocol

    epochs = compact.get("epochs_run")
    best = compact.get("best_epoch")
    said = f"best epoch {best + 1} of {epochs}" if best is not None else "no training epoch"
    say(f"done in {duration(compact.get('seconds') or 0.0)}: {said}")
    metric = metric.lower()
    hit = "hit@" + metric.split("@", 1)[1] if "@" in metric else None
    head = compact.get("protocol")
    tables = [(head, compact)] + [
        (p, compact[p])
        for p in (protocol.SEEN_REMOVED, protocol.SEEN_KEPT)
        if p != head and isinstance(compact.get(p), dict)
    ]
    for name, holder in tables:
        parts = []
        for split, title in (("best_valid", "valid"), ("test", "test")):
            values = holder.get(split) or {}
            shown = [f"{m} {values[m]:.4f}" for m in (metric, hit) if m and m in values]
            parts.append(f"{title} " + " ".join(shown))
        label = protocol_name(name) + (" (headline)" if name == head else "")
        say(f"{label}: " + " | ".join(parts))
    for key, value in compact.items():
        if (
            key not in CORE_KEYS
            and key not in (protocol.SEEN_KEPT, protocol.SEEN_REMOVED, "result_file")
            and isinstance(value, dict)
        ):
            say(f"{key}: " + ", ".join(_flat(value)))
    say(f"run folder: {compact.get('run_dir')}")


def _flat(value: dict, prefix: str = "") -> list[str]:
    parts = []
    for key, item in value.items():
        if isinstance(item, dict):
            parts += _flat(item, f"{prefix}{key} ")
        elif isinstance(item, float):
            parts.append(f"{prefix}{key} {item:.4g}")
        elif not isinstance(item, (list, tuple)):
            parts.append(f"{prefix}{key} {item}")
    return parts
