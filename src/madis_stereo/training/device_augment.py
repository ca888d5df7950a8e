"""CroCo-Stereo augmentation of batches that already live on the device (``data.render_on_device``).

The steps of ``data.augment.Augmentor`` that apply to pairs rendered at the crop size, in its order and with
its parameter draws (``right_perturbation``, ``draw_color_plan``) and jitter semantics: vertical flip (both
views and the GT), the right view's rotation about a random centre then vertical shift (two bilinear warps,
zero border; GT unchanged), and the colour plan (one jitter or all five in a random order, each with
probability 0.5, the right view redrawing its own factor with probability 0.5). Each warp and jitter rounds
to 8 bits, as the CPU version does, so the two agree to a grey level or two. The x-scale and crop do not
apply: the renderer draws at the crop size (``scale_prob`` must be 0; ``crop_margin`` is not used, so the
pairs equal the CPU version's with ``crop_margin: 0``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from madis_stereo.data.augment import LUMA, AugmentConfig, ColorStep, draw_color_plan, right_perturbation

__all__ = ["DeviceAugment"]


class DeviceAugment:
    """``DeviceAugment(cfg)(batch, rng)``: augment ``{"left", "right": uint8 [B, 3, H, W], "disparity":
    [B, 1, H, W]}`` on its device; every random draw comes from the numpy ``rng``."""

    def __init__(self, cfg: AugmentConfig) -> None:
        if cfg.scale_prob > 0:
            raise ValueError("on-device augmentation has no x-scale or crop: set scale_prob to 0")
        self.cfg = cfg

    def __call__(self, batch: dict[str, Tensor], rng: np.random.Generator) -> dict[str, Tensor]:
        cfg = self.cfg
        left, right, disparity = batch["left"], batch["right"], batch["disparity"]
        count, _, height, width = left.shape
        flips, warps, plans = [], [], []
        for _ in range(count):  # the Augmentor's draws, sample by sample (the same rng gives the same pairs)
            rng.random(), rng.integers(0, 1), rng.integers(0, 1)  # its scale branch (never, here) and crop (all)
            flips.append(rng.random() < cfg.vflip_prob)
            perturb = rng.random() < cfg.right_perturb_prob
            warps.append(right_perturbation(rng, cfg, width, height) if perturb else None)
            plans.append(draw_color_plan(rng, cfg))
        flip = torch.tensor(flips, device=left.device).view(count, 1, 1, 1)
        left, right = torch.where(flip, left.flip(-2), left), torch.where(flip, right.flip(-2), right)
        disparity = torch.where(flip, disparity.flip(-2), disparity)
        if any(w is not None for w in warps):
            for step in range(2):  # the rotation, then the shift
                right = _warp(right, [w[step] if w is not None else None for w in warps])
        if any(plans):
            left, right = _colour(left, right, plans)
        return {**batch, "left": left, "right": right, "disparity": disparity}


def _warp(images: Tensor, matrices: list[np.ndarray | None]) -> Tensor:
    """Warp each uint8 image by its 2x3 source->destination matrix (None: unchanged), bilinear, zero border
    (OpenCV's ``warpAffine`` with ``BORDER_CONSTANT`` 0)."""
    count, _, height, width = images.shape
    inverse = np.zeros((count, 2, 3))
    for i, m in enumerate(matrices):
        full = np.vstack([m if m is not None else np.eye(2, 3), [0, 0, 1]])
        inverse[i] = np.linalg.inv(full)[:2]
    inv = torch.as_tensor(inverse, dtype=torch.float32, device=images.device)
    ys, xs = torch.meshgrid(torch.arange(height, device=images.device, dtype=torch.float32),
                            torch.arange(width, device=images.device, dtype=torch.float32), indexing="ij")
    points = torch.stack([xs, ys, torch.ones_like(xs)], -1).view(1, -1, 3)
    source = (points @ inv.transpose(1, 2)).view(count, height, width, 2)
    grid = source / torch.tensor([(width - 1) / 2, (height - 1) / 2], device=images.device) - 1
    out = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def _colour(left: Tensor, right: Tensor, plans: list[list[ColorStep]]) -> tuple[Tensor, Tensor]:
    """Apply each sample's colour plan to its left and right uint8 images [B, 3, H, W]."""
    left, right = left.clone(), right.clone()
    for i, plan in enumerate(plans):
        for step in plan:
            left[i] = _jitter(left[i], step.name, step.left)
            right[i] = _jitter(right[i], step.name, step.right)
    return left, right


def _gray(image: Tensor) -> Tensor:
    """Integer luma [1, H, W] of a float RGB image [3, H, W] with integer values, rounded as PIL does."""
    weights = torch.tensor(LUMA, dtype=torch.float32, device=image.device).view(3, 1, 1)
    return torch.div((image * weights).sum(0, keepdim=True) + 500, 1000, rounding_mode="floor")


def _jitter(image: Tensor, name: str, factor: float) -> Tensor:
    """One jitter of ``data.augment.adjust`` on a uint8 image [3, H, W] on the device."""
    x = image.float()
    if name == "brightness":
        out = (x * factor).round()
    elif name == "contrast":
        mean = torch.floor(_gray(x).mean() + 0.5)
        out = (mean + factor * (x - mean)).round()
    elif name == "gamma":
        out = torch.floor(255.999 * (x / 255) ** factor)
    elif name == "saturation":
        gray = _gray(x)
        out = (gray + factor * (x - gray)).round()
    else:
        out = _hue_shift(x, int(factor * 255))
    return out.clamp_(0, 255).to(torch.uint8)


def _hue_shift(x: Tensor, shift: int) -> Tensor:
    """OpenCV's 8-bit RGB -> HSV_FULL (hue on a 0-255 circle, with its fixed-point division tables), hue +
    ``shift`` modulo 256, and OpenCV's HSV_FULL -> RGB back (which reads the hue on a 0-255 scale)."""
    rgb = x.long()
    r, g, b = rgb
    high, _ = rgb.max(0)
    low, _ = rgb.min(0)
    delta = high - low
    one = torch.ones_like(delta)
    hdiv = torch.round(256 * 4096 / (6.0 * torch.where(delta > 0, delta, one))).long()
    sdiv = torch.round(255 * 4096 / torch.where(high > 0, high, one).double()).long()
    num = torch.where(high == r, g - b, torch.where(high == g, b - r + 2 * delta, r - g + 4 * delta))
    h = torch.where(delta > 0, (num * hdiv + 2048) >> 12, 0 * delta)
    h = torch.where(h < 0, h + 256, h)
    s = torch.where(high > 0, (delta * sdiv + 2048) >> 12, 0 * delta).clamp(0, 255)
    h = (h.clamp(0, 255) + shift) % 256
    v = high.float()
    sector = h.float() * 6 / 255  # OpenCV reads the FULL hue back on a 0-255 scale
    index = torch.floor(sector)
    frac = sector - index
    sat = s.float() / 255
    p, q, t = v * (1 - sat), v * (1 - sat * frac), v * (1 - sat * (1 - frac))
    index = index.long() % 6
    choices = torch.stack([torch.stack(c) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))])
    out = choices.gather(0, index.view(1, 1, *index.shape).expand(1, 3, *index.shape))[0]
    return out.round()
