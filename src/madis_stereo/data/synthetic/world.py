"""An infinite, seeded synthetic stereo dataset with exact dense ground truth.

A scene is a stack of textured planar layers in left-image coordinates: a background plane, up to a few
full planes (floors, side walls) and many foreground objects (ellipses, rings, boxes, polygons, blobs,
thin bars and meshes; ``shapes.py``), each with its own texture (``textures.py``). Layer ``k`` covers
the analytic region ``S_k`` with disparity ``d_k(x, y) = a x + b y + c`` (a plane in 3D seen by a
rectified pair gives exactly this). Both views are rendered with a z-buffer on disparity (nearer =
larger disparity wins): the left view samples ``S_k`` at pixel centres, the right view samples it at the
left position ``x_l = (x_r + b y + c) / (1 - a)`` that projects to right pixel ``x_r`` (``x_r = x_l - d``).
A left pixel is non-occluded (``nonocc``) iff its surface point lands inside the right image and no other
layer covers that right position with a larger disparity. Photometric differences (per-view gain, bias,
gamma, per-surface gain, moving specular highlights, noise, blur) are applied after the geometry.

Sample ``i`` is a pure function of ``(seed, i)``; ``length`` is only a nominal epoch length.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterator

import cv2
import numpy as np

from madis_stereo.data.base import Sample
from madis_stereo.data.synthetic.config import SyntheticConfig
from madis_stereo.data.synthetic.scene import Layer, sample_scene

__all__ = ["SyntheticRender", "SyntheticStereo", "render_scene"]

_EPS = 1e-3  # disparity margin for "strictly nearer" (float32 round-off)
_NOISE_BANK = 1 << 21


@dataclasses.dataclass
class SyntheticRender:
    """One rendered pair with its geometry: images uint8 HxWx3; ``disparity`` / ``disparity_right``
    float32 HxW (dense, in the left / right view); ``nonocc`` bool HxW (left view; None when the config
    skips it); ``labels_*`` int16 HxW, the visible layer index per pixel."""

    left: np.ndarray
    right: np.ndarray
    disparity: np.ndarray
    nonocc: np.ndarray | None
    disparity_right: np.ndarray
    labels_left: np.ndarray
    labels_right: np.ndarray
    layers: list[Layer]


def _draw_view(layers: list[Layer], height: int, width: int,
               right: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Z-buffer the layers into one view: uint8 image, disparity (in that view) and layer labels."""
    image = np.zeros((height, width, 3), np.uint8)
    zbuf = np.full((height, width), -np.inf, np.float32)
    labels = np.full((height, width), -1, np.int16)
    for k, layer in enumerate(layers):
        box = layer.view_box(width, height, right)
        if box is None:
            continue
        x0, y0, x1, y1 = box
        ys = np.arange(y0, y1, dtype=np.float32)[:, None]  # columns/rows broadcast: 1-D work stays 1-D
        xs = np.arange(x0, x1, dtype=np.float32)[None, :]
        if right:  # x_l = (x_r + b y + c) / (1 - a), and d = x_l - x_r
            inv = np.float32(1 / (1 - layer.a))
            xl = xs * inv + (np.float32(layer.b) * ys + np.float32(layer.c)) * inv
            d = xl - xs
        else:
            xl = xs
            d = np.float32(layer.a) * xs + (np.float32(layer.b) * ys + np.float32(layer.c))
        d = np.broadcast_to(d, (y1 - y0, x1 - x0))
        write = d > zbuf[y0:y1, x0:x1]
        r0, r1, c0, c1 = 0, y1 - y0, 0, x1 - x0
        if layer.shape is not None:
            write &= layer.shape.contains(xl, ys)
            rows, cols = np.flatnonzero(write.any(axis=1)), np.flatnonzero(write.any(axis=0))
            if rows.size == 0:
                continue
            r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1  # shrink to what is drawn
            write, d = write[r0:r1, c0:c1], d[r0:r1, c0:c1]
        colour = layer.warp(x0 + c0, y0 + r0, c1 - c0, r1 - r0, right)
        gain = layer.gain[1 if right else 0]
        if gain != 1:
            colour = cv2.convertScaleAbs(colour, alpha=gain)
        ty, tx = slice(y0 + r0, y0 + r1), slice(x0 + c0, x0 + c1)
        mask = write.view(np.uint8)
        cv2.copyTo(np.ascontiguousarray(d), mask, zbuf[ty, tx])  # in place: dst is a view of the buffer
        cv2.copyTo(colour, mask, image[ty, tx])
        np.copyto(labels[ty, tx], k, where=write)
    return image, zbuf, labels


def _nonocc(layers: list[Layer], disparity: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Left pixels whose surface point is visible in the right view (exact, per layer)."""
    height, width = disparity.shape
    xr = np.arange(width, dtype=np.float32)[None, :] - disparity
    occluded = (xr < 0) | (xr > width - 1)
    dmin, dmax = float(disparity.min()), float(disparity.max())
    for k, layer in enumerate(layers):
        box = layer.view_box(width, height, right=True)
        if box is None:
            continue
        x0, y0, x1, y1 = box
        # left pixels that can land in the layer's right-view box, and are farther than its nearest point
        lx0, lx1 = max(0, math.floor(x0 - 1 + dmin)), min(width, math.ceil(x1 + dmax) + 1)
        nearest = max(layer.corner_disparities())
        sub = (slice(y0, y1), slice(lx0, lx1))
        sub_xr, sub_d = xr[sub], disparity[sub]
        cand = (sub_xr >= x0 - 1) & (sub_xr <= x1) & (sub_d < nearest - _EPS) & (labels[sub] != k)
        iy, ix = np.nonzero(cand)
        if iy.size == 0:
            continue
        yc = (iy + y0).astype(np.float32)
        xl = layer.source_x(sub_xr[iy, ix], yc)
        nearer = layer.disparity(xl, yc) > sub_d[iy, ix] + _EPS
        iy, ix, xl, yc = iy[nearer], ix[nearer], xl[nearer], yc[nearer]
        if layer.shape is not None and iy.size:
            inside = layer.shape.contains(xl, yc)
            iy, ix = iy[inside], ix[inside]
        occluded[sub][iy, ix] = True
    return ~occluded


def _specular(image: np.ndarray, labels: np.ndarray, layers: list[Layer], right: bool) -> None:
    """Add each layer's highlight (a Gaussian spot that moves on the surface between views)."""
    height, width = labels.shape
    for k, layer in enumerate(layers):
        if layer.specular is None:
            continue
        hx, hy, sigma, amp, shift = layer.specular
        if right:
            hx = hx - float(layer.disparity(np.float32(hx), np.float32(hy))) + shift
        r = int(3 * sigma) + 1
        x0, x1 = max(0, int(hx) - r), min(width, int(hx) + r + 1)
        y0, y1 = max(0, int(hy) - r), min(height, int(hy) + r + 1)
        if x0 >= x1 or y0 >= y1:
            continue
        gx = np.exp(-((np.arange(x0, x1, dtype=np.float32) - hx) ** 2) / (2 * sigma**2))
        gy = np.exp(-((np.arange(y0, y1, dtype=np.float32) - hy) ** 2) / (2 * sigma**2))
        spot = np.float32(255 * amp) * gy[:, None] * gx[None, :] * (labels[y0:y1, x0:x1] == k)
        image[y0:y1, x0:x1] = cv2.convertScaleAbs(image[y0:y1, x0:x1] + spot[:, :, None])


@functools.lru_cache(maxsize=1)
def _noise_bank() -> np.ndarray:
    """A fixed bank of standard normal values (drawing fresh ones costs more than rendering)."""
    return np.random.default_rng(20240902).standard_normal(_NOISE_BANK, dtype=np.float32)


def _photometric(image: np.ndarray, rng: np.random.Generator, cfg: SyntheticConfig, blur: float) -> np.ndarray:
    """Blur, per-view gain/bias/gamma (a lookup table) and sensor noise on a uint8 image."""
    out = cv2.GaussianBlur(image, (0, 0), blur) if blur > 0 else image
    if cfg.lighting > 0:
        # mild global differences: training augmentation adds strong asymmetric colour jitter anyway
        gain = math.exp(rng.uniform(-0.1, 0.1) * cfg.lighting)
        bias = rng.uniform(-0.02, 0.02) * cfg.lighting
        gamma = math.exp(rng.uniform(-0.08, 0.08) * cfg.lighting)
        lut = np.clip(((np.arange(256) / 255.0) ** gamma * gain + bias) * 255 + 0.5, 0, 255).astype(np.uint8)
        out = cv2.LUT(out, lut)
    if cfg.noise_std > 0 and rng.random() < 0.7:
        sigma = rng.uniform(0, cfg.noise_std) * 255
        bank, count = _noise_bank(), out.size
        if count <= bank.size:  # a random window of the bank: i.i.d. within the image
            start = int(rng.integers(0, bank.size - count + 1))
            noise = bank[start : start + count].reshape(out.shape)
        else:
            noise = rng.standard_normal(out.shape, dtype=np.float32)
        noisy = cv2.scaleAdd(noise, sigma, out.astype(np.float32))
        out = cv2.convertScaleAbs(cv2.max(noisy, 0.0))
    return out


def render_scene(layers: list[Layer], rng: np.random.Generator, cfg: SyntheticConfig) -> SyntheticRender:
    """Render both views of ``layers`` with ground truth (see the module docstring)."""
    height, width = cfg.size
    left, disparity, labels_left = _draw_view(layers, height, width, right=False)
    right, disparity_right, labels_right = _draw_view(layers, height, width, right=True)
    nonocc = _nonocc(layers, disparity, labels_left) if cfg.occlusion_mask else None
    _specular(left, labels_left, layers, right=False)
    _specular(right, labels_right, layers, right=True)
    blur = float(rng.uniform(0.3, 1.2)) if rng.random() < cfg.blur_prob else 0.0
    blur_right = blur * float(np.exp(rng.uniform(-0.2, 0.2))) if blur else 0.0
    return SyntheticRender(
        left=_photometric(left, rng, cfg, blur), right=_photometric(right, rng, cfg, blur_right),
        disparity=disparity, nonocc=nonocc, disparity_right=disparity_right,
        labels_left=labels_left, labels_right=labels_right, layers=layers,
    )


class SyntheticStereo:
    """Infinite seeded stereo data: ``ds[i]`` (any ``i >= 0``) is a pure function of (seed, i).

    ``len(ds)`` is the nominal epoch length (``config.length``); iteration stops there. Samples are dicts
    like the file datasets' (``disparity`` dense, ``nonocc`` exact, ``calib`` None). :meth:`get` with an
    epoch > 0 gives fresh scenes (index ``epoch * length + i``).
    """

    title = "synthetic"
    has_gt = True
    Spec = SyntheticConfig

    def __init__(self, config: SyntheticConfig | None = None, **changes) -> None:
        self.config = dataclasses.replace(config or SyntheticConfig(), **changes)

    def render(self, index: int) -> SyntheticRender:
        """The full render (images, both views' disparity and labels, the layers) of scene ``index``."""
        if index < 0:
            raise IndexError(f"synthetic sample index must be >= 0, got {index}")
        rng = np.random.default_rng([self.config.seed, index])
        layers = sample_scene(rng, self.config)
        return render_scene(layers, rng, self.config)

    def __len__(self) -> int:
        return self.config.length

    def __getitem__(self, index: int) -> Sample:
        out = self.render(index)
        return {"left": out.left, "right": out.right, "disparity": out.disparity, "nonocc": out.nonocc,
                "calib": None, "name": f"synthetic/{self.config.seed}/{index}"}

    def __iter__(self) -> Iterator[Sample]:
        return (self[i] for i in range(len(self)))

    def get(self, index: int, epoch: int = 0) -> Sample:
        return self[epoch * len(self) + index]

    def describe(self) -> str:
        c = self.config
        return (f"synthetic stereo (seed {c.seed}): {c.length} scenes per epoch (infinite), {c.size[0]}x{c.size[1]}, "
                f"disparity {c.min_disparity:g}-{c.max_disparity:g} px, {c.min_objects}-{c.max_objects} objects")

    def __repr__(self) -> str:
        return f"<SyntheticStereo seed={self.config.seed} length={self.config.length}>"
