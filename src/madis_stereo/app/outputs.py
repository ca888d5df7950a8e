"""The files ``madis-stereo predict`` writes for one pair: coloured disparity, 16-bit PNG, PFM/NPY, depth,
PLY point clouds and certainty maps (geometry in :mod:`madis_stereo.geometry.camera`)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from madis_stereo.errors import InputError
from madis_stereo.geometry.camera import Camera
from madis_stereo.inference.predictor import certainty
from madis_stereo.utils.files import atomic_path

__all__ = ["FORMATS", "OutputOptions", "certainty_png", "write_outputs", "write_ply"]

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

    ``vmin``/``vmax``: fixed colour range of the ``color`` PNG (None = 0 and the 99th percentile), stored in
    each PNG's text chunk ``disparity_range``; ``legend`` appends a labelled colour bar below the image;
    ``depth_format``: "pfm" or "npy"; ``max_depth`` / ``min_certainty``: point-cloud filters (the latter on
    :func:`certainty`, 0..1).
    """

    formats: tuple[str, ...] = ("color",)
    vmin: float | None = 0.0
    vmax: float | None = None
    legend: bool = False
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
    ``confidence`` is the raw confidence logit of :class:`~madis_stereo.inference.predictor.Prediction`; ``laplace_b``
    the model's scale of it (``Prediction.laplace_b``), for :func:`certainty`.
    ``camera``: a :class:`~madis_stereo.geometry.camera.Camera`, or a
    :class:`~madis_stereo.geometry.rectify.RectifiedView` for a pair rectified from raw images (depth and
    points then lie in the original left camera; ``image`` is the original left image).
    """
    from madis_stereo.app.visualize import color_legend, color_range, colorize_disparity, save_png
    from madis_stereo.data.formats import write_kitti_disparity, write_pfm

    if options.needs_camera and camera is None:
        raise InputError("depth and ply outputs need a camera (calib.txt, or focal length and baseline)")
    out = Path(out_dir)
    base = out / name
    written: list[Path] = []
    sure = None
    for fmt in options.formats:
        path = Path(f"{base}{FORMATS[fmt]}")
        if fmt == "color":
            vmin, vmax = color_range(disparity, options.vmin, options.vmax)
            colored = colorize_disparity(disparity, vmin=vmin, vmax=vmax)
            if options.legend:
                colored = np.concatenate([colored, color_legend(colored.shape[1], vmin, vmax)], axis=0)
            save_png(path, colored, text={
                "disparity_range": f"{vmin:.6g} {vmax:.6g}",
                "Comment": f"disparity in pixels coloured from {vmin:.4g} (dark blue) over cyan, green, yellow to "
                           f"{vmax:.4g} (dark red), clipped at both ends; black = no estimate"})
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
            depth = camera.depth(disparity)
            path = Path(f"{path}.{options.depth_format}")
            if options.depth_format == "pfm":
                write_pfm(path, depth)
            else:
                _save_npy(path, depth)
        elif fmt == "ply" and camera is not None:
            if options.min_certainty is not None and sure is None:
                sure = certainty(confidence, laplace_b)
            points, colors = camera.points(disparity, image, certainty=sure, min_certainty=options.min_certainty,
                                           max_depth=options.max_depth)
            write_ply(path, points, colors, comments=(f"madis-stereo point cloud of {name}, unit {camera.unit}",))
            log.debug("%s: %d points", path, len(points))
        written.append(path)
    return written
