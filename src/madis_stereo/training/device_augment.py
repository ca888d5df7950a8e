"""CroCo-Stereo augmentation of batches that already live on the device (``data.render_on_device``).

The steps of ``data.augment.Augmentor`` that apply to pairs rendered at the crop size, in its order and with
its parameter draws and formulas: vertical flip (both views and the GT), a small rotation and vertical shift
of the right image only (GT unchanged), asymmetric colour jitter (brightness, contrast around the mean grey,
saturation and hue as a YIQ colour matrix, gamma). The arithmetic is float on the device with one rounding at
the end (the CPU version rounds through 8-bit lookup tables after each step), so the two agree to a grey
level or two. The x-scale and crop do not apply: the renderer draws at the crop size, with its own range of
disparities.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from madis_stereo.data.augment import GREY_WEIGHTS, AugmentConfig, chroma_matrix, draw_color, right_perturbation

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
        flips, warps, colours = [], [], []
        for _ in range(count):  # the Augmentor's draws, sample by sample (the same rng gives the same pairs)
            rng.random(), rng.integers(0, 1), rng.integers(0, 1)  # its x-scale (never, here) and crop (all)
            flips.append(rng.random() < cfg.vflip_prob)
            perturb = rng.random() < cfg.right_perturb_prob
            warps.append(right_perturbation(rng, cfg, width, height) if perturb else None)
            if rng.random() < cfg.color_prob:
                first = draw_color(rng, cfg)
                colours.append((first, draw_color(rng, cfg) if rng.random() < cfg.asymmetric_prob else first))
            else:
                colours.append(None)
        flip = torch.tensor(flips, device=left.device).view(count, 1, 1, 1)
        left, right = torch.where(flip, left.flip(-2), left), torch.where(flip, right.flip(-2), right)
        disparity = torch.where(flip, disparity.flip(-2), disparity)
        if any(w is not None for w in warps):
            right = _warp(right, warps)
        if any(c is not None for c in colours):
            left = _colour(left, [c[0] if c else None for c in colours])
            right = _colour(right, [c[1] if c else None for c in colours])
        return {**batch, "left": left, "right": right, "disparity": disparity}


def _warp(images: Tensor, matrices: list[np.ndarray | None]) -> Tensor:
    """Warp each uint8 image by its 2x3 source->destination matrix (None: unchanged), bilinear, mirrored
    borders (OpenCV's ``warpAffine`` with ``BORDER_REFLECT_101``)."""
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
    out = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="reflection", align_corners=True)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def _colour(images: Tensor, params: list) -> Tensor:
    """Colour-jitter each uint8 image [B, 3, H, W] with its ``ColorParams`` (None: unchanged)."""
    count = images.shape[0]
    dev = images.device
    identity = np.eye(3)
    values = np.array([[p.brightness, p.contrast, p.gamma] if p else [1.0, 1.0, 1.0] for p in params])
    matrices = np.stack([chroma_matrix(p) if p else identity for p in params])
    brightness, contrast, gamma = (torch.as_tensor(values[:, i], dtype=torch.float32, device=dev).view(count, 1, 1, 1)
                                   for i in range(3))
    out = (images.float() * brightness).clamp(0, 255)
    weights = torch.as_tensor(GREY_WEIGHTS, dtype=torch.float32, device=dev).view(1, 3, 1, 1)
    mean = (out * weights).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    out = (mean + (out - mean) * contrast).clamp(0, 255)
    matrix = torch.as_tensor(matrices, dtype=torch.float32, device=dev)
    out = torch.einsum("bij,bjhw->bihw", matrix, out).clamp(0, 255)
    out = 255 * (out / 255) ** gamma
    return out.round_().clamp_(0, 255).to(torch.uint8)
