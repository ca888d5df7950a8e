"""Disparity colouring, error maps and image sheets (one colour-map implementation for the project)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from madis_stereo.errors import InputError
from madis_stereo.evaluation.metrics import D1_ABS, D1_REL, as_numpy
from madis_stereo.utils.files import atomic_path

__all__ = [
    "color_legend",
    "color_range",
    "colorize",
    "colorize_disparity",
    "confidence_image",
    "error_map",
    "plot_attention_distance",
    "save_png",
    "side_by_side",
]

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
        raise InputError(f"colorize expects an HxW array, got shape {values.shape}")
    finite = np.isfinite(values)
    vmin, vmax = color_range(values, vmin, vmax)
    span = max(float(vmax) - float(vmin), 1e-6)
    t = np.clip((np.where(finite, values, vmin) - vmin) / span, 0.0, 1.0) * (len(_RAMP) - 1)
    i0 = np.floor(t).astype(np.int64)
    i1 = np.minimum(i0 + 1, len(_RAMP) - 1)
    w = (t - i0)[..., None]
    rgb = _RAMP[i0] * (1 - w) + _RAMP[i1] * w
    rgb[~finite] = invalid_color
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def color_range(values: np.ndarray, vmin: float | None = None, vmax: float | None = None) -> tuple[float, float]:
    """The (vmin, vmax) that :func:`colorize` maps onto its ramp: the given ends, the missing ones from the
    1st / 99th percentiles of the finite values (0, 1 when there are none)."""
    if vmin is None or vmax is None:
        finite = np.isfinite(values)
        lo, hi = np.percentile(values[finite], [1, 99]) if finite.any() else (0.0, 1.0)
        vmin = float(lo) if vmin is None else vmin
        vmax = float(hi) if vmax is None else vmax
    return float(vmin), float(vmax)


def color_legend(width: int, vmin: float, vmax: float, unit: str = "px", height: int = 28) -> np.ndarray:
    """A ``height`` x ``width`` colour bar of the ramp from ``vmin`` (left) to ``vmax`` (right), labelled with
    both ends and the middle value, to append below an image coloured with the same range."""
    import cv2

    bar_h = height // 2
    ramp = colorize(np.tile(np.linspace(vmin, vmax, width, dtype=np.float32), (bar_h, 1)), vmin, vmax)
    text = np.zeros((height - bar_h, width, 3), np.uint8)
    labels = [(f"{vmin:.3g} {unit}", 0), (f"{(vmin + vmax) / 2:.3g}", 1), (f"{vmax:.3g} {unit}", 2)]
    for label, where in labels:
        (text_w, _), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.35, 1)
        x = (0, (width - text_w) // 2, width - text_w - 1)[where]
        cv2.putText(text, label, (max(0, x), height - bar_h - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255),
                    1, cv2.LINE_AA)
    return np.concatenate([ramp, text], axis=0)


def colorize_disparity(disparity: np.ndarray, vmin: float | None = 0.0, vmax: float | None = None) -> np.ndarray:
    """Colour a disparity map (near = warm); invalid (non-finite) pixels are black."""
    return colorize(disparity, vmin=vmin, vmax=vmax)


def _map(values: Any, name: str) -> np.ndarray:
    """An HxW float32 map; leading singleton dimensions ([1,1,H,W] tensors) are dropped."""
    array = as_numpy(values, name).astype(np.float32)
    while array.ndim > 2 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise InputError(f"{name} must be an HxW map, got shape {array.shape}")
    return array


def error_map(pred: Any, gt: Any, nonocc: Any = None, *, abs_thresh: float = D1_ABS, rel_thresh: float = D1_REL,
              log_range: float = 4.0) -> np.ndarray:
    """KITTI-style error image, HxWx3 uint8: blue = small error, red = large, black = no valid GT.

    The colour encodes the error normalised by the D1 thresholds, r = min(e / abs_thresh, e / (rel_thresh *
    |gt|)) with e = |pred - gt|, on a log2 scale from r <= 2^-log_range (blue) to r >= 2^log_range (red) of
    the project's one colour ramp (its dark ends are left out, so that no error looks like missing GT).
    r = 1, the D1 outlier boundary, sits mid-ramp: every pixel warmer than it is a D1 outlier. A missing
    prediction gets the reddest colour; pixels outside ``nonocc`` (occluded) are shown at half brightness.
    The fixed scale makes colours comparable across images and methods.
    """
    p, g = _map(pred, "pred"), _map(gt, "gt")
    if p.shape != g.shape:
        raise InputError(f"pred and gt must have the same shape, got {p.shape} and {g.shape}")
    valid = np.isfinite(g)
    with np.errstate(invalid="ignore", divide="ignore"):
        err = np.where(np.isfinite(p), np.abs(p - g), np.inf)
        ratio = np.fmin(err / abs_thresh, err / (rel_thresh * np.abs(g)))  # fmin: 0 / 0 on gt = 0
        level = np.log2(np.clip(ratio, 2.0**-log_range, 2.0**log_range))
    # levels -log_range..log_range land on ramp positions 1/8..7/8 (blue .. red)
    span = log_range * 4.0 / 3.0
    rgb = colorize(np.where(valid, level, np.nan), vmin=-span, vmax=span)
    if nonocc is not None:
        occluded = valid & ~_map(nonocc, "nonocc").astype(bool)
        rgb[occluded] //= 2
    return rgb


def confidence_image(confidence: Any, vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """Colour a confidence map (HxW): low values blue, high values red, non-finite black.

    For the model's raw confidence logit (lower = smaller expected error) that means blue = confident,
    red = unsure; give :func:`~madis_stereo.certainty` instead (higher = surer) to get red = confident.
    Give ``vmin``/``vmax`` to compare frames; by default the 1st-99th percentile range is used.
    """
    return colorize(_map(confidence, "confidence"), vmin=vmin, vmax=vmax)


def _as_rgb(image: Any, index: int) -> np.ndarray:
    image = as_numpy(image, f"images[{index}]")
    if image.dtype != np.uint8:
        raise InputError(f"images[{index}] must be uint8 (use colorize first), got {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise InputError(f"images[{index}] must be HxW, HxWx3 or HxWx4, got shape {image.shape}")
    return image[..., :3]


def side_by_side(images: Sequence[Any], labels: Sequence[str] | None = None, *, columns: int | None = None,
                 pad: int = 4, font_scale: float = 0.6) -> np.ndarray:
    """Tile uint8 images (HxW or HxWx3) into one RGB sheet, each under a text label.

    Images are placed left to right, ``columns`` per row (default: all in one row), top-left aligned in
    cells as large as the largest image, ``pad`` black pixels apart. Labels are drawn in white on a black
    strip above each image.
    """
    import cv2

    if not len(images):
        raise InputError("side_by_side needs at least one image")
    if labels is not None and len(labels) != len(images):
        raise InputError(f"got {len(images)} images but {len(labels)} labels")
    tiles = [_as_rgb(im, i) for i, im in enumerate(images)]
    columns = len(tiles) if columns is None else max(1, int(columns))
    rows = -(-len(tiles) // columns)
    cell_h = max(t.shape[0] for t in tiles)
    cell_w = max(t.shape[1] for t in tiles)
    thickness = max(1, round(font_scale * 2))
    strip = 0
    if labels is not None:
        (_, text_h), base = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        strip = text_h + base + 2 * pad
    step_h, step_w = strip + cell_h + pad, cell_w + pad
    sheet = np.zeros((rows * step_h + pad, columns * step_w + pad, 3), dtype=np.uint8)
    for i, tile in enumerate(tiles):
        y, x = (i // columns) * step_h + pad, (i % columns) * step_w + pad
        sheet[y + strip:y + strip + tile.shape[0], x:x + tile.shape[1]] = tile
        if labels is not None:
            origin = (x + 2, y + strip - pad - base)
            cv2.putText(sheet, str(labels[i]), origin, cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255),
                        thickness, cv2.LINE_AA)
    return sheet


def save_png(path: str | os.PathLike, image: Any, text: Mapping[str, str] | None = None) -> Path:
    """Write a uint8 (HxW, HxWx3 RGB, HxWx4 RGBA) or uint16 HxW image as PNG, atomically; ``text`` goes into
    the file's tEXt chunks (e.g. the colour range, readable with PIL's ``Image.open(path).text``).

    The file appears complete or not at all: it is written to a temporary file in the same folder and
    renamed over ``path`` (no temporary file is left behind, also on error). Parent folders are created.
    """
    from PIL import Image

    image = np.ascontiguousarray(as_numpy(image, "image"))
    ok = (image.dtype == np.uint8 and (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4)))) or (
        image.dtype == np.uint16 and image.ndim == 2)
    if not ok:
        raise InputError(f"save_png takes uint8 HxW/HxWx3/HxWx4 or uint16 HxW, got {image.dtype} {image.shape}")
    from PIL.PngImagePlugin import PngInfo

    pil = Image.fromarray(image)
    info = PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    with atomic_path(path) as tmp:
        pil.save(tmp, format="PNG", pnginfo=info)
    return Path(path)


_TITLES = {"encoder": "encoder self-attention", "decoder_self": "decoder self-attention",
           "decoder_cross": "decoder cross-attention"}
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def plot_attention_distance(results: Mapping[str, Mapping[str, Sequence[Sequence[float]]]],
                            path: str | os.PathLike, labels: Sequence[str] | Mapping[str, str] | None = None, *,
                            title: str | None = None) -> Path:
    """Plot mean attention distance (paper Fig. 3): one dot per head, layers on the x axis.

    ``results`` = ``{model: {"encoder": [[mad per head] per layer], "decoder_self": ..., "decoder_cross":
    ...}}`` (pixels); one subplot per attention kind present, models overlaid with their own colour and
    marker (slightly shifted sideways so they do not hide each other). ``labels`` renames models in the
    legend (a list in ``results`` order or a dict). Written as PNG, atomically; returns the path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # the Agg backend, for this figure only
    from matplotlib.figure import Figure

    if not results:
        raise InputError("plot_attention_distance needs at least one model's results")
    models = list(results)
    if labels is None:
        names = models
    elif isinstance(labels, Mapping):
        names = [labels.get(m, m) for m in models]
    elif len(labels) == len(models):
        names = [str(x) for x in labels]
    else:
        raise InputError(f"got {len(labels)} labels for {len(models)} models")
    from madis_stereo.inference.attention import ATTENTION_KINDS

    kinds = [k for k in ATTENTION_KINDS if any(k in results[m] for m in models)]
    kinds += [k for m in models for k in results[m] if k not in kinds]
    if not kinds:
        raise InputError("the results hold no attention kind (expected encoder, decoder_self, decoder_cross)")
    fig = Figure(figsize=(4.5 * len(kinds), 3.8), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(kinds), squeeze=False)[0]
    colors = [f"C{i % 10}" for i in range(len(models))]
    for ax, kind in zip(axes, kinds):
        for j, (model, name) in enumerate(zip(models, names)):
            layers = results[model].get(kind)
            if not layers:
                continue
            shift = (j - (len(models) - 1) / 2) * min(0.12, 0.6 / len(models))
            xs = [i + 1 + shift for i, heads in enumerate(layers) for _ in heads]
            ys = [float(v) for heads in layers for v in heads]
            ax.scatter(xs, ys, s=16, color=colors[j], marker=_MARKERS[j % len(_MARKERS)], alpha=0.75,
                       label=name, linewidths=0)
        depth = max(len(results[m].get(kind) or ()) for m in models)
        ax.set_xticks(range(1, depth + 1))
        ax.set_xlim(0.5, depth + 0.5)
        ax.set_ylim(bottom=0)
        ax.set_title(_TITLES.get(kind, kind))
        ax.set_xlabel("layer")
        ax.set_ylabel("mean attention distance (px)")
        ax.grid(True, alpha=0.3)
    axes[0].legend(loc="best", fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)
