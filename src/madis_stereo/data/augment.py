"""CroCo-Stereo's training augmentation (its ``StereoAugmentor``; docs/METHOD.md section 4, docs/DATA.md),
seeded per sample.

In this order:

1. Scale, x only, with probability ``scale_prob`` (0.5): factor ``2 ** U(lo, hi)`` with (lo, hi) =
   ``scale_log2_small`` (0, 1) when ``min(H, W) < large_threshold`` (800 px), else ``scale_log2_large``
   (-0.2, 0.4); never below ``(crop_w + crop_margin) / W``. Without the scale branch the width is upscaled
   only when needed to crop (to ``crop_w + crop_margin``). Images bilinear, disparity nearest and multiplied
   by the x factor. Images lower than the crop are also stretched in y to the crop height (CroCo's code
   refuses them; this is the one addition).
2. A random crop.
3. Vertical flip of both views, the disparity and ``nonocc``, probability ``vflip_prob``.
4. Right view only, probability ``right_perturb_prob``: a rotation by U(-0.1, 0.1) degrees about a random
   centre, drawn as the public code draws it (x from U(0, H), y from U(0, W): the height and width in that
   order), then a vertical shift by U(-2, 2) px; each a bilinear warp with a zero border. The disparity is
   not touched (the perturbation imitates rectification error, which the network must tolerate).
5. Colour, on uint8 images: with probability ``color_single_prob`` ONE of the five jitters (uniformly),
   else all five in a random order. Each fires with probability ``jitter_prob``; its factor is drawn for
   the left view, and the right view reuses it except with probability ``right_own_prob``, where it draws
   its own: contrast, gamma, brightness, hue and saturation from their ranges below, except that the right
   view's own saturation comes from ``right_own_saturation`` (-0.8, 1.2): the public code's range (a typo of
   0.8 that the reproduction keeps; a negative factor inverts the chroma).

Jitters (the semantics of torchvision's functional ops on PIL images, which CroCo uses): brightness
``v * f``; contrast ``m + f (v - m)`` with m the rounded mean of the gray image; saturation ``g + f (v - g)``
with g the pixel's gray level (ITU-R 601-2 luma); hue: the HSV hue (0-255 circle) shifted by
``int(f * 255)``; gamma ``255.999 (v / 255) ** f`` truncated. Every result is clipped to 0-255.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import cv2
import numpy as np

from madis_stereo.data.base import Sample

__all__ = ["JITTERS", "LUMA", "AugmentConfig", "Augmentor", "ColorStep", "adjust", "draw_color_plan",
           "right_perturbation"]

JITTERS = ("contrast", "gamma", "brightness", "hue", "saturation")
LUMA = (299, 587, 114)  # ITU-R 601-2 luma weights in 1/1000 (PIL's convert("L"))


def _check_range(name: str, value: tuple[float, float], low: float = -math.inf) -> None:
    if len(value) != 2 or not low <= value[0] <= value[1]:
        raise ValueError(f"{name} must be a range [min, max] with {low} <= min <= max, got {list(value)}")


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Augmentation settings; the defaults are CroCo-Stereo's (see the module docstring), crop 352x704."""

    crop: tuple[int, int] = (352, 704)
    scale_prob: float = 0.5
    scale_log2_small: tuple[float, float] = (0.0, 1.0)
    scale_log2_large: tuple[float, float] = (-0.2, 0.4)
    large_threshold: float = 800.0
    crop_margin: int = 8
    vflip_prob: float = 0.5
    right_perturb_prob: float = 0.5
    max_rotation_deg: float = 0.1
    max_vshift_px: float = 2.0
    color_single_prob: float = 0.5
    jitter_prob: float = 0.5
    right_own_prob: float = 0.5
    contrast: tuple[float, float] = (0.8, 1.2)
    gamma: tuple[float, float] = (0.7, 1.5)
    brightness: tuple[float, float] = (0.5, 2.0)
    hue: tuple[float, float] = (-0.1, 0.1)
    saturation: tuple[float, float] = (0.8, 1.2)
    right_own_saturation: tuple[float, float] = (-0.8, 1.2)

    def __post_init__(self) -> None:
        if len(self.crop) != 2 or min(self.crop) < 1:
            raise ValueError(f"crop must be (height, width) > 0, got {list(self.crop)}")
        for name in ("scale_log2_small", "scale_log2_large", "hue", "right_own_saturation"):
            _check_range(name, getattr(self, name))
        for name in ("contrast", "gamma", "brightness", "saturation"):
            _check_range(name, getattr(self, name), low=0.0)
        for name in ("scale_prob", "vflip_prob", "right_perturb_prob", "color_single_prob", "jitter_prob",
                     "right_own_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not (-0.5 <= self.hue[0] and self.hue[1] <= 0.5):
            raise ValueError(f"hue must lie in [-0.5, 0.5], got {list(self.hue)}")
        if self.max_rotation_deg < 0 or self.max_vshift_px < 0 or self.crop_margin < 0:
            raise ValueError("max_rotation_deg, max_vshift_px and crop_margin must be >= 0")

    def jitter_range(self, name: str, right_own: bool = False) -> tuple[float, float]:
        """The range a jitter's factor is drawn from (the right view's own draw for ``right_own``)."""
        return self.right_own_saturation if right_own and name == "saturation" else getattr(self, name)


@dataclasses.dataclass(frozen=True)
class ColorStep:
    """One jitter of the colour plan: its name and the left and right views' factors."""

    name: str
    left: float
    right: float
    right_own: bool


def draw_color_plan(rng: np.random.Generator, cfg: AugmentConfig) -> list[ColorStep]:
    """The jitters that fire for one sample, in order (step 5 of the module docstring)."""
    if rng.random() < cfg.color_single_prob:
        order = [JITTERS[int(rng.integers(len(JITTERS)))]]
    else:
        order = list(JITTERS)
        rng.shuffle(order)
    plan = []
    for name in order:
        if rng.random() >= cfg.jitter_prob:
            continue
        left = float(rng.uniform(*cfg.jitter_range(name)))
        own = bool(rng.random() < cfg.right_own_prob)
        right = float(rng.uniform(*cfg.jitter_range(name, right_own=True))) if own else left
        plan.append(ColorStep(name, left, right, own))
    return plan


def _u8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.round(values), 0, 255).astype(np.uint8)


def _gray(image: np.ndarray) -> np.ndarray:
    """ITU-R 601-2 luma of a uint8 RGB image, rounded as PIL's ``convert("L")`` does (int32)."""
    rgb = image.astype(np.int32)
    return (rgb[..., 0] * LUMA[0] + rgb[..., 1] * LUMA[1] + rgb[..., 2] * LUMA[2] + 500) // 1000


def adjust(image: np.ndarray, name: str, factor: float) -> np.ndarray:
    """Apply one jitter (``JITTERS``) with ``factor`` to a uint8 ``HxWx3`` RGB image."""
    levels = np.arange(256, dtype=np.float64)
    if name == "brightness":
        return cv2.LUT(image, _u8(levels * factor))
    if name == "contrast":
        mean = int(_gray(image).mean() + 0.5)
        return cv2.LUT(image, _u8(mean + factor * (levels - mean)))
    if name == "gamma":
        return cv2.LUT(image, np.clip(np.floor(255.999 * (levels / 255) ** factor), 0, 255).astype(np.uint8))
    if name == "saturation":
        gray = _gray(image)[..., None].astype(np.float32)
        return _u8(gray + np.float32(factor) * (image.astype(np.float32) - gray))
    if name == "hue":
        hsv = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2HSV_FULL)
        hsv[..., 0] = (hsv[..., 0].astype(np.int32) + int(factor * 255)) % 256
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB_FULL)
    raise ValueError(f"unknown jitter {name!r}; expected one of {', '.join(JITTERS)}")


def right_perturbation(rng: np.random.Generator, cfg: AugmentConfig, width: int,
                       height: int) -> tuple[np.ndarray, np.ndarray]:
    """Step 4's draws: the rotation and then the vertical shift, as two 2x3 source->destination matrices."""
    shift = float(rng.uniform(-cfg.max_vshift_px, cfg.max_vshift_px))
    angle = float(rng.uniform(-cfg.max_rotation_deg, cfg.max_rotation_deg))
    centre = (float(rng.uniform(0, height)), float(rng.uniform(0, width)))  # as the public code draws it
    return cv2.getRotationMatrix2D(centre, angle, 1.0), np.array([[1.0, 0.0, 0.0], [0.0, 1.0, shift]])


def apply_color_plan(left: np.ndarray, right: np.ndarray,
                     plan: Sequence[ColorStep]) -> tuple[np.ndarray, np.ndarray]:
    for step in plan:
        left, right = adjust(left, step.name, step.left), adjust(right, step.name, step.right)
    return left, right


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
        contiguous = np.ascontiguousarray
        left, right = contiguous(left), contiguous(right)
        if rng.random() < cfg.right_perturb_prob:
            right = self._perturb_right(right, rng)
        left, right = apply_color_plan(left, right, draw_color_plan(rng, cfg))
        return {**sample, "left": contiguous(left), "right": contiguous(right),
                "disparity": contiguous(disparity) if disparity is not None else None,
                "nonocc": contiguous(nonocc) if nonocc is not None else None, "calib": None}

    def scale_factors(self, height: int, width: int, rng: np.random.Generator) -> tuple[float, float]:
        """(x, y) resize factors of step 1 for an image of ``height`` x ``width``."""
        cfg = self.cfg
        crop_h, crop_w = cfg.crop
        least_x = (crop_w + cfg.crop_margin) / width
        if rng.random() < cfg.scale_prob:
            low, high = cfg.scale_log2_small if min(height, width) < cfg.large_threshold else cfg.scale_log2_large
            sx = max(2.0 ** rng.uniform(low, high), least_x)
        else:
            sx = max(1.0, least_x)
        return float(sx), max(1.0, crop_h / height)

    def _scale(self, left, right, disparity, nonocc, rng):
        sx, sy = self.scale_factors(*left.shape[:2], rng)
        if (sx, sy) == (1.0, 1.0):
            return left, right, disparity, nonocc
        resize = dict(dsize=None, fx=sx, fy=sy)
        left = cv2.resize(left, interpolation=cv2.INTER_LINEAR, **resize)
        right = cv2.resize(right, interpolation=cv2.INTER_LINEAR, **resize)
        if disparity is not None:  # nearest keeps invalid (inf) pixels and edges; values scale with x
            disparity = cv2.resize(disparity, interpolation=cv2.INTER_NEAREST, **resize) * np.float32(sx)
        if nonocc is not None:
            nonocc = cv2.resize(nonocc.astype(np.uint8), interpolation=cv2.INTER_NEAREST, **resize).astype(bool)
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
        for matrix in right_perturbation(rng, self.cfg, width, height):  # two bilinear warps, zero border
            right = cv2.warpAffine(right, matrix, (width, height), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return right
