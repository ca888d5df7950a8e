"""What a disparity map turns into: depth, coloured point clouds (PLY) and the files ``predict`` writes.

Geometry (rectified pair, pinhole camera of the left view, pixel centres at integer coordinates):

    Z = baseline * f / (d + doffs)          (docs/METHOD.md, "Depth"; doffs = 0 for KITTI-style calibrations)
    X = (u - cx) * Z / fx,  Y = (v - cy) * Z / fy

with u the column and v the row of the left-image pixel. Depth comes out in the unit of ``baseline``
(millimetres for Middlebury and ETH3D ``calib.txt``). Points use the OpenCV camera frame: x right, y down,
z forward.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from madis_stereo.errors import InputError
from madis_stereo.fileio import atomic_path
from madis_stereo.inference import certainty

__all__ = [
    "FORMATS",
    "Camera",
    "OutputOptions",
    "camera_from_calib",
    "certainty_png",
    "disparity_to_depth",
    "point_cloud",
    "write_outputs",
    "write_ply",
]

log = logging.getLogger(__name__)

# Everything ``write_outputs`` can produce: format name -> file name suffix (after the pair name).
FORMATS: dict[str, str] = {
    "color": "_color.png",
    "png16": "_disp16.png",
    "pfm": ".pfm",
    "npy": ".npy",
    "depth": "_depth",  # + ".pfm" or ".npy"
    "ply": ".ply",
    "conf": "_conf.png",
}
GEOMETRY_FORMATS = ("depth", "ply")


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
        certainty: optional HxW map in (0, 1] (:func:`certainty`), used with ``min_certainty``.
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


def write_ply(path: str | os.PathLike, points: np.ndarray, colors: np.ndarray | None = None,
              comments: Sequence[str] = ()) -> Path:
    """Write points [N, 3] (and uint8 colours [N, 3]) as a binary little-endian PLY, atomically.

    Vertex properties: ``float x, y, z`` then ``uchar red, green, blue`` (when colours are given), the
    layout Open3D, MeshLab and CloudCompare read.
    """
    points = np.asarray(points, dtype=np.float32)
    if points.ndim != 2 or points.shape[1] != 3:
        raise InputError(f"points must have shape [N, 3], got {points.shape}")
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if colors is not None:
        colors = np.asarray(colors)
        if colors.shape != points.shape:
            raise InputError(f"colors must have shape {points.shape}, got {colors.shape}")
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    records = np.empty(len(points), dtype=np.dtype(fields))
    for i, axis in enumerate("xyz"):
        records[axis] = points[:, i]
    if colors is not None:
        for i, channel in enumerate(("red", "green", "blue")):
            records[channel] = colors[:, i]
    lines = ["ply", "format binary_little_endian 1.0"]
    lines += [f"comment {c}" for c in comments]
    lines.append(f"element vertex {len(points)}")
    lines += [f"property float {a}" for a in "xyz"]
    if colors is not None:
        lines += [f"property uchar {c}" for c in ("red", "green", "blue")]
    lines.append("end_header")
    header = ("\n".join(lines) + "\n").encode("ascii")
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(header)
            fh.write(records.tobytes())
    return path


def certainty_png(certainty: np.ndarray) -> np.ndarray:
    """A certainty map in [0, 1] as 8-bit grey levels round(255 * c) (white = sure); non-finite = 0."""
    c = np.nan_to_num(np.asarray(certainty, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    return np.round(np.clip(c, 0.0, 1.0) * 255.0).astype(np.uint8)


# --------------------------------------------------------------------------------------------------
# everything ``predict`` writes for one pair
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutputOptions:
    """Settings of :func:`write_outputs`.

    ``vmin``/``vmax``: fixed colour range of the ``color`` PNG (None = 0 and the 99th percentile);
    ``depth_format``: "pfm" or "npy"; ``max_depth`` / ``min_certainty``: point-cloud filters (the latter on
    :func:`certainty`, 0..1).
    """

    formats: tuple[str, ...] = ("color",)
    vmin: float | None = 0.0
    vmax: float | None = None
    depth_format: str = "pfm"
    max_depth: float | None = None
    min_certainty: float | None = None

    def __post_init__(self) -> None:
        unknown = [f for f in self.formats if f not in FORMATS]
        if unknown:
            raise InputError(f"unknown output format(s) {unknown}; choose from {', '.join(FORMATS)}")
        if not self.formats:
            raise InputError("no output format given")
        if self.depth_format not in ("pfm", "npy"):
            raise InputError(f"depth format must be 'pfm' or 'npy', got {self.depth_format!r}")

    @property
    def needs_camera(self) -> bool:
        return any(f in GEOMETRY_FORMATS for f in self.formats)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array, allow_pickle=False)


def write_outputs(out_dir: str | os.PathLike, name: str, disparity: np.ndarray, confidence: np.ndarray,
                  image: np.ndarray, options: OutputOptions, camera: Camera | None = None,
                  laplace_b: float = 3.0) -> list[Path]:
    """Write the requested files for one prediction into ``out_dir`` (atomically); return their paths.

    File names: ``<name>_color.png`` (coloured disparity), ``<name>_disp16.png`` (KITTI uint16, d * 256),
    ``<name>.pfm`` / ``<name>.npy`` (float32 disparity), ``<name>_depth.pfm|.npy`` (depth, +inf invalid),
    ``<name>.ply`` (coloured points), ``<name>_conf.png`` (:func:`certainty`, 8-bit, white = sure).
    ``confidence`` is the raw confidence logit of :class:`~madis_stereo.inference.Prediction`; ``laplace_b``
    the model's scale of it (``Prediction.laplace_b``), for :func:`certainty`.
    """
    from madis_stereo.data.io import write_kitti_disparity, write_pfm
    from madis_stereo.visualize import colorize_disparity, save_png

    if options.needs_camera and camera is None:
        raise InputError("depth and ply outputs need a camera (calib.txt, or focal length and baseline)")
    out = Path(out_dir)
    base = out / name
    written: list[Path] = []
    sure = None
    for fmt in options.formats:
        path = Path(f"{base}{FORMATS[fmt]}")
        if fmt == "color":
            save_png(path, colorize_disparity(disparity, vmin=options.vmin, vmax=options.vmax))
        elif fmt == "png16":
            write_kitti_disparity(path, disparity)
        elif fmt == "pfm":
            write_pfm(path, disparity)
        elif fmt == "npy":
            _save_npy(path, np.asarray(disparity, dtype=np.float32))
        elif fmt == "conf":
            sure = certainty(confidence, laplace_b) if sure is None else sure
            save_png(path, certainty_png(sure))
        elif fmt == "depth" and camera is not None:
            depth = disparity_to_depth(disparity, camera)
            path = Path(f"{path}.{options.depth_format}")
            if options.depth_format == "pfm":
                write_pfm(path, depth)
            else:
                _save_npy(path, depth)
        elif fmt == "ply" and camera is not None:
            if options.min_certainty is not None and sure is None:
                sure = certainty(confidence, laplace_b)
            points, colors = point_cloud(disparity, image, camera, certainty=sure,
                                         min_certainty=options.min_certainty, max_depth=options.max_depth)
            write_ply(path, points, colors, comments=(f"madis-stereo point cloud of {name}, unit {camera.unit}",))
            log.debug("%s: %d points", path, len(points))
        written.append(path)
    return written
