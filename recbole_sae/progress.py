"""Progress lines for long stages: the total, the share done, the time spent and an ETA, at a steady rate.

One helper for every stage that can take more than a few seconds: SAERec's text embedding, its
intent SAE and vocabulary, SASRecSAE's SAE stage, training epochs and evaluation. A stage that ends
within ``every`` seconds prints nothing; a longer one prints a line at most every ``every`` seconds
and at most every ``step`` of the stage (10%: about ten lines however long it runs), and a last line
when it is done::

    SAE stage: 1,200/6,000 steps (20%), 2:03 elapsed, ETA 8:12
    SAE stage: 6,000 steps done in 10:15

The lines go to the logger ``recbole_sae.progress``: the run's ``run.log`` and, in the default quiet
console, the terminal. ``every`` comes from the run's ``progress_seconds`` (:func:`configure`).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Callable, Optional

LOGGER_NAME = "recbole_sae.progress"
DEFAULT_EVERY = 10.0  # seconds between two lines (and before the first)
DEFAULT_STEP = 0.1  # share of the stage between two lines

_settings = {"every": DEFAULT_EVERY}


def configure(every: Optional[float]) -> None:
    """Seconds between two progress lines of every later stage (None: the default, 10 s)."""
    _settings["every"] = DEFAULT_EVERY if every is None else max(0.0, float(every))


def interval() -> float:
    return _settings["every"]


def duration(seconds: float) -> str:
    """``42 s``, ``3:05`` (minutes:seconds) or ``1:02:03`` (hours:minutes:seconds)."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(round(max(0.0, seconds)))
    if seconds < 60:
        return f"{seconds} s"
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """Progress of one stage of ``total`` units; call it with the units done so far (or :meth:`update`).

    ``note``: a function of the stage's ETA in seconds giving more text for each line (e.g. the ETA of
    the whole run). ``every``/``step``: seconds and share of the stage between two lines.
    Use as a context manager, or call :meth:`finish` at the end of the stage.
    """

    def __init__(
        self,
        label: str,
        total: Optional[int] = None,
        unit: str = "steps",
        every: Optional[float] = None,
        step: float = DEFAULT_STEP,
        note: Optional[Callable[[float], str]] = None,
        logger: Optional[logging.Logger] = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.label, self.total, self.unit, self.note = label, total, unit, note
        self.every = interval() if every is None else float(every)
        self.step = float(step)
        self.logger = logger or logging.getLogger(LOGGER_NAME)
        self.clock = clock
        self.start = clock()
        self.done = 0
        self.lines = 0
        self._last_time, self._last_done = self.start, 0
        self._finished = False

    def __call__(self, done: int, total: Optional[int] = None) -> None:
        if total is not None:
            self.total = int(total)
        self.done = int(done)
        now = self.clock()
        if self.total and self.done >= self.total:
            return
        if now - self._last_time < self.every:
            return
        if self.total and self.done - self._last_done < self.step * self.total:
            return
        self._last_time, self._last_done = now, self.done
        self._emit(self.line(now))

    def update(self, n: int = 1) -> None:
        self(self.done + n)

    def eta(self, now: Optional[float] = None) -> float:
        """Seconds left at the rate so far (inf before the first unit)."""
        elapsed = (self.clock() if now is None else now) - self.start
        if not self.total or self.done <= 0:
            return math.inf
        return elapsed / self.done * max(0, self.total - self.done)

    def line(self, now: Optional[float] = None) -> str:
        now = self.clock() if now is None else now
        elapsed = now - self.start
        if not self.total:
            return f"{self.label}: {self.done:,} {self.unit}, {duration(elapsed)} elapsed"
        share = min(1.0, self.done / self.total)
        eta = self.eta(now)
        text = (
            f"{self.label}: {self.done:,}/{self.total:,} {self.unit} ({share:.0%}), "
            f"{duration(elapsed)} elapsed, ETA {duration(eta)}"
        )
        return text + (self.note(eta) if self.note else "")

    def finish(self) -> float:
        """End of the stage: a last line when the stage printed any or lasted ``every`` seconds; its seconds."""
        elapsed = self.clock() - self.start
        if not self._finished and (self.lines or (elapsed >= self.every and self.every > 0)):
            count = f"{self.total or self.done:,} {self.unit}"
            self._emit(f"{self.label}: {count} done in {duration(elapsed)}")
        self._finished = True
        return elapsed

    def _emit(self, text: str) -> None:
        self.lines += 1
        self.logger.info(text)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, kind, value, tb) -> None:
        if kind is None:
            self.finish()
