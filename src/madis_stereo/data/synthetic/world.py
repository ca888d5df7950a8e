"""An infinite, seeded synthetic stereo dataset with exact dense ground truth (the NumPy/OpenCV reference
renderer; ``training/rendering.py`` renders the same scenes in batches on the training device).

A scene (``scene.py``) is a stack of textured layers in left-image coordinates: a background, floors and
side walls, and many foreground objects (ellipses, rings, boxes, polygons, blobs, thin bars and meshes;
``shapes.py``), each with its own quadratic disparity field ``d_k(x, y)`` (planes, bulges, cylinders) and a
texture from the atlas (``atlas.py``). Both views are rendered with a z-buffer on disparity (nearer = larger
disparity wins): the left view samples layer ``k`` at pixel centres, the right view at the left position
``x_l`` that projects to right pixel ``x_r`` (``x_l - d_k(x_l, y) = x_r``: closed form for planes, a
converged fixed-point iteration ``x_l <- x_r + d_k(x_l, y)`` for curved layers, a contraction since
``|dd/dx| <= MAX_SLANT``). A left pixel is non-occluded (``nonocc``) iff its surface point lands inside the
right image and no other layer covers that right position with a larger disparity. Surfaces are shaded by
their orientation (Lambert, one light per scene; the same in both views). The views then differ
photometrically (``lighting``): exposure, white balance, gamma and bias per view, per-surface gain,
specular highlights that move across the surface, sensor noise and blur that differ between the views.

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
from madis_stereo.data.synthetic.atlas import Atlas, build_atlas, reflect
from madis_stereo.data.synthetic.config import SyntheticConfig
from madis_stereo.data.synthetic.scene import (
    POLYGON_VERTICES,
    SHAPE_KINDS,
    SceneBatch,
    disparity_at,
    sample_scenes,
    shading,
    tone,
)
from madis_stereo.data.synthetic.shapes import Box, Ellipse, Fence, Radial, Ring, Shape

__all__ = ["SyntheticRender", "SyntheticStereo", "render_scene"]

_EPS = 1e-3  # disparity margin for "strictly nearer" (float32 round-off)
_NOISE_BANK = 1 << 21
_FIXED_POINT_STEPS = 16  # |dd/dx| <= 0.3: the error shrinks at least 0.3x per step (0.3^16 = 4e-9)


@dataclasses.dataclass
class SyntheticRender:
    """One rendered pair with its geometry: images uint8 HxWx3; ``disparity`` / ``disparity_right``
    float32 HxW (dense, in the left / right view); ``nonocc`` bool HxW (left view; None when the config
    skips it); ``labels_*`` int16 HxW, the visible layer index per pixel; ``scene`` the drawn scene."""

    left: np.ndarray
    right: np.ndarray
    disparity: np.ndarray
    nonocc: np.ndarray | None
    disparity_right: np.ndarray
    labels_left: np.ndarray
    labels_right: np.ndarray
    scene: SceneBatch


def make_shape(kind: int, params: np.ndarray) -> Shape | None:
    """The shapes.py region of a layer from its SceneBatch ``kind`` and ``shape`` parameters (None: full)."""
    name = SHAPE_KINDS[kind]
    cx, cy, angle, *rest = (float(v) for v in params)
    if name == "full":
        return None
    if name == "ellipse":
        return Ellipse(cx, cy, angle, rx=rest[0], ry=rest[1])
    if name == "ring":
        return Ring(cx, cy, angle, rx=rest[0], ry=rest[1], inner=rest[2])
    if name == "box":
        return Box(cx, cy, angle, hx=rest[0], hy=rest[1])
    if name == "fence":
        return Fence(cx, cy, angle, length=rest[0], half_width=rest[1], spacing=rest[2], count=round(rest[3]),
                     cross=rest[4] > 0.5)
    r0, aspect = rest[0], rest[1]
    if name == "blob":
        return Radial(cx, cy, angle, r0=r0, aspect=aspect, kind="blob", coeffs=tuple(rest[2:]))
    n, radii = round(rest[2]), 3 + POLYGON_VERTICES
    vertices = zip(rest[3 : 3 + n], rest[radii : radii + n])
    coeffs = tuple(v for pair in vertices for v in pair)
    return Radial(cx, cy, angle, r0=r0, aspect=aspect, kind="polygon", coeffs=coeffs)


class Layer:
    """Layer ``k`` of a one-scene SceneBatch, evaluated with NumPy (float32) at any left/right positions."""

    def __init__(self, scene: SceneBatch, k: int, atlas: Atlas) -> None:
        self.field = tuple(np.float32(v) for v in scene.field[0, k])
        self.curved = bool(np.any(scene.field[0, k, 5:] != 0))
        self.domain = tuple(float(v) for v in scene.domain[0, k])
        self.drange = tuple(float(v) for v in scene.drange[0, k])
        self.shape = make_shape(int(scene.kind[0, k]), scene.shape[0, k])
        self.tile = atlas.tiles[int(scene.tile[0, k])]
        self.mean = atlas.means[int(scene.tile[0, k])]
        self.texmap = scene.texmap[0, k]
        self.contrast = np.float32(scene.contrast[0, k])
        self.tint = scene.tint[0, k]
        self.gain_right = np.float32(scene.gain_right[0, k])
        self.specular = tuple(float(v) for v in scene.specular[0, k])
        height, width = scene.size
        self.light = tuple(np.float32(v) for v in scene.light[0])
        self.ambient, self.focal = np.float32(scene.ambient[0]), scene.focal
        self.centre = (width / 2, height / 2)

    def disparity(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return disparity_at(self.field, x, y)

    def source_x(self, xr: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Left x of the surface point seen at right x ``xr`` (solves ``x - d(x, y) = xr``)."""
        px, py, d0, gx, gy = self.field[:5]
        planar = (xr + (d0 - gx * px) + gy * (y - py)) / (1 - gx)  # exact for a plane
        if not self.curved:
            return planar
        lo, hi = np.float32(self.domain[0] - 1), np.float32(self.domain[2] + 1)
        x = np.clip(np.broadcast_to(planar, np.broadcast_shapes(np.shape(xr), np.shape(y))), lo, hi)
        for _ in range(_FIXED_POINT_STEPS):  # from the tangent plane's solution at (px, py)
            x = np.clip(xr + self.disparity(x, y), lo, hi)
        return x

    def contains(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        x0, y0, x1, y1 = self.domain
        inside = (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
        return inside & self.shape.contains(x, y) if self.shape is not None else inside

    def view_box(self, width: int, height: int, right: bool) -> tuple[int, int, int, int] | None:
        """Integer pixel box (x0, y0, x1, y1) of the view that this layer may cover, or None."""
        x0, y0, x1, y1 = self.domain
        if right:
            x0, x1 = x0 - self.drange[1], x1 - self.drange[0]
        bx0, bx1 = max(0, math.floor(x0) - 1), min(width, math.ceil(x1) + 2)
        by0, by1 = max(0, math.floor(y0)), min(height, math.ceil(y1) + 1)
        return (bx0, by0, bx1, by1) if bx0 < bx1 and by0 < by1 else None

    def colours(self, x: np.ndarray, y: np.ndarray, origin: tuple[int, int], right: bool) -> np.ndarray:
        """Linear colours float32 ``h x w x 3`` (0-255) of the surface at left positions (x, y) ``h x w``,
        seen at the view pixels from ``origin`` (x0, y0) on."""
        height, width = x.shape
        gain = self.tint * (self.gain_right if right else np.float32(1))
        if self.curved:  # texel coordinates and shading vary non-linearly: per pixel
            m = self.texmap
            size = self.tile.shape[0]
            tx = reflect(m[0, 0] * x + m[0, 1] * y + m[0, 2], size).astype(np.float32)
            ty = reflect(m[1, 0] * x + m[1, 1] * y + m[1, 2], size).astype(np.float32)
            texture = cv2.remap(self.tile, tx, ty, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            colour = self.mean + self.contrast * (texture.astype(np.float32) - self.mean)
            shade = shading(self.field, x, y, self.light, self.ambient, self.focal, self.centre)
            return colour * (shade[:, :, None] * gain)
        # a plane: texels are an affine function of the view pixel (one warp, mirrored borders as reflect()),
        # and its normal, hence its shading, is constant
        texture = cv2.warpAffine(self.tile, self._view_to_texel(origin, right), (width, height),
                                 flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT_101)
        px, py = self.field[:2]
        gain = gain * shading(self.field, px, py, self.light, self.ambient, self.focal, self.centre)
        # (mean + contrast (texture - mean)) gain, per channel
        matrix = np.concatenate([np.diag(gain * self.contrast), (gain * self.mean * (1 - self.contrast))[:, None]], 1)
        return cv2.transform(texture.astype(np.float32), matrix.astype(np.float32))

    def _view_to_texel(self, origin: tuple[int, int], right: bool) -> np.ndarray:
        """2x3 map from view pixel (column, row) offsets from ``origin`` to tile texels (planar layers):
        the texture map after ``x_l = alpha x + beta y + gamma`` (identity in the left view)."""
        px, py, d0, gx, gy = (float(v) for v in self.field[:5])
        alpha, beta, gamma = (1 / (1 - gx), gy / (1 - gx), (d0 - gx * px - gy * py) / (1 - gx)) if right else (1, 0, 0)
        x0, y0 = origin
        m = self.texmap.astype(np.float64)
        out = np.empty((2, 3))
        for r in range(2):
            out[r] = [m[r, 0] * alpha, m[r, 0] * beta + m[r, 1],
                      m[r, 0] * (alpha * x0 + beta * y0 + gamma) + m[r, 1] * y0 + m[r, 2]]
        return out


def _draw_view(layers: list[Layer], height: int, width: int,
               right: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Z-buffer the layers into one view: float32 linear image, disparity (in that view) and layer labels."""
    image = np.zeros((height, width, 3), np.float32)
    zbuf = np.full((height, width), -np.inf, np.float32)
    labels = np.full((height, width), -1, np.int16)
    for k, layer in enumerate(layers):
        box = layer.view_box(width, height, right)
        if box is None:
            continue
        x0, y0, x1, y1 = box
        ys = np.arange(y0, y1, dtype=np.float32)[:, None]
        xs = np.arange(x0, x1, dtype=np.float32)[None, :]
        xl = np.broadcast_to(layer.source_x(xs, ys) if right else xs, (y1 - y0, x1 - x0))
        d = layer.disparity(xl, ys)
        write = (d > zbuf[y0:y1, x0:x1]) & layer.contains(xl, ys)
        rows, cols = np.flatnonzero(write.any(axis=1)), np.flatnonzero(write.any(axis=0))
        if rows.size == 0:
            continue
        r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1  # shrink to what is drawn
        write, d, xl = write[r0:r1, c0:c1], d[r0:r1, c0:c1], xl[r0:r1, c0:c1]
        colour = layer.colours(xl, ys[r0:r1], (x0 + c0, y0 + r0), right)
        ty, tx = slice(y0 + r0, y0 + r1), slice(x0 + c0, x0 + c1)
        np.copyto(zbuf[ty, tx], d, where=write)
        np.copyto(image[ty, tx], colour, where=write[:, :, None])
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
        sub = (slice(y0, y1), slice(lx0, lx1))
        sub_xr, sub_d = xr[sub], disparity[sub]
        cand = (sub_xr >= x0 - 1) & (sub_xr <= x1) & (sub_d < layer.drange[1] - _EPS) & (labels[sub] != k)
        iy, ix = np.nonzero(cand)
        if iy.size == 0:
            continue
        yc = (iy + y0).astype(np.float32)
        xl = layer.source_x(sub_xr[iy, ix], yc)
        hidden = (layer.disparity(xl, yc) > sub_d[iy, ix] + _EPS) & layer.contains(xl, yc)
        occluded[sub][iy[hidden], ix[hidden]] = True
    return ~occluded


def _specular(image: np.ndarray, labels: np.ndarray, layers: list[Layer], right: bool) -> None:
    """Add each layer's highlight (a Gaussian spot that moves on the surface between views), in place."""
    height, width = labels.shape
    for k, layer in enumerate(layers):
        hx, hy, sigma, amp, shift = layer.specular
        if amp <= 0:
            continue
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
        image[y0:y1, x0:x1] += spot[:, :, None]


@functools.lru_cache(maxsize=1)
def _noise_bank() -> np.ndarray:
    """A fixed bank of standard normal values (drawing fresh ones costs more than rendering)."""
    return np.random.default_rng(20240902).standard_normal(_NOISE_BANK, dtype=np.float32)


def _camera(image: np.ndarray, scene: SceneBatch, view: int, rng: np.random.Generator) -> np.ndarray:
    """One view's camera: exposure/white balance/gamma/bias, blur, sensor noise; linear float -> uint8."""
    gain = scene.exposure[0, view] * scene.white[0, view]
    out = tone(image, gain, scene.gamma[0, view], scene.bias[0, view]).astype(np.float32)
    sigma = float(scene.blur[0, view])
    if sigma > 0:
        out = cv2.GaussianBlur(out, (0, 0), sigma)
    std = float(scene.noise[0, view]) * 255
    if std > 0:
        bank, count = _noise_bank(), out.size
        if count <= bank.size:  # a random window of the bank: i.i.d. within the image
            start = int(rng.integers(0, bank.size - count + 1))
            noise = bank[start : start + count].reshape(out.shape)
        else:
            noise = rng.standard_normal(out.shape, dtype=np.float32)
        out = cv2.scaleAdd(noise, std, out)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def render_scene(scene: SceneBatch, atlas: Atlas, rng: np.random.Generator, cfg: SyntheticConfig) -> SyntheticRender:
    """Render both views of the one scene in ``scene`` with ground truth (see the module docstring);
    ``rng`` draws the sensor noise."""
    height, width = cfg.size
    layers = [Layer(scene, k, atlas) for k in np.flatnonzero(scene.active[0])]
    left, disparity, labels_left = _draw_view(layers, height, width, right=False)
    right, disparity_right, labels_right = _draw_view(layers, height, width, right=True)
    nonocc = _nonocc(layers, disparity, labels_left) if cfg.occlusion_mask else None
    _specular(left, labels_left, layers, right=False)
    _specular(right, labels_right, layers, right=True)
    return SyntheticRender(
        left=_camera(left, scene, 0, rng), right=_camera(right, scene, 1, rng),
        disparity=disparity, nonocc=nonocc, disparity_right=disparity_right,
        labels_left=labels_left, labels_right=labels_right, scene=scene,
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
        """The full render (images, both views' disparity and labels, the scene) of scene ``index``."""
        if index < 0:
            raise IndexError(f"synthetic sample index must be >= 0, got {index}")
        rng = np.random.default_rng([self.config.seed, index])
        c = self.config
        atlas = build_atlas(c.seed, c.atlas_tiles, c.atlas_tile_size)
        return render_scene(sample_scenes(rng, c, 1, atlas.count, atlas.size), atlas, rng, c)

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
