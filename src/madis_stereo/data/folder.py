"""Users' own stereo data: left, right and (optional) disparity files matched by glob patterns.

Each pattern is relative to ``root`` (``**`` recurses). A file's *key* is the part of its path matched by
the pattern's wildcards, i.e. the path without the pattern's literal prefix and suffix: with
``left: "left/*.png"`` the key of ``left/0001.png`` is ``0001`` (the file stem); with
``left: "scenes/*/im0.png"`` the key of ``scenes/bike/im0.png`` is ``bike``. Left, right and disparity
files with the same key form a frame; unmatched files are reported by ``describe()`` and logged.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
from pathlib import Path

from madis_stereo.data.base import Frame, StereoDataset
from madis_stereo.errors import DataError

__all__ = ["FolderStereo", "FolderSpec"]

_WILDCARD = re.compile(r"[*?\[]")
_SHOWN = 3  # unmatched files named in a note


@dataclasses.dataclass(frozen=True)
class FolderSpec:
    root: str
    left: str = "left/*.png"
    right: str = "right/*.png"
    disparity: str | None = None
    calib: str | None = None


def match_files(root: Path, pattern: str) -> dict[str, Path]:
    """Files under ``root`` matching ``pattern``, keyed by the part matched by the wildcards."""
    full = os.path.join(str(root), pattern)
    wild = [m.start() for m in _WILDCARD.finditer(full)]
    if not wild:
        return {"": Path(full)} if os.path.isfile(full) else {}
    prefix = full[: wild[0]]
    last = max(full.rfind("*"), full.rfind("?"), full.rfind("]"))
    suffix = full[last + 1 :]
    found = {}
    for path in glob.glob(full, recursive=True):
        if os.path.isfile(path):
            found[path[len(prefix) : len(path) - len(suffix)]] = Path(path)
    return dict(sorted(found.items()))


class FolderStereo(StereoDataset):
    """Stereo pairs from any folder: ``left``/``right``/``disparity`` glob patterns relative to ``root``.

    Disparity files may be PFM, 16-bit PNG (KITTI convention: value / 256, 0 = invalid) or NPY
    (non-finite = invalid); without ``disparity`` the samples have ``disparity=None``. ``calib``: one
    optional Middlebury-style calib.txt (relative to ``root``) shared by all pairs.
    """

    Spec = FolderSpec

    def __init__(self, root: str | Path, left: str = "left/*.png", right: str = "right/*.png",
                 disparity: str | None = None, calib: str | None = None) -> None:
        super().__init__(root)
        self.title = "folder"
        self.has_gt = disparity is not None
        self._require_dir(self.root, f"a folder with stereo pairs matching {left!r} and {right!r}")
        lefts, rights = match_files(self.root, left), match_files(self.root, right)
        disps = match_files(self.root, disparity) if disparity is not None else None
        for name, pattern, files in (("left", left, lefts), ("right", right, rights), ("disparity", disparity, disps)):
            if files is not None and not files:
                self._note(f"no {name} files match {self.root / str(pattern)}")
        calib_path = self.root / calib if calib is not None else None
        if calib_path is not None and not calib_path.is_file():
            raise DataError(f"{calib_path}: calibration file not found (expected a Middlebury-style calib.txt)")
        keys = [k for k in lefts if k in rights and (disps is None or k in disps)]
        self._report("left", lefts, keys)
        self._report("right", rights, keys)
        if disps is not None:
            self._report("disparity", disps, keys)
        frames = [Frame(name=k or lefts[k].stem, left=lefts[k], right=rights[k],
                        disparity=disps[k] if disps is not None else None, calib=calib_path) for k in keys]
        self.counts = {"pairs": len(frames)}
        self._set_frames(frames, f"files matching {left!r} and {right!r}" +
                         (f" and {disparity!r}" if disparity else "") + " with the same names")

    def _report(self, name: str, files: dict[str, Path], keys: list[str]) -> None:
        matched = set(keys)
        unmatched = [path for key, path in files.items() if key not in matched]
        if unmatched:
            shown = ", ".join(str(p) for p in unmatched[:_SHOWN]) + (", ..." if len(unmatched) > _SHOWN else "")
            self._note(f"{len(unmatched)} {name} file(s) without a match: {shown}")

