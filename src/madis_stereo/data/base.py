"""The common shape of every stereo dataset: a list of frames (file paths), loaded on indexing.

A sample is a dict::

    {"left": uint8 HxWx3, "right": uint8 HxWx3,
     "disparity": float32 HxW (+inf = invalid) or None, "nonocc": bool HxW or None,
     "calib": dict (see read_calib) or None, "name": str}
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from madis_stereo.data.formats import read_calib, read_disparity, read_image, read_mask
from madis_stereo.errors import ConfigError, DataError

__all__ = ["Frame", "Sample", "StereoDataset", "load_frame", "sample_at"]

log = logging.getLogger(__name__)

Sample = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Frame:
    """The files of one stereo pair. ``nonocc_kind``: "mask255" (mask == 255, Middlebury/ETH3D) or
    "finite" (finite values of a disparity file, KITTI ``disp_noc``)."""

    name: str
    left: Path
    right: Path
    disparity: Path | None = None
    nonocc: Path | None = None
    nonocc_kind: str = "mask255"
    calib: Path | None = None


def load_frame(frame: Frame) -> Sample:
    """Read the files of ``frame`` into a sample dict, checking that all sizes agree."""
    left = read_image(frame.left)
    right = read_image(frame.right)
    if left.shape != right.shape:
        raise DataError(f"{frame.right}: size {right.shape[0]}x{right.shape[1]} (HxW) differs from the left image "
                        f"{frame.left} ({left.shape[0]}x{left.shape[1]})")
    disparity = read_disparity(frame.disparity) if frame.disparity is not None else None
    if disparity is not None and disparity.shape != left.shape[:2]:
        raise DataError(f"{frame.disparity}: disparity is {disparity.shape[0]}x{disparity.shape[1]} (HxW), "
                        f"the left image {frame.left} is {left.shape[0]}x{left.shape[1]}")
    nonocc = None
    if frame.nonocc is not None:
        if frame.nonocc_kind == "finite":  # KITTI with gt=noc: the mask is the GT file itself, read above
            same = frame.nonocc == frame.disparity and disparity is not None
            nonocc = np.isfinite(disparity if same else read_disparity(frame.nonocc))
        else:
            nonocc = read_mask(frame.nonocc) == 255
        if nonocc.shape != left.shape[:2]:
            raise DataError(f"{frame.nonocc}: mask is {nonocc.shape[0]}x{nonocc.shape[1]} (HxW), "
                            f"the left image {frame.left} is {left.shape[0]}x{left.shape[1]}")
    calib = read_calib(frame.calib) if frame.calib is not None else None
    return {"left": left, "right": right, "disparity": disparity, "nonocc": nonocc, "calib": calib,
            "name": frame.name}


class StereoDataset:
    """A list of :class:`Frame` with a human-readable account of what was found.

    Subclasses find their frames in ``__init__`` and call :meth:`_set_frames`. ``ds[i]`` returns a sample
    dict (see the module docstring); ``ds.describe()`` says what was found and what was missing.
    """

    title = "stereo dataset"
    has_gt = True

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else None
        self.frames: list[Frame] = []
        self.counts: dict[str, int] = {}
        self.notes: list[str] = []

    # -- discovery helpers ------------------------------------------------------------------------

    def _require_dir(self, path: Path, expected: str) -> Path:
        if not path.is_dir():
            what = "is a file, not a folder" if path.exists() else "folder not found"
            raise DataError(f"{path}: {what} (expected {expected})")
        return path

    def _set_frames(self, frames: Iterable[Frame], expected: str) -> None:
        """Keep the frames whose required files exist (others are noted), fail if none is left."""
        kept, skipped = [], []
        for frame in frames:
            missing = [p for p in (frame.left, frame.right, frame.disparity) if p is not None and not p.is_file()]
            (skipped if missing else kept).append((frame, missing))
        if skipped:
            example = skipped[0][1][0]
            message = f"skipped {len(skipped)} frame(s) with missing files, e.g. {example}"
            self.notes.append(message)
            log.warning("%s: %s", self.title, message)
        if not kept:
            where = self.root if self.root is not None else "?"
            raise DataError(f"{where}: no complete {self.title} frames found (expected {expected})")
        self.frames = [frame for frame, _ in kept]

    def _note(self, message: str) -> None:
        self.notes.append(message)
        log.info("%s: %s", self.title, message)

    # -- the dataset protocol ---------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.frames)

    def _frame(self, index: int) -> Frame:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {self.title} with {len(self)} frames")
        return self.frames[index]

    def __getitem__(self, index: int) -> Sample:
        return load_frame(self._frame(index))

    def get(self, index: int, epoch: int = 0) -> Sample:
        """Sample ``index`` for training epoch ``epoch`` (file datasets ignore the epoch).

        Training uses neither the non-occluded mask nor the calibration, so they are not read (both None).
        """
        return load_frame(dataclasses.replace(self._frame(index), nonocc=None, calib=None))

    def describe(self) -> str:
        """What was found (counts per split/subset) and what was missing or skipped."""
        where = f" at {self.root}" if self.root is not None else ""
        parts = ", ".join(f"{key}: {value}" for key, value in self.counts.items())
        gt = "with ground truth" if self.has_gt else "without ground truth"
        lines = [f"{self.title}{where}: {len(self)} frames {gt}" + (f" ({parts})" if parts else "")]
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {len(self)} frames>"


def check_choice(value: str, choices: Sequence[str], key: str) -> str:
    """Return ``value`` if it is one of ``choices``, else raise ConfigError naming ``key``."""
    if value not in choices:
        raise ConfigError(f"{key}: '{value}' is not one of {', '.join(choices)}")
    return value


def filter_names(names: list[str], patterns: Sequence[str] | None, key: str = "scenes") -> list[str]:
    """Keep the names matching any of the fnmatch ``patterns`` (None keeps all); an unmatched pattern fails."""
    if patterns is None:
        return names
    kept = []
    for pattern in patterns:
        matched = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not matched:
            raise DataError(f"{key}: '{pattern}' matches none of the {len(names)} found ({', '.join(names[:8])}...)")
        kept += [n for n in matched if n not in kept]
    return sorted(kept)


def sample_at(dataset: Any, index: int, epoch: int) -> Sample:
    """``dataset.get(index, epoch)`` (a training sample), or ``dataset[index]`` for datasets without ``get``."""
    get = getattr(dataset, "get", None)
    return get(index, epoch) if get is not None else dataset[index]
