"""Stereo geometry: the rectified camera, disparity to depth, and coloured point clouds.

Geometry (rectified pair, pinhole camera of the left view, pixel centres at integer coordinates):

    Z = baseline * f / (d + doffs)          (docs/METHOD.md section 8; doffs = 0 for KITTI-style calibrations)
    X = (u - cx) * Z / fx,  Y = (v - cy) * Z / fy

with u the column and v the row of the left-image pixel. Depth comes out in the unit of ``baseline``
(millimetres for Middlebury and ETH3D ``calib.txt``). Points use the OpenCV camera frame: x right, y down,
z forward.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from madis_stereo.errors import InputError

__all__ = ["Camera", "camera_from_calib", "disparity_to_depth", "point_cloud"]


@dataclass(frozen=True)
class Camera:
    """Rectified stereo geometry of the left camera.

    ``baseline`` sets the depth unit (``unit`` only labels it); ``cx``/``cy`` None = the image centre
    ((W - 1) / 2, (H - 1) / 2); ``fy`` None = ``fx``.
    """

    fx: float
    baseline: float
    doffs: float = 0.0
    cx: float | None = None
    cy: float | None = None
    fy: float | None = None
    unit: str = "baseline units"

    def __post_init__(self) -> None:
        if not (np.isfinite(self.fx) and self.fx > 0):
            raise InputError(f"focal length must be a positive number, got {self.fx}")
        if not (np.isfinite(self.baseline) and self.baseline > 0):
            raise InputError(f"baseline must be a positive number, got {self.baseline}")

    def principal_point(self, height: int, width: int) -> tuple[float, float]:
        cx = (width - 1) / 2.0 if self.cx is None else float(self.cx)
        cy = (height - 1) / 2.0 if self.cy is None else float(self.cy)
        return cx, cy

    def depth(self, disparity: np.ndarray) -> np.ndarray:
        """:func:`disparity_to_depth` with this camera (the interface ``write_outputs`` uses)."""
        return disparity_to_depth(disparity, self)

    def points(self, disparity: np.ndarray, image: np.ndarray, **filters: Any) -> tuple[np.ndarray, np.ndarray]:
        """:func:`point_cloud` with this camera (the interface ``write_outputs`` uses)."""
        return point_cloud(disparity, image, self, **filters)


def camera_from_calib(calib: Mapping[str, Any], source: str = "calib") -> Camera:
    """A :class:`Camera` from a Middlebury / ETH3D calibration dict (see ``madis_stereo.data.read_calib``).

    Uses cam0 = [fx 0 cx; 0 fy cy; 0 0 1], ``baseline`` (mm) and ``doffs`` (0 when absent).
    """
    cam0 = calib.get("cam0")
    if cam0 is None or "baseline" not in calib:
        raise InputError(f"{source}: a calibration needs cam0=[f 0 cx; 0 f cy; 0 0 1] and baseline")
    k = np.asarray(cam0, dtype=np.float64)
    if k.shape != (3, 3):
        raise InputError(f"{source}: cam0 must be a 3x3 matrix, got shape {k.shape}")
    return Camera(fx=float(k[0, 0]), fy=float(k[1, 1]), cx=float(k[0, 2]), cy=float(k[1, 2]),
                  baseline=float(calib["baseline"]), doffs=float(calib.get("doffs", 0.0)), unit="mm")


def disparity_to_depth(disparity: np.ndarray, camera: Camera) -> np.ndarray:
    """Depth Z = baseline * fx / (d + doffs), float32 HxW; +inf where d is not finite or d + doffs <= 0."""
    d = np.asarray(disparity, dtype=np.float64)
    denom = d + camera.doffs
    ok = np.isfinite(denom) & (denom > 0)
    depth = np.full(d.shape, np.inf, dtype=np.float64)
    depth[ok] = camera.baseline * camera.fx / denom[ok]
    return depth.astype(np.float32)


def point_cloud(disparity: np.ndarray, image: np.ndarray, camera: Camera, *, certainty: np.ndarray | None = None,
                min_certainty: float | None = None, max_depth: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Back-project a disparity map into coloured 3-D points.

    Args:
        disparity: HxW left-image disparity (pixels).
        image: HxWx3 uint8 left image (point colours).
        certainty: optional HxW map in (0, 1] (:func:`~madis_stereo.inference.predictor.certainty`), used with
            ``min_certainty``.
        max_depth: drop points farther than this (unit of ``camera.baseline``).

    Returns:
        points [N, 3] float32 (x, y, z) and colours [N, 3] uint8, pixels in row-major order. Pixels with a
        non-finite or non-positive disparity, a non-finite depth, or failing the optional limits are skipped.
    """
    d = np.asarray(disparity, dtype=np.float64)
    if d.ndim != 2:
        raise InputError(f"disparity must be HxW, got shape {d.shape}")
    image = np.asarray(image)
    if image.shape[:2] != d.shape or image.ndim != 3 or image.shape[2] < 3:
        raise InputError(f"image must be HxWx3 with the disparity's size {d.shape}, got {image.shape}")
    z = disparity_to_depth(d, camera).astype(np.float64)
    keep = np.isfinite(d) & (d > 0) & np.isfinite(z)
    if max_depth is not None:
        keep &= z <= max_depth
    if min_certainty is not None:
        if certainty is None:
            raise InputError("min_certainty needs a certainty map")
        keep &= np.asarray(certainty) >= min_certainty
    v, u = np.nonzero(keep)
    cx, cy = camera.principal_point(*d.shape)
    fy = camera.fx if camera.fy is None else camera.fy
    zk = z[v, u]
    points = np.stack([(u - cx) * zk / camera.fx, (v - cy) * zk / fy, zk], axis=1).astype(np.float32)
    colors = np.ascontiguousarray(image[v, u, :3]).astype(np.uint8)
    return points, colors
