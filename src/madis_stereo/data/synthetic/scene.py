"""Random layered scenes for the synthetic stereo renderers, drawn in batches as arrays.

Both renderers (the NumPy/OpenCV reference in ``world.py`` and the batched torch one in
``training/rendering.py``) draw scenes with :func:`sample_scenes`, so they share one scene distribution exactly.
Coordinates are left-image pixels (x right, y down, pixel centres at integers). The *canvas* is the range
of left x positions a right-image pixel can see: ``[-2, W + max_disparity + 2]``.

A scene is a stack of ``L`` layers (a background, ``max_extra_planes`` floor/wall slots and ``max_objects``
object slots; unused slots are inactive). Layer ``k`` covers the region ``S_k`` (an analytic shape, or its
whole domain box) with the quadratic disparity field

    d(x, y) = d0 + gx u + gy v + (hxx u^2 + 2 hxy u v + hyy v^2) / 2,   u = x - px, v = y - py,

a plane when the curvatures ``h`` are 0 (a plane in 3D seen by a rectified pair gives exactly an affine
disparity), a bulge, bowl or cylinder otherwise. Every field keeps ``|dd/dx| <= MAX_SLANT < 1`` and
``d`` within [min_disparity, max_disparity] on its domain, so the right-view inverse mapping ``x_l - d(x_l, y)
= x_r`` has exactly one solution there. Surface orientation (for shading) follows from the disparity
gradient: with focal length ``f`` and principal point ``(cx, cy)`` the tangent plane at a pixel has the normal
``(f dd/dx, f dd/dy, d - dd/dx (x - cx) - dd/dy (y - cy))``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from madis_stereo.data.synthetic.config import SyntheticConfig

__all__ = [
    "BLOB_HARMONICS", "FIELD_KEYS", "MAX_SLANT", "POLYGON_VERTICES", "SHAPE_KINDS", "SHAPE_PARAMS", "SceneBatch",
    "disparity_at", "fit_fields", "sample_scenes", "shading", "tone",
]

MAX_SLANT = 0.3  # bound on |dd/dx| of every layer: 1 - dd/dx stays well away from 0 (no surface seen edge-on)
FIELD_KEYS = ("px", "py", "d0", "gx", "gy", "hxx", "hxy", "hyy")
SHAPE_KINDS = ("full", "ellipse", "ring", "box", "fence", "blob", "polygon")
BLOB_HARMONICS = 6
POLYGON_VERTICES = 9
# shape parameter layout after (cx, cy, angle): see _shape_params
SHAPE_PARAMS = 3 + 3 + 2 * POLYGON_VERTICES
_KIND_CDF = np.cumsum([0.2, 0.3, 0.3, 0.12, 0.08])  # ellipse, polygon, blob, box, ring
_KIND_ORDER = np.array([1, 6, 5, 3, 2])


@dataclasses.dataclass
class SceneBatch:
    """``count`` scenes of ``L`` layers each, as float32/int/bool arrays (leading dims ``[B, L]``).

    Per layer: ``active``; ``field`` [.., 8] (FIELD_KEYS); ``domain`` [.., 4] (x0, y0, x1, y1: the left-view
    box where the layer exists); ``drange`` [.., 2] (bounds of d on the domain); ``kind`` (SHAPE_KINDS index)
    and ``shape`` [.., SHAPE_PARAMS] (cx, cy, angle, then the kind's parameters); texture: ``tile`` (atlas
    index), ``texmap`` [.., 2, 3] (texel = texmap @ (x_l, y, 1)), ``contrast``, ``tint`` [.., 3];
    ``specular`` [.., 5] (x, y, sigma, amplitude, shift between the views; amplitude 0 = none);
    ``gain_right`` (the surface's brightness in the right view relative to the left: non-Lambertian).
    Per scene: ``light`` [B, 3] (unit vector), ``ambient`` [B]; per view ``[B, 2]``: ``exposure``, ``bias``,
    ``gamma``, ``blur`` (Gaussian sigma, 0 = sharp), ``noise`` (std, fraction of 255), and ``white``
    [B, 2, 3] (white-balance gain per channel). ``focal`` is the focal length in pixels.
    """

    active: np.ndarray
    field: np.ndarray
    domain: np.ndarray
    drange: np.ndarray
    kind: np.ndarray
    shape: np.ndarray
    tile: np.ndarray
    texmap: np.ndarray
    contrast: np.ndarray
    tint: np.ndarray
    specular: np.ndarray
    gain_right: np.ndarray
    light: np.ndarray
    ambient: np.ndarray
    exposure: np.ndarray
    white: np.ndarray
    bias: np.ndarray
    gamma: np.ndarray
    blur: np.ndarray
    noise: np.ndarray
    focal: float
    size: tuple[int, int]

    @property
    def count(self) -> int:
        return self.active.shape[0]

    def scene(self, index: int) -> SceneBatch:
        """Scene ``index`` as a batch of one (views, not copies)."""
        keep = slice(index, index + 1)
        arrays = {f.name: getattr(self, f.name)[keep] for f in dataclasses.fields(self)
                  if isinstance(getattr(self, f.name), np.ndarray)}
        return dataclasses.replace(self, **arrays)


def disparity_at(field, x, y):
    """d(x, y) of fields given as a sequence of FIELD_KEYS values (NumPy arrays, tensors or floats)."""
    px, py, d0, gx, gy, hxx, hxy, hyy = field
    u, v = x - px, y - py
    return d0 + gx * u + gy * v + 0.5 * (hxx * u * u + hyy * v * v) + hxy * u * v


def fit_fields(field: np.ndarray, domain: np.ndarray, lo: float, hi: float, max_slope: float) -> np.ndarray:
    """Shrink gradient and curvatures (one factor per layer, in place) so that d stays in [lo, hi] and
    |dd/dx| <= max_slope on the layer's domain box; returns bounds [.., 2] of d there."""
    d0 = np.clip(field[..., 2], lo, hi)
    u0, u1 = domain[..., 0] - field[..., 0], domain[..., 2] - field[..., 0]
    v0, v1 = domain[..., 1] - field[..., 1], domain[..., 3] - field[..., 1]
    gx, gy = field[..., 3], field[..., 4]
    mu, mv = np.maximum(np.abs(u0), np.abs(u1)), np.maximum(np.abs(v0), np.abs(v1))
    hxx, hxy, hyy = (np.abs(field[..., i]) for i in range(5, 8))
    curve = 0.5 * (hxx * mu * mu + 2 * hxy * mu * mv + hyy * mv * mv)
    down = np.maximum(0.0, curve - np.minimum(gx * u0, gx * u1) - np.minimum(gy * v0, gy * v1))
    up = np.maximum(0.0, curve + np.maximum(gx * u0, gx * u1) + np.maximum(gy * v0, gy * v1))
    steep = np.abs(gx) + hxx * mu + hxy * mv
    with np.errstate(divide="ignore", invalid="ignore"):
        limits = [np.where(down > 0, (d0 - lo) / down, 1.0), np.where(up > 0, (hi - d0) / up, 1.0),
                  np.where(steep > 0, max_slope / steep, 1.0)]
    scale = np.clip(np.minimum.reduce(limits), 0.0, 1.0)
    field[..., 2] = d0
    field[..., 3:8] *= scale[..., None]
    return np.stack([d0 - down * scale, d0 + up * scale], axis=-1)


def _curvature(rng: np.random.Generator, bulge: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Hessians (hxx, hxy, hyy) of bulges (d grows by ``bulge`` from rim to centre; < 0: a hollow) that are
    spherical to cylindrical, along a random direction."""
    k1 = -2 * bulge / np.maximum(radius, 1.0) ** 2
    k2 = k1 * rng.uniform(0, 1, bulge.shape)
    phi = rng.uniform(0, math.pi, bulge.shape)
    c, s = np.cos(phi), np.sin(phi)
    return np.stack([k1 * c * c + k2 * s * s, (k1 - k2) * c * s, k1 * s * s + k2 * c * c], axis=-1)


def _shape_params(rng: np.random.Generator, size: np.ndarray, thin_prob: float) -> tuple[np.ndarray, np.ndarray,
                                                                                          np.ndarray]:
    """Kinds, parameters after (cx, cy, angle), and bounding radii of random shapes of about ``size`` px.

    ellipse/ring: rx, ry, inner; box: hx, hy; fence: length, half_width, spacing, count, cross;
    blob: r0, aspect, (a_k, p_k) x BLOB_HARMONICS; polygon: r0, aspect, n, phi_1..phi_9, r_1..r_9.
    """
    shape = size.shape
    params = np.zeros(shape + (SHAPE_PARAMS - 3,), np.float64)
    kind = _KIND_ORDER[np.minimum(4, np.searchsorted(_KIND_CDF, rng.random(shape)))]
    thin = rng.random(shape) < thin_prob
    kind = np.where(thin, SHAPE_KINDS.index("fence"), kind)
    aspect = np.exp(rng.uniform(-0.8, 0.8, shape))
    radius = np.zeros(shape)
    # ellipse, ring, box
    inner = rng.uniform(0.3, 0.8, shape)
    oval = np.isin(kind, (1, 2))
    params[oval, 0], params[oval, 1], params[oval, 2] = size[oval], (size * aspect)[oval], inner[oval]
    radius[oval] = np.maximum(size, size * aspect)[oval]
    box = kind == 3
    params[box, 0], params[box, 1] = size[box], (size * aspect)[box]
    radius[box] = np.hypot(size, size * aspect)[box]
    # fence: parallel bars, sometimes crossed (a mesh)
    count = rng.integers(1, 8, shape).astype(np.float64)
    half = np.where(rng.random(shape) < 0.7, rng.uniform(0.6, 3.0, shape), rng.uniform(3, 8, shape))
    spacing = np.maximum(4 * half, rng.uniform(0.15, 0.6, shape) * size)
    length = rng.uniform(0.8, 3.0, shape) * size
    cross = (rng.random(shape) < 0.2).astype(np.float64)
    fence = kind == 4
    for i, values in enumerate((length, half, spacing, count, cross)):
        params[fence, i] = values[fence]
    radius[fence] = (np.hypot(length / 2, spacing * count / 2) + half)[fence]
    # blob: r = r0 (1 + sum_k a_k cos(k phi + p_k)) in a frame stretched by aspect
    harmonics = rng.integers(2, BLOB_HARMONICS + 1, shape)
    ks = np.arange(1, BLOB_HARMONICS + 1)
    amps = rng.uniform(0, 1, shape + (BLOB_HARMONICS,)) / ks**0.8 * (ks <= harmonics[..., None])
    amps *= (rng.uniform(0.2, 0.7, shape) / amps.sum(-1))[..., None]
    phases = rng.uniform(0, 2 * math.pi, shape + (BLOB_HARMONICS,))
    blob = kind == 5
    params[blob, 0], params[blob, 1] = size[blob], aspect[blob]
    params[blob, 2 : 2 + 2 * BLOB_HARMONICS : 2] = amps[blob]
    params[blob, 3 : 3 + 2 * BLOB_HARMONICS : 2] = phases[blob]
    radius[blob] = (size * (1 + amps.sum(-1)) * np.maximum(1.0, aspect))[blob]
    # polygon: star-shaped (jittered even angles keep every gap below pi), vertices sorted by angle
    n = rng.integers(3, POLYGON_VERTICES + 1, shape)
    j = np.arange(POLYGON_VERTICES)
    steps = (j + rng.uniform(-0.2, 0.2, shape + (POLYGON_VERTICES,))) * (2 * math.pi / n[..., None])
    phis = np.mod(steps + rng.uniform(0, 2 * math.pi, shape)[..., None], 2 * math.pi) - math.pi
    phis = np.sort(np.where(j < n[..., None], phis, np.inf), axis=-1)
    radii = np.where(rng.random(shape)[..., None] < 0.5, rng.uniform(0.4, 1.0, phis.shape), 1.0)
    radii = np.where(j < n[..., None], radii, 0.0)
    poly = kind == 6
    params[poly, 0], params[poly, 1], params[poly, 2] = size[poly], aspect[poly], n[poly]
    params[poly, 3 : 3 + POLYGON_VERTICES] = np.where(np.isfinite(phis), phis, 0.0)[poly]
    params[poly, 3 + POLYGON_VERTICES :] = radii[poly]
    radius[poly] = (size * radii.max(-1) * np.maximum(1.0, aspect))[poly]
    return kind, params, radius


def _texture(rng: np.random.Generator, cfg: SyntheticConfig, domain: np.ndarray, weak: np.ndarray,
             tiles: int, tile_size: int) -> dict[str, np.ndarray]:
    """Texture keywords: atlas tile, map from left pixels to tile texels (random rotation, scale from 1/3 to
    1.4 texels per pixel, anisotropy, offset), contrast (weak or textureless surfaces) and colour tint."""
    shape = domain.shape[:-1]
    theta = rng.uniform(0, 2 * math.pi, shape)
    scale = 2 ** rng.uniform(-1.2, 0.8, shape)
    stretch = np.exp(rng.uniform(-0.3, 0.3, shape))
    c, s = np.cos(theta) * scale, np.sin(theta) * scale
    texmap = np.zeros(shape + (2, 3))
    texmap[..., 0, 0], texmap[..., 0, 1] = c * stretch, -s * stretch
    texmap[..., 1, 0], texmap[..., 1, 1] = s / stretch, c / stretch
    origin = rng.uniform(0, tile_size, shape + (2,))
    texmap[..., :, 2] = origin - np.einsum("...ij,...j->...i", texmap[..., :, :2], domain[..., :2])
    contrast = np.where(rng.random(shape) < 0.2, rng.uniform(0.4, 1.0, shape), 1.0)
    contrast = np.where(weak, rng.uniform(0.03, 0.3, shape), contrast)
    contrast = np.where(rng.random(shape) < cfg.textureless_prob, rng.uniform(0.0, 0.03, shape), contrast)
    tint = np.exp(rng.uniform(-0.2, 0.2, shape + (3,)) + rng.uniform(-0.15, 0.3, shape)[..., None])
    return {"tile": rng.integers(0, tiles, shape), "texmap": texmap, "contrast": contrast, "tint": tint}


def _planes(rng: np.random.Generator, cfg: SyntheticConfig, bg: np.ndarray, count: int,
            canvas: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Floors (disparity growing downwards, from a horizon) and side walls (growing towards one side) that
    meet the background: fields [B, P, 8], domains [B, P, 4] (where d >= min_disparity), active [B, P]."""
    height, width = cfg.size
    lo, hi = cfg.min_disparity, cfg.max_disparity
    xlo, xhi = canvas
    shape = (count, cfg.max_extra_planes)
    bgf = [bg[:, None, i] for i in range(8)]
    field = np.zeros(shape + (8,))
    domain = np.zeros(shape + (4,))
    floor = rng.random(shape) < 0.6
    # floor: horizon row yh where it meets the background
    yh = rng.uniform(0.2, 0.85, shape) * height
    dh = disparity_at(bgf, width / 2, yh)
    b = np.minimum(0.8, rng.uniform(0.15, 1.0, shape) * (hi - dh) / np.maximum(height - 1 - yh, 1.0))
    # wall: meets the background at column xw, nearer towards the image side
    left_side = rng.random(shape) < 0.5
    xw = rng.uniform(0.05, 0.45, shape) * width
    xw = np.where(left_side, xw, width - xw)
    dw = disparity_at(bgf, xw, height / 2)
    reach = np.where(left_side, xw - xlo, xhi - xw)
    a = np.minimum(MAX_SLANT, rng.uniform(0.1, 1.0, shape) * (hi - dw) / reach) * np.where(left_side, -1, 1)
    field[..., 0] = np.where(floor, width / 2, xw)
    field[..., 1] = np.where(floor, yh, height / 2)
    field[..., 2] = np.where(floor, dh, dw)
    field[..., 3] = np.where(floor, 0.0, a)
    field[..., 4] = np.where(floor, b, 0.0)
    steep = np.maximum(np.where(floor, b, np.abs(a)), 1e-6)
    reach_lo = (field[..., 2] - lo) / steep  # distance from the meeting line to where d falls to lo
    domain[..., 0] = np.where(~floor & ~left_side, np.maximum(xlo, xw - reach_lo), xlo)
    domain[..., 2] = np.where(~floor & left_side, np.minimum(xhi, xw + reach_lo), xhi)
    domain[..., 1] = np.where(floor, np.maximum(-1.0, yh - reach_lo), -1.0)
    domain[..., 3] = height
    active = (np.arange(shape[1]) < rng.integers(0, shape[1] + 1, count)[:, None]) & (steep > 1e-3)
    active &= (domain[..., 0] < domain[..., 2]) & (domain[..., 1] < domain[..., 3])
    return field, domain, active


def sample_scenes(rng: np.random.Generator, cfg: SyntheticConfig, count: int, tiles: int,
                  tile_size: int) -> SceneBatch:
    """``count`` random scenes (see the module docstring) whose textures index an atlas of ``tiles`` tiles
    of ``tile_size`` texels."""
    height, width = cfg.size
    lo, hi = cfg.min_disparity, cfg.max_disparity
    canvas = (-2.0, width + hi + 2.0)
    xlo, xhi = canvas
    focal = float(width)
    n_planes, n_objects = cfg.max_extra_planes, cfg.max_objects
    # background: fronto-parallel or slanted, sometimes gently curved
    bg = np.zeros((count, 8))
    bg[:, 0], bg[:, 1] = width / 2, height / 2
    bg[:, 2] = lo + (hi - lo) * 0.6 * rng.random(count) ** 2
    bg[:, 3:5] = rng.uniform(-0.15, 0.15, (count, 2)) * (rng.random(count) < cfg.slant_prob)[:, None]
    bulge = bg[:, 2] * (width / 2) / focal * rng.uniform(-0.3, 0.3, count) * (rng.random(count) < cfg.curved_prob / 2)
    bg[:, 5:8] = _curvature(rng, bulge, np.full(count, width / 2))
    bg_domain = np.tile([xlo, -1.0, xhi, float(height)], (count, 1))
    bg_range = fit_fields(bg, bg_domain, lo, hi, MAX_SLANT)
    # floors and walls
    pf, pd, pa = _planes(rng, cfg, bg, count, canvas)
    pr = fit_fields(pf, pd, lo, hi, MAX_SLANT)
    # objects
    shape = (count, n_objects)
    size = min(height, width) * np.exp(rng.uniform(math.log(0.02), math.log(0.4), shape))
    cx, cy = rng.uniform(-0.1, 1.1, shape) * width, rng.uniform(-0.1, 1.1, shape) * height
    kind, params, radius = _shape_params(rng, size, cfg.thin_prob)
    od = np.stack([np.maximum(cx - radius, xlo), np.maximum(cy - radius, -1.0),
                   np.minimum(cx + radius, xhi), np.minimum(cy + radius, float(height))], axis=-1)
    oa = (np.arange(n_objects) < rng.integers(cfg.min_objects, n_objects + 1, count)[:, None])
    oa &= (od[..., 0] < od[..., 2]) & (od[..., 1] < od[..., 3])
    px, py = np.clip(cx, xlo, xhi), np.clip(cy, 0, height - 1)
    behind = disparity_at([bg[:, None, i] for i in range(8)], px, py)
    plane_d = disparity_at([pf[:, None, :, i] for i in range(8)], px[..., None], py[..., None])
    behind = np.maximum(behind, np.where(pa[:, None, :], plane_d, -np.inf).max(-1, initial=-np.inf))
    of = np.zeros(shape + (8,))
    of[..., 0], of[..., 1] = cx, cy
    of[..., 2] = np.minimum(hi, behind + (hi - behind) * rng.uniform(0.02, 1.0, shape) ** 1.5)
    of[..., 3:5] = rng.uniform(-MAX_SLANT, MAX_SLANT, shape + (2,)) * (rng.random(shape) < cfg.slant_prob)[..., None]
    sign = np.where(rng.random(shape) < 0.75, 1.0, -1.0)  # mostly convex (nearer in the middle)
    bulge = sign * of[..., 2] * size / focal * rng.uniform(0.3, 1.0, shape) * (rng.random(shape) < cfg.curved_prob)
    of[..., 5:8] = _curvature(rng, bulge, size)
    orange = fit_fields(of, od, lo, hi, MAX_SLANT)
    oshape = np.concatenate([cx[..., None], cy[..., None], rng.uniform(0, math.pi, shape + (1,)), params], -1)
    # specular highlights that move across the surface between the views; per-surface right-view gain
    lit = cfg.lighting > 0
    spec = np.zeros(shape + (5,))
    spec[..., :2] = od[..., :2] + (od[..., 2:] - od[..., :2]) * rng.random(shape + (2,))
    spec[..., 2] = rng.uniform(2, np.maximum(3.0, 0.5 * size))
    spec[..., 3] = rng.uniform(0.2, 0.8, shape) * min(1.0, cfg.lighting) * (rng.random(shape) < cfg.specular_prob) * lit
    spec[..., 4] = np.where(rng.random(shape) < 0.5, 1, -1) * rng.uniform(1, 10, shape)
    gain = np.exp(rng.normal(0, 0.06 * cfg.lighting, shape)) if lit else np.ones(shape)
    # stack: background, planes, objects
    layers = 1 + n_planes + n_objects
    full = (count, layers)
    field = np.concatenate([bg[:, None], pf, of], 1)
    domain = np.concatenate([bg_domain[:, None], pd, od], 1)
    weak = np.zeros(full, bool)
    weak[:, : 1 + n_planes] = rng.random((count, 1 + n_planes)) < cfg.weak_texture_prob * np.r_[0.5, np.ones(n_planes)]
    shapes = np.zeros(full + (SHAPE_PARAMS,))
    shapes[:, 1 + n_planes :] = oshape
    specular = np.zeros(full + (5,))
    specular[:, 1 + n_planes :] = spec
    gain_right = np.ones(full)
    gain_right[:, 1 + n_planes :] = gain
    # per scene: light and per-view photometry (the views differ in exposure, white balance, gamma, blur, noise)
    light = np.stack([rng.uniform(-1, 1, count), rng.uniform(-1, 1, count), rng.uniform(0.5, 1.5, count)], -1)
    light /= np.linalg.norm(light, axis=-1, keepdims=True)
    strength = cfg.lighting
    blur = np.where(rng.random(count) < cfg.blur_prob, rng.uniform(0.3, 1.2, count), 0.0)
    blur = blur[:, None] * np.exp(rng.uniform(-0.4, 0.4, (count, 2)) * np.r_[0.0, 1.0])
    noise = rng.uniform(0, cfg.noise_std, (count, 2)) * (rng.random((count, 1)) < 0.7)
    f32 = np.float32
    return SceneBatch(
        active=np.concatenate([np.ones((count, 1), bool), pa, oa], 1),
        field=field.astype(f32), domain=domain.astype(f32),
        drange=np.concatenate([bg_range[:, None], pr, orange], 1).astype(f32),
        kind=np.concatenate([np.zeros((count, 1 + n_planes), np.int64), kind], 1),
        shape=shapes.astype(f32),
        **{k: v.astype(f32) if v.dtype.kind == "f" else v
           for k, v in _texture(rng, cfg, domain, weak, tiles, tile_size).items()},
        specular=specular.astype(f32), gain_right=gain_right.astype(f32), light=light.astype(f32),
        ambient=(1 - cfg.shading * rng.uniform(0.2, 0.6, count)).astype(f32),
        exposure=np.exp(rng.uniform(-0.25, 0.25, (count, 2)) * strength).astype(f32),
        white=np.exp(rng.uniform(-0.06, 0.06, (count, 2, 3)) * strength).astype(f32),
        bias=(rng.uniform(-0.02, 0.02, (count, 2)) * strength).astype(f32),
        gamma=np.exp(rng.uniform(-0.1, 0.1, (count, 2)) * strength).astype(f32),
        blur=blur.astype(f32), noise=noise.astype(f32), focal=focal, size=(height, width),
    )


def shading(field, x, y, light, ambient, focal: float, centre: tuple[float, float]):
    """Lambertian shading factor of the surface at left pixel (x, y) (NumPy arrays or tensors that
    broadcast): ``ambient + (1 - ambient) max(0, n . light)``, divided by its value for a fronto-parallel
    surface so that those keep their colour. ``light`` is a unit vector (lx, ly, lz) towards the light."""
    px, py, _, gx, gy, hxx, hxy, hyy = field
    u, v = x - px, y - py
    dx, dy = gx + hxx * u + hxy * v, gy + hxy * u + hyy * v
    nx, ny = focal * dx, focal * dy
    nz = disparity_at(field, x, y) - dx * (x - centre[0]) - dy * (y - centre[1]) + 1e-2  # 1e-2: d = 0 is fronto
    lx, ly, lz = light
    cos = (nx * lx + ny * ly + nz * lz) / (nx * nx + ny * ny + nz * nz) ** 0.5
    lit = (cos + abs(cos)) * 0.5
    return (ambient + (1 - ambient) * lit) / (ambient + (1 - ambient) * lz)


def tone(image, gain, gamma, bias):
    """One view's camera response on linear colours in [0, 255] (NumPy array or tensor; the parameters
    broadcast against it): exposure and white-balance ``gain``, then ``gamma`` and ``bias`` on [0, 1]."""
    return ((image * (gain / 255.0)).clip(0.0, 1.0) ** gamma + bias) * 255.0
