"""Tiled prediction at any image size.

Tiled prediction follows CroCo-Stereo (docs/METHOD.md section 5): windows of the training crop, tiles per axis
``1 + ceil((size - win) / ((1 - overlap) * win))`` at linspace offsets, each tile blended with a weight
derived from its confidence logit ``c``:

- ``conf_expsigmoid_B_S``: ``w = exp(-B * 2 * (sigmoid(c / S) - 0.5))``
- ``conf_expbetaB``: ``w = exp(-B * c)``

The blend is computed from the log-weights relative to each pixel's largest one (a running maximum over
the tiles), which gives the same weighted mean without overflow: ``exp(-B * c)`` alone is inf in float32
for ``c < -88 / B`` and would turn a very confident tile into NaN.

Blend modes (``blend``):

- ``taper`` (default): the confidence weight times a spatial taper that falls smoothly towards 0 at every
  window edge that lies inside the image (a raised cosine over half the smallest overlap between
  neighbouring windows; edges on the image border keep full weight). A window's prediction near its own
  edge, where it saw the least context, then hands over continuously to its neighbours', so no seam is
  left where a window ends.
- ``croco``: the confidence weight alone, as CroCo-Stereo blends (abrupt where a window ends; kept for
  parity with the reference code).

Images smaller than the window are upscaled (bicubic) by ``max(win_w / W, win_h / H)`` first; the
disparity is resized back and divided by the x-scale.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from madis_stereo.errors import InputError
from madis_stereo.model.config import parse_conf_mode
from madis_stereo.model.network import check_pair

__all__ = ["BLEND_MODES", "check_blend", "check_tiling", "tile_log_weights", "tile_offsets", "tile_taper",
           "tiled_predict"]

BLEND_MODES = ("taper", "croco")

FLOAT32_MAX = float(torch.finfo(torch.float32).max)


def tile_offsets(total: int, window: int, overlap: float) -> list[int]:
    """Start offsets of overlapping windows covering ``total`` pixels (CroCo-Stereo's tiling)."""
    if window > total:
        raise InputError(f"window {window} is larger than the image side {total}")
    if not 0.0 <= overlap < 1.0:
        raise InputError(f"overlap must be in [0, 1), got {overlap}")
    count = 1 + int(math.ceil((total - window) / ((1.0 - overlap) * window)))
    return [int(v) for v in np.linspace(0, total - window, count).round().astype(int)]


def check_tiling(crop: Sequence[int], overlap: float, tile_batch: int = 1) -> tuple[int, int]:
    """The window (height, width) of ``crop`` if the tiling settings are usable, else InputError naming the flag."""
    if len(crop) != 2 or any(isinstance(c, bool) or int(c) != c for c in crop):
        raise InputError(f"crop (--crop H W) must be two integers, got {list(crop)}")
    win_h, win_w = int(crop[0]), int(crop[1])
    if win_h <= 0 or win_w <= 0 or win_h % 32 or win_w % 32:
        raise InputError(f"crop {win_h}x{win_w} (--crop H W): each side must be a positive multiple of 32 "
                         "(e.g. --crop 256 512)")
    if not 0.0 <= overlap < 1.0:
        raise InputError(f"overlap (--overlap) must be in [0, 1), got {overlap}")
    if isinstance(tile_batch, bool) or int(tile_batch) != tile_batch or tile_batch < 1:
        raise InputError(f"tile batch (--tile-batch) must be an integer >= 1, got {tile_batch}")
    return win_h, win_w


def tile_taper(offsets: Sequence[int], window: int, size: int, device: torch.device | None = None) -> list[Tensor]:
    """Per-window 1-D taper along one axis: a raised cosine sin^2 over ``margin`` pixels at each edge that
    lies inside the image, 1 elsewhere. ``margin`` is half the smallest overlap of neighbouring windows, so
    every pixel keeps a full-weight window; the taper never reaches 0 (its first value is sin^2(pi/4m))."""
    strides = [b - a for a, b in zip(offsets, offsets[1:])]
    margin = (window - max(strides)) // 2 if strides else 0
    steps = torch.arange(margin, dtype=torch.float32, device=device)
    ramp = torch.sin(0.5 * math.pi * (steps + 0.5) / max(margin, 1)) ** 2
    tapers = []
    for offset in offsets:
        taper = torch.ones(window, device=device)
        if margin > 0 and offset > 0:
            taper[:margin] = ramp
        if margin > 0 and offset + window < size:
            taper[window - margin :] = torch.minimum(taper[window - margin :], ramp.flip(0))
        tapers.append(taper)
    return tapers


def check_blend(blend: str) -> str:
    if blend not in BLEND_MODES:
        raise InputError(f"blend (--blend) must be one of {', '.join(BLEND_MODES)}, got {blend!r}")
    return blend


def tile_log_weights(conf: Tensor, conf_mode: str) -> Tensor:
    """Per-pixel log of a tile's blending weight from its confidence logit (finite for finite ``conf``)."""
    kind, beta, beta_s = parse_conf_mode(conf_mode)
    if kind == "expsigmoid":
        return -beta * 2.0 * (torch.sigmoid(conf / beta_s) - 0.5)
    return -beta * conf


@torch.inference_mode()
def tiled_predict(model: torch.nn.Module, left: Tensor, right: Tensor, crop: Sequence[int] = (352, 704),
                  overlap: float = 0.7, conf_mode: str = "conf_expsigmoid_15_3",
                  tile_batch: int = 1, blend: str = "taper") -> tuple[Tensor, Tensor]:
    """Disparity of normalised images of any size by blending overlapping window predictions.

    Args:
        left, right: ImageNet-normalised [B, 3, H, W] tensors.
        crop: window (height, width), multiples of 32 (the model's training crop).
        tile_batch: how many windows go through the model at once.
        blend: ``taper`` (no seams where windows end) or ``croco`` (CroCo-Stereo's blend); module docstring.

    Returns:
        disparity [B, 1, H, W] and the blended confidence logit [B, H, W] (float32).
    """
    check_pair(left, right, multiple=1)
    win_h, win_w = check_tiling(crop, overlap, tile_batch)
    parse_conf_mode(conf_mode)  # validates the mode before any work
    check_blend(blend)
    batch, _, height, width = left.shape
    scale = 1.0
    if height < win_h or width < win_w:
        scale = max(win_w / width, win_h / height)
        size = (round(height * scale), round(width * scale))
        left = F.interpolate(left, size=size, mode="bicubic", align_corners=False)
        right = F.interpolate(right, size=size, mode="bicubic", align_corners=False)
    big_h, big_w = left.shape[-2:]
    acc_disp = torch.zeros(batch, 1, big_h, big_w, device=left.device)
    acc_w = torch.zeros(batch, big_h, big_w, device=left.device)  # weights relative to acc_max
    acc_c = torch.zeros(batch, big_h, big_w, device=left.device)
    acc_max = torch.full((batch, big_h, big_w), -math.inf, device=left.device)  # largest log-weight so far
    rows, cols = tile_offsets(big_h, win_h, overlap), tile_offsets(big_w, win_w, overlap)
    tiles = [(y, x) for y in rows for x in cols]
    log_taper: dict[tuple[int, int], Tensor] = {}
    if blend == "taper":
        taper_y = dict(zip(rows, tile_taper(rows, win_h, big_h, left.device)))
        taper_x = dict(zip(cols, tile_taper(cols, win_w, big_w, left.device)))
        log_taper = {(y, x): torch.log(taper_y[y][:, None] * taper_x[x][None, :]) for y, x in tiles}
    for start in range(0, len(tiles), tile_batch):
        chunk = tiles[start : start + tile_batch]
        crops_l = torch.cat([left[:, :, y : y + win_h, x : x + win_w] for y, x in chunk])
        crops_r = torch.cat([right[:, :, y : y + win_h, x : x + win_w] for y, x in chunk])
        out = model(crops_l, crops_r)
        disp, conf = out.disparity.float(), out.confidence.float()[:, 0]
        log_w = tile_log_weights(conf, conf_mode).clamp(-FLOAT32_MAX, FLOAT32_MAX)  # +-inf logits stay usable
        for j, (y, x) in enumerate(chunk):
            sl, ys, xs = slice(j * batch, (j + 1) * batch), slice(y, y + win_h), slice(x, x + win_w)
            tile_log_w = log_w[sl] + log_taper[y, x] if log_taper else log_w[sl]
            old_max = acc_max[:, ys, xs]
            new_max = torch.maximum(old_max, tile_log_w)
            rescale, weight = torch.exp(old_max - new_max), torch.exp(tile_log_w - new_max)
            acc_disp[:, :, ys, xs] = acc_disp[:, :, ys, xs] * rescale[:, None] + disp[sl] * weight[:, None]
            acc_w[:, ys, xs] = acc_w[:, ys, xs] * rescale + weight
            acc_c[:, ys, xs] = acc_c[:, ys, xs] * rescale + conf[sl] * weight
            acc_max[:, ys, xs] = new_max
    disparity = acc_disp / acc_w[:, None]
    confidence = acc_c / acc_w
    if scale != 1.0:
        disparity = F.interpolate(disparity, size=(height, width), mode="bicubic", align_corners=False)
        disparity = disparity * (width / big_w)
        confidence = F.interpolate(confidence[:, None], size=(height, width), mode="bilinear",
                                   align_corners=False)[:, 0]
    return disparity, confidence
