"""A raw stereo rig with known truth: an invented calibration (lens distortion, a small rotation between the
cameras) and synthetic-world pairs warped into that rig's raw images."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from madis_stereo.data.synthetic import SyntheticStereo
from madis_stereo.geometry.calibration import StereoCalibration
from madis_stereo.geometry.rectify import RectifiedView, Rectifier


def rig_calibration(width: int = 256, height: int = 128, unit: str = "m") -> StereoCalibration:
    """Two slightly different cameras with barrel distortion, 12 cm apart, rotated by about 1.4 degrees."""
    f = 0.9 * width
    k1 = np.array([[f, 0, width / 2 + 3], [0, f * 1.002, height / 2 - 2], [0, 0, 1]])
    k2 = np.array([[f * 1.01, 0, width / 2 - 4], [0, f * 1.01, height / 2 + 1], [0, 0, 1]])
    d1 = np.array([-0.15, 0.05, 0.001, -0.0005, 0.0])
    d2 = np.array([-0.12, 0.03, -0.0008, 0.0004, 0.0])
    rotation = cv2.Rodrigues(np.array([-0.012, -0.02, 0.006]))[0]
    translation = np.array([-0.12, 0.003, -0.002])
    return StereoCalibration(k1, d1, k2, d2, rotation, translation, image_size=(width, height), unit=unit)


@dataclass
class RigPair:
    """Raw images of the rig, the rectified truth (synthetic render) and the truth in the raw left camera:
    ``truth_uv`` [N, 2] raw-left pixel positions of the rectified pixels' surface points, ``truth_z`` [N]
    their depth along the raw left optical axis."""

    raw_left: np.ndarray
    raw_right: np.ndarray
    rect_left: np.ndarray
    rect_right: np.ndarray
    disparity: np.ndarray
    truth_uv: np.ndarray
    truth_z: np.ndarray


def _rays(view: RectifiedView, k: np.ndarray, d: np.ndarray, r: np.ndarray, p: np.ndarray) -> np.ndarray:
    w, h = view.size
    pix = np.stack(np.meshgrid(np.arange(w), np.arange(h)), -1).reshape(-1, 1, 2).astype(np.float64)
    return cv2.undistortPoints(pix, k, d, R=r, P=p).reshape(h, w, 2).astype(np.float32)


def rig_pair(calib: StereoCalibration, index: int = 0, seed: int = 3) -> RigPair:
    """Scene ``index`` of the synthetic world, taken as the rectified pair of ``calib`` and warped into raw images.

    The truth comes the forward way (3-D points of the rectified pixels, projected with the raw left camera's
    distortion by ``cv2.projectPoints``), independent of the library's backward ray tracing.
    """
    w, h = calib.image_size
    view = Rectifier(calib).view(w, h)
    render = SyntheticStereo(size=(h, w), min_disparity=4, max_disparity=32, seed=seed, noise_std=0.0,
                             lighting=0.0, blur_prob=0.0).render(index)
    left_rays = _rays(view, calib.K1, calib.D1, view.R1, view.P1)
    right_rays = _rays(view, calib.K2, calib.D2, view.R2, view.P2)
    raw_left = cv2.remap(render.left, left_rays[..., 0], left_rays[..., 1], cv2.INTER_LINEAR)
    raw_right = cv2.remap(render.right, right_rays[..., 0], right_rays[..., 1], cv2.INTER_LINEAR)
    d = render.disparity.astype(np.float64)
    v, u = np.mgrid[0:h, 0:w]
    z = view.focal * view.baseline / d
    rect_points = np.stack([(u - view.P1[0, 2]) / view.P1[0, 0] * z, (v - view.P1[1, 2]) / view.P1[1, 1] * z, z], -1)
    points = rect_points.reshape(-1, 3) @ view.R1  # rectified -> raw left frame
    uv, _ = cv2.projectPoints(points, np.zeros(3), np.zeros(3), calib.K1, calib.D1)
    return RigPair(raw_left, raw_right, render.left, render.right, render.disparity, uv.reshape(-1, 2), points[:, 2])


def depth_relative_error(depth: np.ndarray, pair: RigPair, margin: int = 4) -> np.ndarray:
    """|Z - Z_true| / Z_true at the truth's raw-left positions (nearest pixel, away from the border)."""
    h, w = depth.shape
    ui, vi = np.round(pair.truth_uv[:, 0]).astype(int), np.round(pair.truth_uv[:, 1]).astype(int)
    inside = (ui >= margin) & (ui < w - margin) & (vi >= margin) & (vi < h - margin)
    est = depth[vi[inside], ui[inside]]
    truth = pair.truth_z[inside]
    ok = np.isfinite(est)
    return np.abs(est[ok] - truth[ok]) / truth[ok]


def ros_yaml(name: str, k, d, r, p, size: tuple[int, int] = (256, 128)) -> str:
    """camera_info YAML in the layout of ROS camera_calibration / camera_calibration_parsers."""
    def block(key: str, m) -> str:
        m = np.atleast_2d(m)
        data = ", ".join(f"{v:.12g}" for v in m.ravel())
        return f"{key}:\n  rows: {m.shape[0]}\n  cols: {m.shape[1]}\n  data: [{data}]\n"

    return (f"image_width: {size[0]}\nimage_height: {size[1]}\n" f"camera_name: {name}\n" + block("camera_matrix", k)
            + "distortion_model: plumb_bob\n" + block("distortion_coefficients", d) + block("rectification_matrix", r)
            + block("projection_matrix", p))


def write_ros_pair(calib: StereoCalibration, folder: Path) -> tuple[Path, Path]:
    """``left.yaml`` and ``right.yaml``: the rig as ROS camera_calibration writes it (R and P from
    cv2.stereoRectify, as our Rectifier computes them)."""
    size = calib.image_size
    view = Rectifier(calib).view(*size)
    left, right = folder / "left.yaml", folder / "right.yaml"
    left.write_text(ros_yaml("narrow_stereo/left", calib.K1, calib.D1, view.R1, view.P1, size))
    right.write_text(ros_yaml("narrow_stereo/right", calib.K2, calib.D2, view.R2, view.P2, size))
    return left, right
