"""Exceptions the library raises for bad input; the CLI turns them into one-line messages."""

from __future__ import annotations

__all__ = ["CheckpointError", "DataError", "DownloadError", "InputError", "first_line"]


class InputError(ValueError):
    """Invalid tensors or arguments given to a library function (the message says which and why)."""


class CheckpointError(ValueError):
    """A file is not a usable checkpoint: missing, truncated, unsafe, or of the wrong architecture."""


class DownloadError(CheckpointError):
    """A checkpoint could not be fetched: unreachable host, HTTP error, offline mode, size or checksum mismatch."""


class DataError(ValueError):
    """A dataset file or folder is missing, unreadable or not what it claims (the message names it)."""


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
