"""Rectification of raw stereo pairs with OpenCV, and depth back in the original left camera.

:class:`Rectifier` runs ``cv2.stereoRectify`` once per image size (the maps of
``cv2.initUndistortRectifyMap`` are cached, so a sequence pays for them once), warps raw pairs into a
rectified pair the network can match, and gives a :class:`RectifiedView` that turns the disparity of the
rectified left image into depth and points of the ORIGINAL left camera:

    rectified left pixel (u', v') with disparity d  ->  X' = B f' / d * ((u' - cx') / f', (v' - cy') / f', 1)
    original left camera frame                       ->  X = R1^T X'

with f', cx', cy' from ``P1`` and B the baseline (the unit of the calibration's ``T``). Each original
pixel's ray is traced into the rectified image (``cv2.undistortPoints`` with ``R1``, ``P1``), so the depth
map lies on the original left image's pixel grid and its Z is measured along the original optical axis.

:func:`vertical_disparity` measures how well a pair is rectified: the vertical offset of SIFT matches
(0 on a perfect rectification; a median above about 0.5 px means the calibration is off).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from madis_stereo.errors import InputError
from madis_stereo.geometry.calibration import StereoCalibration
from madis_stereo.geometry.camera import Camera

__all__ = ["RectifiedView", "Rectifier", "VerticalDisparity", "vertical_disparity"]

log = logging.getLogger(__name__)

_UNDISTORT_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-10)


@dataclass(frozen=True)
class RectifiedView:
    """The rectified pair's geometry at one image size, and the way back to the original left camera.

    ``R1``/``R2`` rotate raw camera frames into the rectified ones, ``P1``/``P2`` are the rectified
    projections (``P2[0, 3] = -f' * baseline``), ``Q`` the disparity-to-depth matrix of OpenCV; ``size`` is
    (width, height). ``ray_x``/``ray_y``: for each original left pixel, where its ray lands in the
    rectified left image (float32 HxW; used to sample the rectified disparity).
    """

    R1: np.ndarray
    R2: np.ndarray
    P1: np.ndarray
    P2: np.ndarray
    Q: np.ndarray
    size: tuple[int, int]
    unit: str
    ray_x: np.ndarray
    ray_y: np.ndarray

    @property
    def focal(self) -> float:
        return float(self.P1[0, 0])

    @property
    def baseline(self) -> float:
        return float(-self.P2[0, 3] / self.P2[0, 0])

    @property
    def doffs(self) -> float:
        """cx' of the right rectified camera minus the left one's (0 with OpenCV's zero-disparity flag)."""
        return float(self.P2[0, 2] - self.P1[0, 2])

    def rectified_camera(self) -> Camera:
        """The :class:`Camera` of the rectified left image (depth along the rectified optical axis)."""
        return Camera(fx=self.focal, fy=float(self.P1[1, 1]), cx=float(self.P1[0, 2]), cy=float(self.P1[1, 2]),
                      baseline=self.baseline, doffs=self.doffs, unit=self.unit)

    def _sample(self, rectified: np.ndarray) -> np.ndarray:
        """A rectified-left HxW map read at each original left pixel's ray (nearest pixel: no mixing across
        depth edges); NaN where the ray leaves the rectified image."""
        values = np.asarray(rectified, dtype=np.float32)
        w, h = self.size
        if values.shape != (h, w):
            raise InputError(f"rectified map is {values.shape[1]}x{values.shape[0]}, expected {w}x{h}")
        return cv2.remap(values, self.ray_x, self.ray_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                         borderValue=float("nan"))

    def _points(self, disparity: np.ndarray) -> np.ndarray:
        """HxWx3 float64 points of the original left camera for each original pixel (NaN where unknown)."""
        d = self._sample(disparity).astype(np.float64) + self.doffs
        d[~(d > 0)] = np.nan
        z = self.focal * self.baseline / d
        x = (self.ray_x - self.P1[0, 2]) / self.P1[0, 0] * z
        y = (self.ray_y - self.P1[1, 2]) / self.P1[1, 1] * z
        rect = np.stack([x, y, z], axis=-1)
        return rect @ self.R1  # row vectors: (R1^T X')^T = X'^T R1

    def depth(self, disparity: np.ndarray) -> np.ndarray:
        """Depth (Z of the original left camera) on the original left pixel grid, float32; +inf where unknown."""
        z = self._points(disparity)[..., 2]
        return np.where(np.isfinite(z) & (z > 0), z, np.inf).astype(np.float32)

    def points(self, disparity: np.ndarray, image: np.ndarray, *, certainty: np.ndarray | None = None,
               min_certainty: float | None = None, max_depth: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Points [N, 3] float32 in the original left camera frame and their colours [N, 3] uint8.

        ``disparity`` and ``certainty`` are maps of the rectified left image; ``image`` is the ORIGINAL left
        image (colours). Filters as :func:`~madis_stereo.geometry.camera.point_cloud`.
        """
        image = np.asarray(image)
        w, h = self.size
        if image.shape[:2] != (h, w) or image.ndim != 3:
            raise InputError(f"image must be the original {w}x{h} left image, got shape {image.shape}")
        xyz = self._points(disparity)
        keep = np.all(np.isfinite(xyz), axis=-1) & (xyz[..., 2] > 0)
        if max_depth is not None:
            keep &= xyz[..., 2] <= max_depth
        if min_certainty is not None:
            if certainty is None:
                raise InputError("min_certainty needs a certainty map")
            keep &= self._sample(certainty) >= min_certainty
        return xyz[keep].astype(np.float32), np.ascontiguousarray(image[keep][:, :3]).astype(np.uint8)


@dataclass
class _Maps:
    view: RectifiedView
    maps: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


class Rectifier:
    """Rectifies raw pairs of one calibrated rig; maps and rays are computed once per image size.

    ``alpha`` is ``cv2.stereoRectify``'s free scaling: 0 keeps only valid pixels (no black borders),
    1 keeps every original pixel.
    """

    def __init__(self, calibration: StereoCalibration, alpha: float = 0.0) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise InputError(f"alpha must be in [0, 1], got {alpha}")
        self.calibration = calibration
        self.alpha = alpha
        self._cache: dict[tuple[int, int], _Maps] = {}

    def view(self, width: int, height: int) -> RectifiedView:
        """The rectified geometry for images of ``width`` x ``height`` (checked against the calibration)."""
        return self._maps(width, height).view

    def _maps(self, width: int, height: int) -> _Maps:
        key = (int(width), int(height))
        if key not in self._cache:
            self.calibration.check_image_size(*key)
            self._cache[key] = self._compute(*key)
        return self._cache[key]

    def _compute(self, width: int, height: int) -> _Maps:
        c = self.calibration
        size = (width, height)
        r1, r2, p1, p2, q, _, _ = cv2.stereoRectify(c.K1, c.D1, c.K2, c.D2, size, c.R, c.T.reshape(3, 1),
                                                    flags=cv2.CALIB_ZERO_DISPARITY, alpha=self.alpha)
        if abs(p2[1, 3]) > abs(p2[0, 3]):
            raise InputError(f"{c.source}: the cameras are stacked vertically (T = {c.T.round(4).tolist()}); "
                             "only left-right rigs are supported")
        if p2[0, 3] >= 0:
            raise InputError(f"{c.source}: the second camera is to the LEFT of the first (T[0] = {c.T[0]:.4g} > 0); "
                             "swap the left and right images and cameras")
        m1 = cv2.initUndistortRectifyMap(c.K1, c.D1, r1, p1, size, cv2.CV_32FC1)
        m2 = cv2.initUndistortRectifyMap(c.K2, c.D2, r2, p2, size, cv2.CV_32FC1)
        v, u = np.mgrid[0:height, 0:width].astype(np.float64)
        pixels = np.stack([u.ravel(), v.ravel()], axis=1)[:, None, :]
        rays = cv2.undistortPoints(pixels, c.K1, c.D1, R=r1, P=p1, criteria=_UNDISTORT_CRITERIA)
        rays = rays.reshape(height, width, 2).astype(np.float32)
        view = RectifiedView(r1, r2, p1, p2, q, size, c.unit, rays[..., 0].copy(), rays[..., 1].copy())
        log.debug("rectification for %dx%d: f' %.2f px, baseline %.4g %s", width, height, view.focal, view.baseline,
                  c.unit)
        return _Maps(view, (m1[0], m1[1], m2[0], m2[1]))

    def rectify(self, left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Two raw HxWx3 images of the calibrated size -> the rectified pair (same size, bilinear)."""
        left, right = np.asarray(left), np.asarray(right)
        if left.shape != right.shape:
            raise InputError(f"left and right images differ in size: {left.shape[1]}x{left.shape[0]} vs "
                             f"{right.shape[1]}x{right.shape[0]}")
        h, w = left.shape[:2]
        lx, ly, rx, ry = self._maps(w, h).maps
        return (cv2.remap(left, lx, ly, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT),
                cv2.remap(right, rx, ry, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT))


@dataclass(frozen=True)
class VerticalDisparity:
    """Vertical offsets |y_left - y_right| of matched points (pixels): ``median``, ``p90``, over ``matches``."""

    matches: int
    median: float
    p90: float

    def __str__(self) -> str:
        if not self.matches:
            return "no matches"
        return f"median {self.median:.2f} px, 90% {self.p90:.2f} px over {self.matches} matches"


def vertical_disparity(left: np.ndarray, right: np.ndarray, max_features: int = 2000,
                       ratio: float = 0.7) -> VerticalDisparity:
    """Vertical disparity of SIFT matches between two images (Lowe's ratio test, mutual best matches)."""
    grey = [cv2.cvtColor(np.asarray(im), cv2.COLOR_RGB2GRAY) if np.asarray(im).ndim == 3 else np.asarray(im)
            for im in (left, right)]
    sift = cv2.SIFT_create(nfeatures=max_features)
    (kl, dl), (kr, dr) = (sift.detectAndCompute(g, None) for g in grey)
    if dl is None or dr is None or len(kl) < 2 or len(kr) < 2:
        return VerticalDisparity(0, float("nan"), float("nan"))
    matcher = cv2.BFMatcher(cv2.NORM_L2)
    forward = matcher.knnMatch(dl, dr, k=2)
    backward = {m.queryIdx: m.trainIdx for m in matcher.match(dr, dl)}
    dy = [abs(kl[m.queryIdx].pt[1] - kr[m.trainIdx].pt[1]) for m, n in (p for p in forward if len(p) == 2)
          if m.distance < ratio * n.distance and backward.get(m.trainIdx) == m.queryIdx]
    if not dy:
        return VerticalDisparity(0, float("nan"), float("nan"))
    values = np.asarray(dy)
    return VerticalDisparity(len(values), float(np.median(values)), float(np.percentile(values, 90)))
