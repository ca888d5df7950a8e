"""Every exception type the package raises on purpose; the CLI turns them into one-line messages.

All derive from :class:`MadisStereoError`, and each also from the built-in type it refines, so
``except ValueError`` (or ``RuntimeError`` for :class:`TrainingError`) keeps working.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DownloadError",
    "InputError",
    "MadisStereoError",
    "TrainingError",
    "TrainingInterrupted",
    "first_line",
    "resume_hint",
]


class MadisStereoError(Exception):
    """Base of every error madis-stereo raises on purpose (the message says what and where)."""


class InputError(MadisStereoError, ValueError):
    """Invalid tensors or arguments given to a library function (the message says which and why)."""


class CheckpointError(MadisStereoError, ValueError):
    """A file is not a usable checkpoint: missing, truncated, unsafe, or of the wrong architecture."""


class DownloadError(CheckpointError):
    """A checkpoint could not be fetched: unreachable host, HTTP error, offline mode, size or checksum mismatch."""


class DataError(MadisStereoError, ValueError):
    """A dataset file or folder is missing, unreadable or not what it claims (the message names it)."""


class ConfigError(MadisStereoError, ValueError):
    """A configuration value or key is invalid (the message names it)."""


class TrainingError(MadisStereoError, RuntimeError):
    """Training cannot start or go on (e.g. its run folder is in use, too many non-finite steps); the message
    says why and what to try."""


class TrainingInterrupted(TrainingError):
    """Training stopped on a signal after saving a checkpoint; ``--resume run_dir`` continues it exactly."""

    def __init__(self, run_dir: object, step: int, signal_name: str) -> None:
        self.run_dir, self.step, self.signal_name = run_dir, step, signal_name
        super().__init__(f"stopped by {signal_name} at step {step} (checkpoint saved); {resume_hint(run_dir)}")


def resume_hint(run_dir: object) -> str:
    """How to continue the training run in ``run_dir``."""
    return f"resume with: madis-stereo train --resume {run_dir}"


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
