"""Inference: input preprocessing, tiled prediction at any image size, and the ``Predictor``.

Tiled prediction follows CroCo-Stereo (METHOD.md section 5): windows of the training crop, tiles per axis
``1 + ceil((size - win) / ((1 - overlap) * win))`` at linspace offsets, each tile blended with a weight
derived from its confidence logit ``c``:

- ``conf_expsigmoid_B_S``: ``w = exp(-B * 2 * (sigmoid(c / S) - 0.5))``
- ``conf_expbetaB``: ``w = exp(-B * c)``

Images smaller than the window are upscaled (bicubic) by ``max(win_w / W, win_h / H)`` first; the
disparity is resized back and divided by the x-scale.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from madis_stereo.config import parse_conf_mode
from madis_stereo.errors import InputError
from madis_stereo.model.network import check_pair

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Prediction",
    "Predictor",
    "certainty",
    "normalize",
    "predict",
    "tile_offsets",
    "tiled_predict",
]

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ImageLike = np.ndarray | str | Path


def normalize(images: Tensor) -> Tensor:
    """uint8 (or [0, 255] float) images [B, 3, H, W] -> ImageNet-normalised float32."""
    x = images.float() / 255.0
    mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


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


def tile_weights(conf: Tensor, conf_mode: str) -> Tensor:
    """Per-pixel blending weight of a tile from its confidence logit."""
    kind, beta, beta_s = parse_conf_mode(conf_mode)
    if kind == "expsigmoid":
        return torch.exp(-beta * 2.0 * (torch.sigmoid(conf / beta_s) - 0.5))
    return torch.exp(-beta * conf)


@torch.inference_mode()
def tiled_predict(model: torch.nn.Module, left: Tensor, right: Tensor, crop: Sequence[int] = (352, 704),
                  overlap: float = 0.7, conf_mode: str = "conf_expsigmoid_15_3",
                  tile_batch: int = 1) -> tuple[Tensor, Tensor]:
    """Disparity of normalised images of any size by blending overlapping window predictions.

    Args:
        left, right: ImageNet-normalised [B, 3, H, W] tensors.
        crop: window (height, width), multiples of 32 (the model's training crop).
        tile_batch: how many windows go through the model at once.

    Returns:
        disparity [B, 1, H, W] and the blended confidence logit [B, H, W] (float32).
    """
    check_pair(left, right, multiple=1)
    win_h, win_w = check_tiling(crop, overlap, tile_batch)
    tile_weights(torch.zeros(1), conf_mode)  # validates the mode before any work
    batch, _, height, width = left.shape
    scale = 1.0
    if height < win_h or width < win_w:
        scale = max(win_w / width, win_h / height)
        size = (round(height * scale), round(width * scale))
        left = F.interpolate(left, size=size, mode="bicubic", align_corners=False)
        right = F.interpolate(right, size=size, mode="bicubic", align_corners=False)
    big_h, big_w = left.shape[-2:]
    acc_disp = torch.zeros(batch, 1, big_h, big_w, device=left.device)
    acc_w = torch.full((batch, big_h, big_w), 1e-16, device=left.device)
    acc_c = torch.zeros(batch, big_h, big_w, device=left.device)
    tiles = [(y, x) for y in tile_offsets(big_h, win_h, overlap) for x in tile_offsets(big_w, win_w, overlap)]
    for start in range(0, len(tiles), tile_batch):
        chunk = tiles[start : start + tile_batch]
        crops_l = torch.cat([left[:, :, y : y + win_h, x : x + win_w] for y, x in chunk])
        crops_r = torch.cat([right[:, :, y : y + win_h, x : x + win_w] for y, x in chunk])
        out = model(crops_l, crops_r)
        disp, conf = out.disparity.float(), out.confidence.float()[:, 0]
        weight = tile_weights(conf, conf_mode)
        for j, (y, x) in enumerate(chunk):
            sl = slice(j * batch, (j + 1) * batch)
            acc_disp[:, :, y : y + win_h, x : x + win_w] += disp[sl] * weight[sl, None]
            acc_w[:, y : y + win_h, x : x + win_w] += weight[sl]
            acc_c[:, y : y + win_h, x : x + win_w] += conf[sl] * weight[sl]
    disparity = acc_disp / acc_w[:, None]
    confidence = acc_c / acc_w
    if scale != 1.0:
        disparity = F.interpolate(disparity, size=(height, width), mode="bicubic", align_corners=False)
        disparity = disparity * (width / big_w)
        confidence = F.interpolate(confidence[:, None], size=(height, width), mode="bilinear",
                                   align_corners=False)[:, 0]
    return disparity, confidence


# --------------------------------------------------------------------------------------------------
# high-level prediction on images
# --------------------------------------------------------------------------------------------------


@dataclass
class Prediction:
    """disparity HxW float32 (left-image pixels) and confidence HxW float32.

    ``confidence`` is CroCo's channel 1 blended over tiles: the logit of the Laplacian log-scale, so LOWER
    values mean a smaller expected error (see :func:`certainty` for a 0..1 map where higher = surer).
    """

    disparity: np.ndarray
    confidence: np.ndarray


def certainty(confidence: np.ndarray | Tensor, beta_s: float = 3.0) -> Any:
    """Certainty in (0, 1) from the confidence logit c: ``1 - sigmoid(c / beta_s)``, higher = surer.

    This is the bounded log-scale c' = 2a(sigmoid(c / b) - 0.5) of the loss (METHOD.md section 3, a = b = 3)
    mapped linearly from (-a, a) onto (1, 0): 1 = the smallest expected error the model can express,
    0 = the largest, 0.5 at c = 0.
    """
    if isinstance(confidence, Tensor):
        return torch.sigmoid(-confidence / beta_s)
    c = np.asarray(confidence, dtype=np.float64)
    return (1.0 / (1.0 + np.exp(c / beta_s))).astype(np.float32)


def as_rgb_uint8(image: Any, name: str) -> np.ndarray:
    """An HxWx3 uint8 RGB array from an array (gray, RGB or RGBA) or an image path."""
    if isinstance(image, (str, Path)):
        from madis_stereo.data.io import read_image

        image = read_image(image)
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise InputError(f"{name} image must be HxW, HxWx3 or HxWx4, got shape {array.shape}")
    array = array[..., :3]
    if array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.floating) and array.size and float(np.nanmax(array)) <= 1.0:
            array = array * 255.0
        array = np.clip(np.nan_to_num(array), 0, 255).astype(np.uint8)
    array = np.ascontiguousarray(array)
    return array if array.flags.writeable else array.copy()  # torch.from_numpy warns on read-only arrays


def rgb_pair(left: Any, right: Any) -> tuple[np.ndarray, np.ndarray]:
    """Two images (arrays or paths) as uint8 HxWx3 arrays of one size; InputError otherwise."""
    left_np, right_np = as_rgb_uint8(left, "left"), as_rgb_uint8(right, "right")
    if left_np.shape != right_np.shape:
        raise InputError(f"left and right images differ in size: {left_np.shape[1]}x{left_np.shape[0]} vs "
                         f"{right_np.shape[1]}x{right_np.shape[0]}")
    return left_np, right_np


class Predictor:
    """Runs a model on image pairs of any size (tiled) with fixed settings.

    ``precision`` is "fp32" or "bf16" (autocast); ``crop`` defaults to the model's training crop;
    ``compile`` wraps the model in ``torch.compile``.
    """

    def __init__(self, model: torch.nn.Module, crop: Sequence[int] | None = None, overlap: float = 0.7,
                 conf_mode: str | None = None, device: str | torch.device | None = None,
                 precision: str = "fp32", tile_batch: int = 1, compile: bool = False) -> None:
        config = getattr(model, "config", None)
        self.crop = check_tiling(crop or (config.crop if config else (352, 704)), overlap, tile_batch)
        self.conf_mode = conf_mode or (config.conf_mode if config else "conf_expsigmoid_15_3")
        parse_conf_mode(self.conf_mode)
        if precision not in ("fp32", "bf16"):
            raise InputError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
        self.device = torch.device(device) if device is not None else _model_device(model)
        self.model = model.to(self.device).eval()
        if compile:  # one compiled graph per window size; the first call pays the compilation
            self.model = torch.compile(self.model)
        self.overlap = overlap
        self.precision = precision
        self.tile_batch = tile_batch

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def prepare(self, left: Any, right: Any) -> tuple[Tensor, Tensor]:
        """Two images -> normalised [1, 3, H, W] tensors on the device (sizes must agree)."""
        tensors = [torch.from_numpy(a).permute(2, 0, 1)[None].to(self.device) for a in rgb_pair(left, right)]
        return normalize(tensors[0]), normalize(tensors[1])

    def __call__(self, left: Any, right: Any) -> Prediction:
        lt, rt = self.prepare(left, right)
        with self.autocast():
            disp, conf = tiled_predict(self.model, lt, rt, self.crop, self.overlap, self.conf_mode, self.tile_batch)
        return Prediction(disp[0, 0].float().cpu().numpy(), conf[0].float().cpu().numpy())


def _model_device(model: torch.nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def predict(model: torch.nn.Module, left_image: Any, right_image: Any, crop: Sequence[int] | None = None,
            overlap: float = 0.7, **kwargs: Any) -> Prediction:
    """Disparity of one pair of uint8 HxWx3 arrays (or image paths), any size; see :class:`Predictor`."""
    return Predictor(model, crop=crop, overlap=overlap, **kwargs)(left_image, right_image)
