"""Exceptions the library raises for bad input; the CLI turns them into one-line messages."""

from __future__ import annotations

__all__ = ["CheckpointError", "DataError", "InputError", "TrainingError", "first_line"]


class InputError(ValueError):
    """Invalid tensors or arguments given to a library function (the message says which and why)."""


class CheckpointError(ValueError):
    """A file is not a usable checkpoint: missing, truncated, unsafe, or of the wrong architecture."""


class DataError(ValueError):
    """A dataset file or folder is missing, unreadable or not what it claims (the message names it)."""


class TrainingError(RuntimeError):
    """Training cannot start or go on (e.g. its run folder is in use, too many non-finite steps); the message
    says why and what to try."""


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
