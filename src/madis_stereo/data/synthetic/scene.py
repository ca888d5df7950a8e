"""Random layered scenes for the synthetic stereo renderer: textured planes with exact affine disparity.

Coordinates are left-image pixels (x right, y down, pixel centres at integers). The *canvas* is the range
of left x positions a right-image pixel can see: ``[-2, W + max_disparity + 2]``.
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

from madis_stereo.data.synthetic.config import SyntheticConfig
from madis_stereo.data.synthetic.shapes import Shape, random_shape
from madis_stereo.data.synthetic.textures import multiply, pick, random_texture

__all__ = ["Layer", "sample_scene"]

MAX_SLANT = 0.3  # |dd/dx| of objects; keeps 1 - a well away from 0 (no surface seen edge-on)


@dataclasses.dataclass
class Layer:
    """A textured planar surface: disparity ``a x + b y + c`` over ``shape`` (None = everywhere in
    ``box``); texture pixel (0, 0) sits at left position (ox, oy) and ``scale`` texture pixels span one
    image pixel (< 1: a smooth, defocused-looking surface); ``gain`` = (left, right) brightness;
    ``specular`` = (x, y, sigma, amplitude, shift) of a highlight or None."""

    a: float
    b: float
    c: float
    shape: Shape | None
    texture: np.ndarray  # uint8 h x w x 3
    ox: float
    oy: float
    box: tuple[float, float, float, float]
    gain: tuple[float, float] = (1.0, 1.0)
    specular: tuple[float, float, float, float, float] | None = None
    scale: float = 1.0

    def disparity(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.float32(self.a) * x + np.float32(self.b) * y + np.float32(self.c)

    def source_x(self, xr: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Left x of the surface point seen at right x ``xr`` (solves ``x - d(x, y) = xr``)."""
        return (xr + np.float32(self.b) * y + np.float32(self.c)) / np.float32(1 - self.a)

    def warp(self, x0: int, y0: int, width: int, height: int, right: bool) -> np.ndarray:
        """The layer's colours (uint8 ``height x width x 3``) at view pixels ``[x0, x0 + width) x [y0, y0 + height)``.

        Both views are affine warps of the texture: the left view a translation, the right view
        ``x_l = (x_r + b y + c) / (1 - a)``; bilinear interpolation, mirrored borders.
        """
        if right:
            inv = 1.0 / (1.0 - self.a)
            matrix = [[inv, inv * self.b, inv * (x0 + self.b * y0 + self.c) - self.ox], [0.0, 1.0, y0 - self.oy]]
        else:
            matrix = [[1.0, 0.0, x0 - self.ox], [0.0, 1.0, y0 - self.oy]]
        matrix = np.asarray(matrix, dtype=np.float64) * self.scale
        return cv2.warpAffine(self.texture, matrix, (width, height),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT)

    def corner_disparities(self) -> list[float]:
        """Disparities at the four corners of ``box`` (their min/max bound the layer's disparity)."""
        x0, y0, x1, y1 = self.box
        return [self.a * x + self.b * y + self.c for x in (x0, x1) for y in (y0, y1)]

    def view_box(self, width: int, height: int, right: bool) -> tuple[int, int, int, int] | None:
        """Integer pixel box (x0, y0, x1, y1) of the view that this layer may cover, or None."""
        x0, y0, x1, y1 = self.box
        if right:
            xs = [x - (self.a * x + self.b * y + self.c) for x in (x0, x1) for y in (y0, y1)]
            x0, x1 = min(xs), max(xs)
        bx0, bx1 = max(0, math.floor(x0) - 1), min(width, math.ceil(x1) + 2)
        by0, by1 = max(0, math.floor(y0)), min(height, math.ceil(y1) + 1)
        return (bx0, by0, bx1, by1) if bx0 < bx1 and by0 < by1 else None


def _textured(rng: np.random.Generator, cfg: SyntheticConfig, box: tuple[float, float, float, float],
              shade: bool) -> dict:
    """Layer keywords for a uint8 texture covering ``box``: random sub-pixel origin, texture resolution
    1, 1/2 or 1/4 per image pixel (sharp or smooth surfaces), optionally a shading gradient."""
    x0, y0, x1, y1 = box
    ox, oy = x0 - 1 - float(rng.random()), y0 - 1 - float(rng.random())
    scale = (1.0, 0.5, 0.25)[pick(rng, (0.7, 0.22, 0.08))]
    w, h = int(math.ceil((x1 - x0 + 4) * scale)) + 2, int(math.ceil((y1 - y0 + 4) * scale)) + 2
    texture = random_texture(rng, h, w, cfg.textureless_prob)
    if shade and rng.random() < 0.5:
        gx, gy = rng.uniform(-0.4, 0.4, 2)
        ramp_x, ramp_y = np.linspace(-gx, gx, w, dtype=np.float32), np.linspace(-gy, gy, h, dtype=np.float32)
        texture = multiply(texture, 1 + ramp_x[None, :] + ramp_y[:, None])
    return {"texture": texture, "ox": ox, "oy": oy, "scale": scale}


def _fit(a: float, b: float, d0: float, half_w: float, half_h: float, lo: float, hi: float) -> tuple[float, float]:
    """Shrink the gradient (a, b) so that d0 +- (|a| half_w + |b| half_h) stays within [lo, hi]."""
    spread = abs(a) * half_w + abs(b) * half_h
    room = max(0.0, min(d0 - lo, hi - d0))
    scale = min(1.0, room / spread) if spread > 0 else 1.0
    return a * scale, b * scale


def _background(rng, cfg, canvas) -> Layer:
    height, width = cfg.size
    lo, hi = cfg.min_disparity, cfg.max_disparity
    xlo, xhi = canvas
    d0 = lo + (hi - lo) * 0.6 * float(rng.random()) ** 2
    a = b = 0.0
    if rng.random() < cfg.slant_prob:
        a, b = (float(v) for v in rng.uniform(-0.15, 0.15, 2))
        a, b = _fit(a, b, d0, max(width / 2 - xlo, xhi - width / 2), height / 2, lo, hi)
    c = d0 - a * width / 2 - b * height / 2
    # the right view sees left x up to W + d: the texture need not cover the whole canvas
    reach = max(a * x + b * y + c for x in (xlo, xhi) for y in (0, height))
    box = (xlo, -1.0, min(xhi, width + reach + 3), float(height))
    return Layer(a, b, c, None, box=box, **_textured(rng, cfg, box, shade=True))


def _extra_plane(rng, cfg, background: Layer, canvas) -> Layer | None:
    """A floor (disparity growing downwards) or a side wall (growing towards one side)."""
    height, width = cfg.size
    hi = cfg.max_disparity
    xlo, xhi = canvas
    if rng.random() < 0.6:
        yh = float(rng.uniform(0.2, 0.85)) * height
        dh = float(background.disparity(np.float32(width / 2), np.float32(yh)))
        b = min(0.8, float(rng.uniform(0.15, 1.0)) * (hi - dh) / max(height - 1 - yh, 1.0))
        a = 0.0
        c = dh - b * yh
    else:
        left_side = rng.random() < 0.5
        xw = float(rng.uniform(0.05, 0.45)) * width
        xw = xw if left_side else width - xw
        dw = float(background.disparity(np.float32(xw), np.float32(height / 2)))
        reach = (xw - xlo) if left_side else (xhi - xw)
        a = min(MAX_SLANT, float(rng.uniform(0.1, 1.0)) * (hi - dw) / reach) * (-1 if left_side else 1)
        b, c = 0.0, dw - a * xw
    # keep only the part that can be in front of the background
    floor = min(float(background.disparity(np.float32(x), np.float32(y))) for x in canvas for y in (0, height))
    ys = np.arange(-1, height + 1, dtype=np.float32)
    rows = ys[np.maximum(a * xlo, a * xhi) + b * ys + c >= floor - 1]
    xs = np.arange(math.floor(xlo), math.ceil(xhi) + 1, dtype=np.float32)
    cols = xs[a * xs + np.maximum(b * -1, b * height) + c >= floor - 1]
    if rows.size == 0 or cols.size == 0:
        return None
    box = (float(cols[0]), float(rows[0]), float(cols[-1]), float(rows[-1]))
    return Layer(a, b, c, None, box=box, **_textured(rng, cfg, box, shade=True))


def _object(rng, cfg, planes: list[Layer], canvas) -> Layer | None:
    height, width = cfg.size
    lo, hi = cfg.min_disparity, cfg.max_disparity
    xlo, xhi = canvas
    size = min(height, width) * math.exp(rng.uniform(math.log(0.02), math.log(0.4)))
    cx, cy = float(rng.uniform(-0.1, 1.1)) * width, float(rng.uniform(-0.1, 1.1)) * height
    shape = random_shape(rng, cx, cy, size, cfg.thin_prob)
    x0, y0, x1, y1 = shape.bbox
    box = (max(x0, xlo), max(y0, -1.0), min(x1, xhi), min(y1, float(height)))
    if box[0] >= box[2] or box[1] >= box[3]:
        return None
    px, py = np.float32(min(max(cx, xlo), xhi)), np.float32(min(max(cy, 0), height - 1))
    behind = max(float(p.disparity(px, py)) for p in planes)
    d0 = min(hi, behind + (hi - behind) * float(rng.uniform(0.02, 1.0)) ** 1.5)
    a = b = 0.0
    if rng.random() < cfg.slant_prob:
        a, b = (float(v) for v in rng.uniform(-MAX_SLANT, MAX_SLANT, 2))
        a, b = _fit(a, b, d0, max(cx - box[0], box[2] - cx), max(cy - box[1], box[3] - cy), lo, hi)
    texture = _textured(rng, cfg, box, shade=True)
    gain = (1.0, math.exp(rng.normal(0, 0.06 * cfg.lighting))) if cfg.lighting > 0 else (1.0, 1.0)
    specular = None
    if cfg.lighting > 0 and rng.random() < cfg.specular_prob:
        specular = (float(rng.uniform(box[0], box[2])), float(rng.uniform(box[1], box[3])),
                    float(rng.uniform(2, max(3.0, 0.5 * size))), float(rng.uniform(0.2, 0.8)) * min(1.0, cfg.lighting),
                    float((1 if rng.random() < 0.5 else -1) * rng.uniform(1, 10)))
    return Layer(a, b, d0 - a * cx - b * cy, shape, box=box, gain=gain, specular=specular, **texture)


def sample_scene(rng: np.random.Generator, cfg: SyntheticConfig) -> list[Layer]:
    """Background, 0..max_extra_planes floors/walls, then min_objects..max_objects foreground objects."""
    width = cfg.size[1]
    canvas = (-2.0, width + cfg.max_disparity + 2.0)
    layers = [_background(rng, cfg, canvas)]
    for _ in range(int(rng.integers(0, cfg.max_extra_planes + 1))):
        plane = _extra_plane(rng, cfg, layers[0], canvas)
        if plane is not None:
            layers.append(plane)
    planes = list(layers)
    for _ in range(int(rng.integers(cfg.min_objects, cfg.max_objects + 1))):
        layer = _object(rng, cfg, planes, canvas)
        if layer is not None:
            layers.append(layer)
    return layers
