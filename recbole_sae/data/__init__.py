"""Datasets: where they are found, item text, and the raw-Amazon converter."""

from recbole_sae.data.locate import DatasetNotFoundError, locate_dataset

__all__ = ["DatasetNotFoundError", "locate_dataset"]
