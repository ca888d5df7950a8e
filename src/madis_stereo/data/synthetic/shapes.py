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

__all__ = ["Box", "Ellipse", "Fence", "Radial", "Ring", "Shape"]

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
