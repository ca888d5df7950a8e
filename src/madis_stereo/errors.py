"""Exceptions the library raises for bad input; the CLI turns them into one-line messages."""

from __future__ import annotations

__all__ = ["CheckpointError", "DataError", "InputError"]


class InputError(ValueError):
    """Invalid tensors or arguments given to a library function (the message says which and why)."""


class CheckpointError(ValueError):
    """A file is not a usable checkpoint: missing, truncated, unsafe, or of the wrong architecture."""


class DataError(ValueError):
    """A dataset file or folder is missing, unreadable or not what it claims (the message names it)."""
