"""CroCo-Stereo training augmentation (docs/METHOD.md section 4), seeded per sample.

Order: x-only random scale (plus an isotropic upscale when the image is smaller than the crop), random
crop, vertical flip (both views and GT), a small rotation and vertical shift of the right image only, then
asymmetric colour jitter (parameters drawn independently for each view). The disparity is resized with
nearest neighbour and multiplied by the x-scale; it is not touched by the right-image perturbation (that
perturbation imitates rectification error, which the network must tolerate).

Images smaller than the crop are UPSCALED (isotropically, just enough to fit; disparity scaled with x),
never padded: padding would add invalid pixels to every batch.

Colour jitter, on 8-bit values (lookup tables and one 3x3 colour matrix; a fixed order):
brightness ``v * b``; contrast ``m + (v - m) * c`` (m = mean gray level); saturation and hue together as a
colour matrix in YIQ space (chroma I/Q scaled by s and rotated by ``h * 360`` degrees); gamma ``v ** g``.
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

from madis_stereo.data.base import Sample

__all__ = ["GREY_WEIGHTS", "AugmentConfig", "Augmentor", "ColorParams", "apply_color", "chroma_matrix", "draw_color",
           "right_perturbation"]


def _check_range(name: str, value: tuple[float, float], low: float = -math.inf) -> None:
    if len(value) != 2 or not low <= value[0] <= value[1]:
        raise ValueError(f"{name} must be a range [min, max] with {low} <= min <= max, got {list(value)}")


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Augmentation settings; defaults follow CroCo-Stereo (crop 352x704).

    ``scale_x``: range of the x-only scale factor, drawn log-uniformly with probability ``scale_prob``
    (default 2^-0.2 .. 2^0.4 = 0.87 .. 1.32, as in RAFT-Stereo-style stereo training); ``hue`` is the
    largest hue shift as a fraction of the colour circle.
    """

    crop: tuple[int, int] = (352, 704)
    scale_x: tuple[float, float] = (0.87, 1.32)
    scale_prob: float = 0.8
    vflip_prob: float = 0.5
    right_perturb_prob: float = 0.5
    max_rotation_deg: float = 0.1
    max_vshift_px: float = 2.0
    color_prob: float = 1.0
    asymmetric_prob: float = 1.0
    brightness: tuple[float, float] = (0.5, 2.0)
    contrast: tuple[float, float] = (0.8, 1.2)
    saturation: tuple[float, float] = (0.8, 1.2)
    hue: float = 0.1
    gamma: tuple[float, float] = (0.7, 1.5)

    def __post_init__(self) -> None:
        if len(self.crop) != 2 or min(self.crop) < 1:
            raise ValueError(f"crop must be (height, width) > 0, got {list(self.crop)}")
        _check_range("scale_x", self.scale_x, low=1e-3)
        for name in ("brightness", "contrast", "saturation", "gamma"):
            _check_range(name, getattr(self, name), low=0.0)
        for name in ("scale_prob", "vflip_prob", "right_perturb_prob", "color_prob", "asymmetric_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0 <= self.hue <= 0.5 or self.max_rotation_deg < 0 or self.max_vshift_px < 0:
            raise ValueError("hue must be in [0, 0.5]; max_rotation_deg and max_vshift_px >= 0")


@dataclasses.dataclass(frozen=True)
class ColorParams:
    """One view's colour jitter: brightness, contrast, saturation factors, hue shift, gamma exponent."""

    brightness: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0
    hue: float = 0.0
    gamma: float = 1.0


def draw_color(rng: np.random.Generator, cfg: AugmentConfig) -> ColorParams:
    """Draw one view's colour jitter parameters uniformly within the configured bounds."""
    return ColorParams(
        brightness=float(rng.uniform(*cfg.brightness)), contrast=float(rng.uniform(*cfg.contrast)),
        saturation=float(rng.uniform(*cfg.saturation)), hue=float(rng.uniform(-cfg.hue, cfg.hue)),
        gamma=float(rng.uniform(*cfg.gamma)),
    )


_RGB2YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ2RGB = np.linalg.inv(_RGB2YIQ)


GREY_WEIGHTS = _RGB2YIQ[0]  # the Y of YIQ: the grey level contrast is taken around


def chroma_matrix(params: ColorParams) -> np.ndarray:
    """The 3x3 RGB -> RGB matrix of the saturation and hue change: chroma (I, Q) scaled and rotated."""
    angle = 2 * math.pi * params.hue
    cos, sin = math.cos(angle) * params.saturation, math.sin(angle) * params.saturation
    return _YIQ2RGB @ np.array([[1, 0, 0], [0, cos, -sin], [0, sin, cos]]) @ _RGB2YIQ


def right_perturbation(rng: np.random.Generator, cfg: AugmentConfig, width: int, height: int) -> np.ndarray:
    """A random small rotation about the image centre plus a vertical shift of the right image (2x3, source
    to destination pixels, OpenCV's convention)."""
    angle = float(rng.uniform(-cfg.max_rotation_deg, cfg.max_rotation_deg))
    shift = float(rng.uniform(-cfg.max_vshift_px, cfg.max_vshift_px))
    matrix = cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), angle, 1.0)
    matrix[1, 2] += shift
    return matrix


def _lut(values: np.ndarray) -> np.ndarray:
    return np.clip(np.round(values), 0, 255).astype(np.uint8)


def apply_color(image: np.ndarray, params: ColorParams) -> np.ndarray:
    """Colour-jitter a uint8 ``HxWx3`` RGB image (see the module docstring for the formulas)."""
    levels = np.arange(256, dtype=np.float64)
    out = cv2.LUT(image, _lut(levels * params.brightness))
    mean = float(np.dot(cv2.mean(out)[:3], GREY_WEIGHTS))
    out = cv2.LUT(out, _lut(mean + (levels - mean) * params.contrast))
    if params.saturation != 1 or params.hue != 0:
        out = cv2.transform(out, chroma_matrix(params).astype(np.float32))
    if params.gamma != 1:
        out = cv2.LUT(out, _lut(255 * (levels / 255) ** params.gamma))
    return out


class Augmentor:
    """``Augmentor(cfg)(sample, rng) -> sample``: the full augmentation, reproducible from ``rng``.

    Input: a sample dict with uint8 ``left``/``right`` HxWx3, ``disparity`` float32 HxW (+inf invalid) or
    None, ``nonocc`` bool HxW or None. Output: the same keys at the crop size; ``calib`` becomes None
    (the intrinsics no longer hold after scaling and cropping).
    """

    def __init__(self, cfg: AugmentConfig | None = None) -> None:
        self.cfg = cfg or AugmentConfig()

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        cfg = self.cfg
        left, right = sample["left"], sample["right"]
        disparity, nonocc = sample.get("disparity"), sample.get("nonocc")
        left, right, disparity, nonocc = self._scale(left, right, disparity, nonocc, rng)
        left, right, disparity, nonocc = self._crop(left, right, disparity, nonocc, rng)
        if rng.random() < cfg.vflip_prob:
            left, right = left[::-1], right[::-1]
            disparity = disparity[::-1] if disparity is not None else None
            nonocc = nonocc[::-1] if nonocc is not None else None
        if rng.random() < cfg.right_perturb_prob:
            right = self._perturb_right(np.ascontiguousarray(right), rng)
        if rng.random() < cfg.color_prob:
            params_left = draw_color(rng, cfg)
            params_right = draw_color(rng, cfg) if rng.random() < cfg.asymmetric_prob else params_left
            left = apply_color(np.ascontiguousarray(left), params_left)
            right = apply_color(np.ascontiguousarray(right), params_right)
        contiguous = np.ascontiguousarray
        return {**sample, "left": contiguous(left), "right": contiguous(right),
                "disparity": contiguous(disparity) if disparity is not None else None,
                "nonocc": contiguous(nonocc) if nonocc is not None else None, "calib": None}

    def _scale(self, left, right, disparity, nonocc, rng):
        height, width = left.shape[:2]
        crop_h, crop_w = self.cfg.crop
        sx = 1.0
        if rng.random() < self.cfg.scale_prob:
            low, high = self.cfg.scale_x
            sx = math.exp(rng.uniform(math.log(low), math.log(high)))
        fit = max(1.0, crop_h / height, crop_w / (width * sx))  # upscale small images isotropically
        new_w, new_h = max(crop_w, round(width * sx * fit)), max(crop_h, round(height * fit))
        if (new_w, new_h) == (width, height):
            return left, right, disparity, nonocc
        resize = dict(dsize=(new_w, new_h), interpolation=cv2.INTER_LINEAR)
        left, right = cv2.resize(left, **resize), cv2.resize(right, **resize)
        if disparity is not None:  # nearest keeps invalid (inf) pixels and edges; values scale with x
            disparity = cv2.resize(disparity, (new_w, new_h), interpolation=cv2.INTER_NEAREST)
            disparity *= np.float32(new_w / width)
        if nonocc is not None:
            nonocc = cv2.resize(nonocc.astype(np.uint8), (new_w, new_h), interpolation=cv2.INTER_NEAREST).astype(bool)
        return left, right, disparity, nonocc

    def _crop(self, left, right, disparity, nonocc, rng):
        crop_h, crop_w = self.cfg.crop
        height, width = left.shape[:2]
        y0, x0 = int(rng.integers(0, height - crop_h + 1)), int(rng.integers(0, width - crop_w + 1))
        window = (slice(y0, y0 + crop_h), slice(x0, x0 + crop_w))
        return (left[window], right[window], disparity[window] if disparity is not None else None,
                nonocc[window] if nonocc is not None else None)

    def _perturb_right(self, right: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        height, width = right.shape[:2]
        matrix = right_perturbation(rng, self.cfg, width, height)
        return cv2.warpAffine(right, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
