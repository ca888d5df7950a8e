"""Stereo pairs from command-line arguments: files, folders or glob patterns, given as LEFT RIGHT couples.

- ``left.png right.png``: one pair.
- ``left_dir right_dir`` (or two globs, e.g. ``'cam0/*.png' 'cam1/*.png'``): the images of both sides are
  matched by file name (``left/0001.png`` with ``right/0001.png``); files without a partner are named in a
  warning and skipped. Without common names, by a left/right naming convention (below); otherwise by sorted
  order when both sides hold as many images (``im0_001.png`` with ``im1_001.png``).
- ``DIR DIR`` (one folder, or one pattern, holding both views): split by a naming convention:
  ``*_left``/``*_right`` (also ``left_*``/``right_*``, ``-left``, ``.left``), ``*_L``/``*_R`` and
  ``im0``/``im1`` (Middlebury, ETH3D), as whole words of the file stem. An image is never paired with itself
  silently: the same folder without such names is an error, the same file twice a warning.

Each pair gets a ``name`` for its output files: the left file's stem, made unique with the parent folder
(``Motorcycle_im0``) and then a counter when several pairs would share it.
"""

from __future__ import annotations

import glob
import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from madis_stereo.errors import InputError

__all__ = ["IMAGE_SUFFIXES", "StereoPair", "find_pairs", "side_key"]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".webp")

# Left/right naming conventions, as whole words of a file stem (words are split by _ - . or a space).
_CONVENTIONS = (("left", "right"), ("l", "r"), ("im0", "im1"))
_WORD = re.compile(r"(?<![^_\-. ])(left|right|l|r|im0|im1)(?![^_\-. ])", re.IGNORECASE)
_SHOWN = 4  # unmatched files named in a warning


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


def side_key(stem: str, convention: tuple[str, str]) -> tuple[str, int] | None:
    """(the stem with its side word replaced by ``*``, 0 = left / 1 = right) under ``convention``, or None.

    ``side_key("desk_left", ("left", "right")) == ("desk_*", 0)``; ``_L``/``_R`` count only as upper or
    lower case single letters between separators (``scan_L``), never inside words (``Lamp``).
    """
    found = [m for m in _WORD.finditer(stem) if m.group(1).lower() in convention]
    if len(found) != 1:
        return None
    m = found[0]
    return stem[: m.start()] + "*" + stem[m.end() :], convention.index(m.group(1).lower())


def _by_convention(left: list[Path], right: list[Path]) -> tuple[tuple[str, str], list[tuple[Path, Path]]]:
    """The convention that pairs the most files (left files on side 0, right files on side 1) and its pairs.

    Files pair when their stems agree outside the side word (and, within one folder list, their folder and
    suffix agree too)."""
    same = left is right
    best: tuple[tuple[str, str], list[tuple[Path, Path]]] = (_CONVENTIONS[0], [])
    for convention in _CONVENTIONS:
        keyed: tuple[dict, dict] = ({}, {})
        for side, files in enumerate((left, right)):
            for path in files:
                key = side_key(path.stem, convention)
                if key is not None and key[1] == side:
                    keyed[side][(key[0], str(path.parent), path.suffix.lower()) if same else key[0]] = path
        pairs = [(path, keyed[1][k]) for k, path in keyed[0].items() if k in keyed[1]]
        if len(pairs) > len(best[1]):
            best = (convention, pairs)
    return best


def _warn_unmatched(side: str, spec: str, files: list[Path], used: set[Path]) -> None:
    extra = [p for p in files if p not in used]
    if extra:
        shown = ", ".join(str(p) for p in extra[:_SHOWN]) + (", ..." if len(extra) > _SHOWN else "")
        log.warning("%s %r: %d image(s) without a partner, skipped: %s", side, spec, len(extra), shown)


def _match(left: list[Path], right: list[Path], left_spec: str, right_spec: str) -> list[tuple[Path, Path]]:
    if {p.resolve() for p in left} == {p.resolve() for p in right}:  # one folder (or pattern) holds both views
        convention, pairs = _by_convention(left, left)
        if not pairs:
            raise InputError(
                f"{left_spec!r} is both LEFT and RIGHT, and its {len(left)} image(s) follow no left/right naming "
                "convention (*_left/*_right, *_L/*_R, left/right, im0/im1): give the left and right images "
                "as two folders or patterns")
        used = {p for pair in pairs for p in pair}
        _warn_unmatched("LEFT and RIGHT", left_spec, left, used)
        log.info("%s: %d pair(s) by their %s/%s names", left_spec, len(pairs), *convention)
        return pairs
    right_by_name = {p.name: p for p in right}
    if len({p.name for p in left}) == len(left) and set(right_by_name) & {p.name for p in left}:
        pairs = [(p, right_by_name[p.name]) for p in left if p.name in right_by_name]
    else:
        pairs = _by_convention(left, right)[1]
    if pairs:
        used = {p for pair in pairs for p in pair}
        _warn_unmatched("LEFT", left_spec, left, used)
        _warn_unmatched("RIGHT", right_spec, right, used)
        return pairs
    if len(left) == len(right):
        log.info("pairing %r with %r by sorted order (no common file names)", left_spec, right_spec)
        return list(zip(left, right))
    raise InputError(
        f"cannot pair {left_spec!r} ({len(left)} images) with {right_spec!r} ({len(right)} images): "
        "no common file names, no left/right naming convention, and the counts differ"
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
        if left_kind == "file":
            if left[0].resolve() == right[0].resolve():
                log.warning("%s is given as both the left and the right image: its disparity will be 0", left[0])
            matched.append((left[0], right[0]))
        else:
            matched += _match(left, right, left_spec, right_spec)
    return [StereoPair(left, right, name) for (left, right), name in zip(matched, _unique_names(matched))]
