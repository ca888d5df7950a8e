"""Disparity colouring, error maps and image sheets (one colour-map implementation for the project)."""

from __future__ import annotations

import numpy as np

__all__ = ["colorize", "colorize_disparity"]

# Anchor colours of a perceptually ordered "turbo"-like ramp (dark blue -> cyan -> yellow -> dark red),
# interpolated linearly; written out here so that colours do not depend on a plotting library version.
_RAMP = np.array(
    [
        [48, 18, 59], [70, 107, 227], [40, 187, 236], [50, 241, 152], [164, 252, 60],
        [238, 207, 58], [251, 128, 34], [209, 49, 6], [122, 4, 3],
    ],
    dtype=np.float32,
)


def colorize(values: np.ndarray, vmin: float | None = None, vmax: float | None = None,
             invalid_color: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """Map an HxW float array to HxWx3 uint8 colours; non-finite values get ``invalid_color``.

    ``vmin``/``vmax`` fix the range (so a video does not flicker); by default the 1st and 99th
    percentiles of the finite values are used.
    """
    values = np.asarray(values, dtype=np.float32)
    if values.ndim != 2:
        raise ValueError(f"colorize expects an HxW array, got shape {values.shape}")
    finite = np.isfinite(values)
    if vmin is None or vmax is None:
        if finite.any():
            lo, hi = np.percentile(values[finite], [1, 99])
        else:
            lo, hi = 0.0, 1.0
        vmin = float(lo) if vmin is None else vmin
        vmax = float(hi) if vmax is None else vmax
    span = max(float(vmax) - float(vmin), 1e-6)
    t = np.clip((np.where(finite, values, vmin) - vmin) / span, 0.0, 1.0) * (len(_RAMP) - 1)
    i0 = np.floor(t).astype(np.int64)
    i1 = np.minimum(i0 + 1, len(_RAMP) - 1)
    w = (t - i0)[..., None]
    rgb = _RAMP[i0] * (1 - w) + _RAMP[i1] * w
    rgb[~finite] = invalid_color
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def colorize_disparity(disparity: np.ndarray, vmin: float | None = 0.0, vmax: float | None = None) -> np.ndarray:
    """Colour a disparity map (near = warm); invalid (non-finite) pixels are black."""
    return colorize(disparity, vmin=vmin, vmax=vmax)
