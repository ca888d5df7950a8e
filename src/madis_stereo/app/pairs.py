"""Stereo pairs from command-line arguments: files, folders or glob patterns, given as LEFT RIGHT couples.

- ``left.png right.png``: one pair.
- ``left_dir right_dir`` (or two globs, e.g. ``'cam0/*.png' 'cam1/*.png'``): the images of both sides are
  matched by file name when both sides hold the same names, otherwise by sorted order when both sides hold
  as many images (``im0_001.png`` with ``im1_001.png``).

Each pair gets a ``name`` for its output files: the left file's stem, made unique with the parent folder
(``Motorcycle_im0``) and then a counter when several pairs would share it.
"""

from __future__ import annotations

import glob
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from madis_stereo.errors import InputError

__all__ = ["IMAGE_SUFFIXES", "StereoPair", "find_pairs"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".webp")


@dataclass(frozen=True)
class StereoPair:
    """Two image paths and the name of the pair's output files."""

    left: Path
    right: Path
    name: str


def _is_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _expand(spec: str) -> tuple[str, list[Path]]:
    """('file' | 'many', paths) for one argument."""
    if _is_glob(spec):
        paths = sorted(Path(p) for p in glob.glob(spec) if Path(p).is_file())
        if not paths:
            raise InputError(f"no file matches the pattern {spec!r}")
        return "many", paths
    path = Path(spec)
    if path.is_dir():
        paths = _images_in(path)
        if not paths:
            raise InputError(f"folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        return "many", paths
    # A missing file is reported when it is read, so that the other pairs are still processed.
    return "file", [path]


def _match(left: list[Path], right: list[Path], left_spec: str, right_spec: str) -> list[tuple[Path, Path]]:
    left_names = [p.name for p in left]
    right_names = {p.name: p for p in right}
    if len(set(left_names)) == len(left) and set(left_names) == set(right_names):
        return [(p, right_names[p.name]) for p in left]
    if len(left) == len(right):
        return list(zip(left, right))
    raise InputError(
        f"cannot pair {left_spec!r} ({len(left)} images) with {right_spec!r} ({len(right)} images): "
        "the file names differ and the counts do not match"
    )


def _unique_names(pairs: list[tuple[Path, Path]]) -> list[str]:
    names = [p.stem for p, _ in pairs]
    counts = Counter(names)
    names = [f"{p.parent.name}_{p.stem}" if counts[n] > 1 and p.parent.name else n for n, (p, _) in zip(names, pairs)]
    counts = Counter(names)
    seen: Counter[str] = Counter()
    out = []
    for n in names:
        seen[n] += 1
        out.append(f"{n}_{seen[n]}" if counts[n] > 1 else n)
    return out


def find_pairs(specs: Sequence[str]) -> list[StereoPair]:
    """Stereo pairs from LEFT RIGHT [LEFT RIGHT ...] arguments (files, folders or glob patterns)."""
    if not specs or len(specs) % 2:
        raise InputError(f"expected LEFT RIGHT couples of images, folders or patterns; got {len(specs)} argument(s)")
    matched: list[tuple[Path, Path]] = []
    for left_spec, right_spec in zip(specs[0::2], specs[1::2]):
        left_kind, left = _expand(left_spec)
        right_kind, right = _expand(right_spec)
        if left_kind != right_kind:
            raise InputError(f"cannot pair {left_spec!r} with {right_spec!r}: give two files, two folders "
                             "or two patterns")
        matched += _match(left, right, left_spec, right_spec)
    return [StereoPair(left, right, name) for (left, right), name in zip(matched, _unique_names(matched))]
