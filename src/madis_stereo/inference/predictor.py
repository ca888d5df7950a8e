"""High-level inference on images: the ``Predictor`` (settings, device, precision) and ``predict``.

Images of any size go through :func:`~madis_stereo.inference.tiling.tiled_predict` (CroCo-Stereo's tiling).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from madis_stereo.errors import InputError
from madis_stereo.inference.precision import autocast, check_precision, cpu_linears, resolve_precision
from madis_stereo.inference.tiling import check_blend, check_tiling, tiled_predict
from madis_stereo.model.borrow import eval_mode, model_device, on_device
from madis_stereo.model.config import parse_conf_mode
from madis_stereo.model.packed import activate
from madis_stereo.model.preprocess import normalize

__all__ = ["Prediction", "Predictor", "as_rgb_uint8", "certainty", "predict", "rgb_pair"]

log = logging.getLogger(__name__)

ImageLike = np.ndarray | str | Path


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
    (docs/METHOD.md section 3) mapped linearly from (-a, a) onto (1, 0): 1 = the smallest expected error the
    model can express, 0 = the largest, 0.5 at c = 0.
    """
    if isinstance(confidence, Tensor):
        return torch.sigmoid(-confidence / beta_s)
    c = np.asarray(confidence, dtype=np.float64)
    return (1.0 / (1.0 + np.exp(c / beta_s))).astype(np.float32)


def as_rgb_uint8(image: Any, name: str) -> np.ndarray:
    """An HxWx3 uint8 RGB array from an array (gray, RGB or RGBA) or an image path."""
    if isinstance(image, (str, Path)):
        from madis_stereo.data.formats import read_image

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
        raise InputError(f"left and right images differ in size: {left_np.shape[0]}x{left_np.shape[1]} vs "
                         f"{right_np.shape[0]}x{right_np.shape[1]} (HxW)")
    return left_np, right_np


class Predictor:
    """Runs a model on image pairs of any size (tiled) with fixed settings.

    ``precision`` is "auto" (the faster of fp32 and bf16 on the device, see
    :func:`~madis_stereo.inference.precision.resolve_precision`), "fp32", "bf16" or "fp16" (autocast);
    after construction ``precision`` holds the resolved one and ``precision_reason`` why it was chosen.
    ``crop`` defaults to the model's training crop; ``compile`` wraps the model in ``torch.compile``;
    ``blend`` is ``taper`` (default, no seams where a window ends) or ``croco`` (CroCo-Stereo's blend), see
    :mod:`madis_stereo.inference.tiling`.
    The caller's model is left as it was: each call runs it in eval mode and restores its mode, and a
    ``device`` other than the model's gets a copy of the model. In bf16 on a CPU the predictor keeps bf16
    copies of the Linear weights in oneDNN's layout (:class:`~madis_stereo.model.packed.PackedLinears`,
    remade when a weight changes in place) and fuses bias and GELU into the products; in fp32 it does the
    same without copies where oneDNN was measured faster than the BLAS
    (:func:`~madis_stereo.inference.precision.cpu_linears`).
    """

    def __init__(self, model: torch.nn.Module, crop: Sequence[int] | None = None, overlap: float = 0.7,
                 conf_mode: str | None = None, device: str | torch.device | None = None,
                 precision: str = "auto", tile_batch: int = 1, compile: bool = False, blend: str = "taper") -> None:
        config = getattr(model, "config", None)
        self.crop = check_tiling(crop or (config.crop if config else (352, 704)), overlap, tile_batch)
        self.conf_mode = conf_mode or (config.conf_mode if config else "conf_expsigmoid_15_3")
        parse_conf_mode(self.conf_mode)
        check_precision(precision)
        self.device = torch.device(device) if device is not None else model_device(model)
        self.model = on_device(model, self.device)
        self.laplace_b = float(getattr(config, "laplace_b", 3.0))
        if compile:  # one compiled graph per window size; the first call pays the compilation
            self.model = torch.compile(self.model)
        self.overlap = overlap
        choice = resolve_precision(precision, self.device)
        self.precision, self.precision_reason = choice.precision, choice.reason
        if precision == "auto":
            log.info("precision %s (%s)", choice.precision, choice.reason)
        self.tile_batch = tile_batch
        self.blend = check_blend(blend)
        # on a CPU, Linear layers through oneDNN: bf16 packed once with bias and GELU fused; fp32 where the
        # probe measured oneDNN faster than the BLAS (model/packed.py, inference/precision.py)
        self.packed = None if compile else cpu_linears(self.precision, self.device)

    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.precision, self.device)

    def prepare(self, left: Any, right: Any) -> tuple[Tensor, Tensor]:
        """Two images -> normalised [1, 3, H, W] tensors on the device (sizes must agree)."""
        tensors = [torch.from_numpy(a).permute(2, 0, 1)[None].to(self.device) for a in rgb_pair(left, right)]
        return normalize(tensors[0]), normalize(tensors[1])

    def __call__(self, left: Any, right: Any) -> Prediction:
        return self.predict_batch([(left, right)])[0]

    def predict_batch(self, pairs: Sequence[tuple[Any, Any]]) -> list[Prediction]:
        """Several pairs of one size in one tiled pass: their windows go through the model together
        (``len(pairs) x tile_batch`` per forward), which is what keeps a GPU busy. InputError when sizes differ."""
        tensors = [self.prepare(left, right) for left, right in pairs]
        if not tensors:
            return []
        sizes = sorted({tuple(t[0].shape[-2:]) for t in tensors})
        if len(sizes) > 1:
            raise InputError(f"predict_batch needs pairs of one size, got {', '.join(f'{w}x{h}' for h, w in sizes)}")
        left = torch.cat([t[0] for t in tensors])
        right = torch.cat([t[1] for t in tensors])
        with self.autocast(), eval_mode(self.model), activate(self.packed, self.model):
            disp, conf = tiled_predict(self.model, left, right, self.crop, self.overlap, self.conf_mode,
                                       self.tile_batch, self.blend)
        disp, conf = disp.float().cpu().numpy(), conf.float().cpu().numpy()
        return [Prediction(disp[i, 0], conf[i], self.laplace_b) for i in range(len(tensors))]


def predict(model: torch.nn.Module, left_image: Any, right_image: Any, crop: Sequence[int] | None = None,
            overlap: float = 0.7, **kwargs: Any) -> Prediction:
    """Disparity of one pair of uint8 HxWx3 arrays (or image paths), any size; see :class:`Predictor`."""
    return Predictor(model, crop=crop, overlap=overlap, **kwargs)(left_image, right_image)
