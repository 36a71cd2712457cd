"""Errors caused by the user's input. The CLI prints their message (no traceback) and exits with 2."""


class RecboleSAEError(Exception):
    """Base class: bad input that the message tells how to fix."""


class UnknownModelError(RecboleSAEError, ValueError):
    """A model name that is neither a plugin model nor a RecBole model."""


class DatasetNotFoundError(RecboleSAEError, FileNotFoundError):
    """No folder with ``<dataset>.inter`` was found."""


class CheckpointMismatchError(RecboleSAEError, ValueError):
    """A checkpoint that is missing, unreadable or belongs to another model."""


class ConfigError(RecboleSAEError, ValueError):
    """A config value that cannot work (missing file, out-of-range value, missing item text)."""


class TrainingDivergedError(RecboleSAEError, FloatingPointError):
    """A loss that became NaN or infinite while training (the model's, or an SAE's)."""


class FinishedRunError(ConfigError):
    """``run_name`` names the folder of a run that finished (its ``result.json`` is there)."""

    def __init__(self, message: str, run_dir: str):
        super().__init__(message)
        self.run_dir = run_dir
