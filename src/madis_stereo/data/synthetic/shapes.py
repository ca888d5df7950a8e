"""Analytic 2D shapes for the synthetic stereo renderer.

Shapes live in left-image pixel coordinates and are evaluated exactly at any (fractional) position, so
both views and the occlusion mask see the same geometry (no resampled raster masks). Every shape has
``contains(x, y) -> bool array`` (x, y float arrays of one shape) and ``bbox = (x0, y0, x1, y1)``.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

__all__ = ["Box", "Ellipse", "Fence", "Radial", "Ring", "Shape", "random_shape"]

_ANGLES = 4096  # angular resolution of the tabulated outline of star-shaped regions


@dataclasses.dataclass(frozen=True)
class Shape:
    """A region of the plane around (cx, cy), rotated by ``angle`` (radians).

    ``contains(x, y)``: x and y are float32 arrays that broadcast together (e.g. ``1 x W`` and ``H x 1``,
    or two ``N`` vectors); returns a bool array of the broadcast shape.
    """

    cx: float
    cy: float
    angle: float

    def local(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Coordinates in the shape's rotated frame."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        dx, dy = x - np.float32(self.cx), y - np.float32(self.cy)
        return dx * np.float32(c) + dy * np.float32(s), dy * np.float32(c) - dx * np.float32(s)

    @property
    def radius(self) -> float:
        raise NotImplementedError

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        r = self.radius
        return self.cx - r, self.cy - r, self.cx + r, self.cy + r

    def contains(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class Ellipse(Shape):
    rx: float
    ry: float

    @property
    def radius(self) -> float:
        return max(self.rx, self.ry)

    def contains(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        u, v = self.local(x, y)
        return (u / np.float32(self.rx)) ** 2 + (v / np.float32(self.ry)) ** 2 <= 1


@dataclasses.dataclass(frozen=True)
class Ring(Ellipse):
    """An elliptic ring (a shape with a hole): inner radii are ``inner`` times the outer ones."""

    inner: float = 0.5

    def contains(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        u, v = self.local(x, y)
        r2 = (u / np.float32(self.rx)) ** 2 + (v / np.float32(self.ry)) ** 2
        return (r2 <= 1) & (r2 >= np.float32(self.inner**2))


@dataclasses.dataclass(frozen=True)
class Box(Shape):
    hx: float
    hy: float

    @property
    def radius(self) -> float:
        return math.hypot(self.hx, self.hy)

    def contains(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        u, v = self.local(x, y)
        return (np.abs(u) <= self.hx) & (np.abs(v) <= self.hy)


@dataclasses.dataclass(frozen=True)
class Fence(Shape):
    """``count`` parallel bars (thin structures) of half-width ``half_width``, ``spacing`` apart, each
    ``length`` long; ``cross`` adds the same bars rotated by 90 degrees (a mesh)."""

    length: float
    half_width: float
    spacing: float
    count: int
    cross: bool = False

    @property
    def radius(self) -> float:
        return math.hypot(self.length / 2, self.spacing * self.count / 2) + self.half_width

    def _bars(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        extent = self.spacing * (self.count - 1) / 2
        t = (v + np.float32(extent)) * np.float32(1 / self.spacing)  # bar centres at integer t
        frac = t - np.floor(t)  # (np.mod is several times slower)
        near = np.abs(frac - np.float32(0.5)) >= np.float32(0.5 - self.half_width / self.spacing)
        return near & (np.abs(u) <= self.length / 2) & (np.abs(v) <= extent + self.half_width)

    def contains(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        u, v = self.local(x, y)
        inside = self._bars(u, v)
        return inside | self._bars(v, u) if self.cross else inside


@dataclasses.dataclass(frozen=True)
class Radial(Shape):
    """A star-shaped region ``rho <= r(phi)`` in a frame stretched by ``aspect`` along v.

    ``kind="blob"``: r = r0 (1 + sum_k a_k cos(k phi + p_k)) (smooth random outline);
    ``kind="polygon"``: the polygon through the vertices (phi_i, r_i) (sorted angles).
    """

    r0: float
    aspect: float
    kind: str
    coeffs: tuple[float, ...]  # blob: a_1, p_1, a_2, p_2, ...; polygon: phi_1, r_1, phi_2, r_2, ...

    @property
    def radius(self) -> float:
        if self.kind == "blob":
            scale = 1 + sum(abs(a) for a in self.coeffs[0::2])
        else:
            scale = max(self.coeffs[1::2])
        return self.r0 * scale * max(1.0, self.aspect)

    def outline(self, phi: np.ndarray) -> np.ndarray:
        """Boundary radius (in units of r0) along the ray at angle ``phi``."""
        if self.kind == "blob":
            r = np.ones_like(phi)
            for k, (a, p) in enumerate(zip(self.coeffs[0::2], self.coeffs[1::2]), start=1):
                r += np.float32(a) * np.cos(np.float32(k) * phi + np.float32(p))
            return r
        angles = np.asarray(self.coeffs[0::2], dtype=np.float32)
        radii = np.asarray(self.coeffs[1::2], dtype=np.float32)
        vx, vy = radii * np.cos(angles), radii * np.sin(angles)
        phi = phi.astype(np.float32)
        i = np.searchsorted(angles, phi) % len(angles)
        j = (i - 1) % len(angles)
        ex, ey = vx[i] - vx[j], vy[i] - vy[j]
        # distance along the ray (cos phi, sin phi) to the edge from vertex j to vertex i
        return (vx[j] * ey - vy[j] * ex) / (np.cos(phi) * ey - np.sin(phi) * ex)

    @functools.cached_property
    def _squared_outline(self) -> np.ndarray:
        """(r0 * outline)^2 tabulated at _ANGLES bin centres (+1 entry for phi = pi): the shape IS this
        table, so every evaluation (both views, occlusion) agrees exactly."""
        phi = (np.arange(_ANGLES + 1, dtype=np.float64) + 0.5) * (2 * math.pi / _ANGLES) - math.pi
        return ((self.r0 * self.outline(phi)) ** 2).astype(np.float32)

    def contains(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        u, v = self.local(x, y)
        v = v / np.float32(self.aspect)
        # int32, not intp: the float32 -> int64 conversion is several times slower
        index = ((np.arctan2(v, u) + np.float32(math.pi)) * np.float32(_ANGLES / (2 * math.pi))).astype(np.int32)
        return u * u + v * v <= np.take(self._squared_outline, index)


_KIND_CDF = np.cumsum([0.2, 0.3, 0.3, 0.12, 0.08])


def random_shape(rng: np.random.Generator, cx: float, cy: float, size: float, thin_prob: float) -> Shape:
    """A random shape of about ``size`` pixels radius centred at (cx, cy)."""
    angle = float(rng.uniform(0, math.pi))
    if rng.random() < thin_prob:
        count = int(rng.integers(1, 8))
        half_width = float(rng.uniform(0.6, 3.0)) if rng.random() < 0.7 else float(rng.uniform(3, 8))
        spacing = max(4 * half_width, float(rng.uniform(0.15, 0.6)) * size)
        return Fence(cx, cy, angle, length=float(rng.uniform(0.8, 3.0)) * size, half_width=half_width,
                     spacing=spacing, count=count, cross=bool(rng.random() < 0.2))
    kind = ("ellipse", "polygon", "blob", "box", "ring")[min(4, int(np.searchsorted(_KIND_CDF, rng.random())))]
    aspect = float(np.exp(rng.uniform(-0.8, 0.8)))
    if kind == "ellipse":
        return Ellipse(cx, cy, angle, rx=size, ry=size * aspect)
    if kind == "ring":
        return Ring(cx, cy, angle, rx=size, ry=size * aspect, inner=float(rng.uniform(0.3, 0.8)))
    if kind == "box":
        return Box(cx, cy, angle, hx=size, hy=size * aspect)
    if kind == "polygon":
        n = int(rng.integers(3, 10))
        # jittered even angles: gaps stay below pi, so the centre is inside and the polygon star-shaped
        steps = (np.arange(n) + rng.uniform(-0.2, 0.2, n)) * (2 * math.pi / n) + rng.uniform(0, 2 * math.pi)
        phis = np.sort(np.mod(steps, 2 * math.pi) - math.pi)
        radii = rng.uniform(0.4, 1.0, n) if rng.random() < 0.5 else np.ones(n)
        coeffs = tuple(float(v) for pair in zip(phis, radii) for v in pair)
        return Radial(cx, cy, angle, r0=size, aspect=aspect, kind="polygon", coeffs=coeffs)
    k = int(rng.integers(2, 7))
    amps = rng.uniform(0, 1, k) / np.arange(1, k + 1) ** 0.8
    amps *= float(rng.uniform(0.2, 0.7)) / amps.sum()
    coeffs = tuple(float(v) for pair in zip(amps, rng.uniform(0, 2 * math.pi, k)) for v in pair)
    return Radial(cx, cy, angle, r0=size, aspect=aspect, kind="blob", coeffs=coeffs)
