"""Inference: input preprocessing, tiled prediction at any image size, and the ``Predictor``.

Tiled prediction follows CroCo-Stereo (docs/METHOD.md, "Tiled inference"): windows of the training crop, tiles per axis
``1 + ceil((size - win) / ((1 - overlap) * win))`` at linspace offsets, each tile blended with a weight
derived from its confidence logit ``c``:

- ``conf_expsigmoid_B_S``: ``w = exp(-B * 2 * (sigmoid(c / S) - 0.5))``
- ``conf_expbetaB``: ``w = exp(-B * c)``

The blend is computed from the log-weights relative to each pixel's largest one (as a running maximum over
the tiles), which gives the same weighted mean without overflow: ``exp(-B * c)`` alone is inf in float32
for ``c < -88 / B`` and would turn a very confident tile into NaN.

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
from madis_stereo.model.borrow import eval_mode, model_device, on_device
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
FLOAT32_MAX = float(torch.finfo(torch.float32).max)


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


def tile_log_weights(conf: Tensor, conf_mode: str) -> Tensor:
    """Per-pixel log of a tile's blending weight from its confidence logit (finite for finite ``conf``)."""
    kind, beta, beta_s = parse_conf_mode(conf_mode)
    if kind == "expsigmoid":
        return -beta * 2.0 * (torch.sigmoid(conf / beta_s) - 0.5)
    return -beta * conf


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
    win_h, win_w = int(crop[0]), int(crop[1])
    if win_h % 32 or win_w % 32:
        raise InputError(f"crop {win_h}x{win_w} must be a multiple of 32 in both sides")
    parse_conf_mode(conf_mode)  # validates the mode before any work
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
    tiles = [(y, x) for y in tile_offsets(big_h, win_h, overlap) for x in tile_offsets(big_w, win_w, overlap)]
    for start in range(0, len(tiles), max(1, tile_batch)):
        chunk = tiles[start : start + max(1, tile_batch)]
        crops_l = torch.cat([left[:, :, y : y + win_h, x : x + win_w] for y, x in chunk])
        crops_r = torch.cat([right[:, :, y : y + win_h, x : x + win_w] for y, x in chunk])
        out = model(crops_l, crops_r)
        disp, conf = out.disparity.float(), out.confidence.float()[:, 0]
        log_w = tile_log_weights(conf, conf_mode).clamp(-FLOAT32_MAX, FLOAT32_MAX)  # +-inf logits stay usable
        for j, (y, x) in enumerate(chunk):
            sl, ys, xs = slice(j * batch, (j + 1) * batch), slice(y, y + win_h), slice(x, x + win_w)
            old_max = acc_max[:, ys, xs]
            new_max = torch.maximum(old_max, log_w[sl])
            rescale, weight = torch.exp(old_max - new_max), torch.exp(log_w[sl] - new_max)
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


# --------------------------------------------------------------------------------------------------
# high-level prediction on images
# --------------------------------------------------------------------------------------------------


@dataclass
class Prediction:
    """disparity HxW float32 (left-image pixels) and confidence HxW float32.

    ``confidence`` is CroCo's channel 1 blended over tiles: the logit of the Laplacian log-scale, so LOWER
    values mean a smaller expected error. ``laplace_b`` is the model's scale ``b`` of that logit
    (``ModelConfig.laplace_b``); :attr:`certainty` maps the logit onto 0..1 with it (higher = surer).
    """

    disparity: np.ndarray
    confidence: np.ndarray
    laplace_b: float = 3.0

    @property
    def certainty(self) -> np.ndarray:
        """:func:`certainty` of ``confidence`` with the model's ``laplace_b``."""
        return certainty(self.confidence, self.laplace_b)


def certainty(confidence: np.ndarray | Tensor, beta_s: float = 3.0) -> Any:
    """Certainty in (0, 1) from the confidence logit c: ``1 - sigmoid(c / beta_s)``, higher = surer.

    ``beta_s`` is the model's ``laplace_b`` (``model.config.laplace_b``, 3 unless its training set
    ``madis.laplace_b``). This is the bounded log-scale c' = 2a(sigmoid(c / b) - 0.5) of the loss
    (docs/METHOD.md, "Losses") mapped linearly from (-a, a) onto (1, 0): 1 = the smallest expected error the
    model can express, 0 = the largest, 0.5 at c = 0.
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
    ``compile`` wraps the model in ``torch.compile``. The caller's model is left as it was: each call runs it
    in eval mode and restores its mode, and a ``device`` other than the model's gets a copy of the model.
    """

    def __init__(self, model: torch.nn.Module, crop: Sequence[int] | None = None, overlap: float = 0.7,
                 conf_mode: str | None = None, device: str | torch.device | None = None,
                 precision: str = "fp32", tile_batch: int = 1, compile: bool = False) -> None:
        config = getattr(model, "config", None)
        self.crop = tuple(int(c) for c in (crop or (config.crop if config else (352, 704))))
        self.conf_mode = conf_mode or (config.conf_mode if config else "conf_expsigmoid_15_3")
        parse_conf_mode(self.conf_mode)
        if precision not in ("fp32", "bf16"):
            raise InputError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
        self.device = torch.device(device) if device is not None else model_device(model)
        self.model = on_device(model, self.device)
        self.laplace_b = float(getattr(config, "laplace_b", 3.0))
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
        with self.autocast(), eval_mode(self.model):
            disp, conf = tiled_predict(self.model, lt, rt, self.crop, self.overlap, self.conf_mode, self.tile_batch)
        return Prediction(disp[0, 0].float().cpu().numpy(), conf[0].float().cpu().numpy(), self.laplace_b)


def predict(model: torch.nn.Module, left_image: Any, right_image: Any, crop: Sequence[int] | None = None,
            overlap: float = 0.7, **kwargs: Any) -> Prediction:
    """Disparity of one pair of uint8 HxWx3 arrays (or image paths), any size; see :class:`Predictor`."""
    return Predictor(model, crop=crop, overlap=overlap, **kwargs)(left_image, right_image)
