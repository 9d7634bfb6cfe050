"""Exceptions raised by bayesclv.

Every error a user can cause is a subclass of :class:`BayesCLVError` (itself a
``ValueError``), and its message names the column, how many rows are affected, the
first few of them, and what to do.
"""

from __future__ import annotations

__all__ = [
    "BayesCLVError",
    "DataValidationError",
    "ModelSpecificationError",
    "ConvergenceError",
    "SavedModelError",
    "OutputError",
    "NumericalError",
]


class BayesCLVError(ValueError):
    """Base class of every error bayesclv raises about user input."""


class DataValidationError(BayesCLVError):
    """A transaction log or customer summary is not usable as given."""


class ModelSpecificationError(BayesCLVError):
    """A model was asked for with data, priors or options that do not fit together."""


class ConvergenceError(BayesCLVError):
    """A fit failed its convergence checks and the caller did not allow proceeding."""


class SavedModelError(BayesCLVError):
    """A saved model file is unreadable, corrupt, edited, or from an incompatible version."""


class OutputError(BayesCLVError):
    """An output cannot be written as asked: the file exists (and overwriting was not
    asked for), its folder is missing or read-only, the disk is full, or the format
    cannot hold the table (e.g. more rows than an .xlsx sheet)."""


class NumericalError(BayesCLVError):
    """A computed number cannot be trusted (non-finite, or outside its physical bounds):
    raised instead of returning or exporting it, naming the customers and draws."""


def describe_rows(labels, limit: int = 5) -> str:
    """Format the first few offending row labels for an error message."""
    # NumPy scalars print as np.int64(7) under NumPy 2: show the plain value.
    labels = [x.item() if hasattr(x, "item") and hasattr(x, "dtype") else x for x in labels]
    shown = ", ".join(repr(x) for x in labels[:limit])
    more = f" (and {len(labels) - limit} more)" if len(labels) > limit else ""
    return f"{shown}{more}"
