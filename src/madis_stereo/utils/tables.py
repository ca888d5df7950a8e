"""Plain-text tables: metrics, checkpoints, demo scores, the training console's validation table."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["format_table"]


def _cell(value: Any, float_format: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, (float, np.floating)):
        return format(float(value), float_format) if math.isfinite(value) else str(float(value))
    return str(value)


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, *,
                 float_format: str = ".2f") -> str:
    """Rows of dicts as an aligned plain-text table (header, dashes, one line per row).

    ``columns`` picks and orders the keys (default: every key, in order of first appearance). Floats use
    ``float_format``; a missing key or None shows ``-``. Numbers are right-aligned, text left-aligned.
    """
    if columns is None:
        columns = list(dict.fromkeys(k for row in rows for k in row))
    cells = [[_cell(row.get(c), float_format) for c in columns] for row in rows]
    numeric = [
        all(isinstance(row.get(c), (int, float, np.number)) or row.get(c) is None for row in rows)
        for c in columns
    ]
    widths = [max([len(str(c))] + [len(line[j]) for line in cells]) for j, c in enumerate(columns)]

    def fmt(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)]
        return "  ".join(parts).rstrip()

    lines = [fmt([str(c) for c in columns]), "  ".join("-" * w for w in widths)]
    lines += [fmt(line) for line in cells]
    return "\n".join(lines)
