"""Calibration readers on files written the way each tool writes them, and one-line errors on bad ones."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from rig_helpers import rig_calibration, write_ros_pair

from madis_stereo.errors import InputError
from madis_stereo.geometry.calibration import (
    read_calibration,
    read_kitti_calibration,
    read_opencv_calibration,
    read_ros_calibration,
)
from madis_stereo.geometry.rectify import Rectifier

RIG = rig_calibration(256, 128)


def assert_same_rig(calib, unit: str) -> None:
    for key in ("K1", "D1", "K2", "D2", "R", "T"):
        np.testing.assert_allclose(getattr(calib, key), getattr(RIG, key), atol=1e-9, err_msg=key)
    assert calib.image_size == (256, 128)
    assert calib.unit == unit


def write_filestorage(path: Path, nodes: dict) -> Path:
    """Write nodes with cv2.FileStorage, as cv2.stereoCalibrate users and OpenCV's stereo_calib sample do."""
    fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_WRITE)
    for key, value in nodes.items():
        fs.write(key, value)
    fs.release()
    return path


def opencv_nodes(names=("K1", "D1", "K2", "D2")) -> dict:
    k1, d1, k2, d2 = names
    return {k1: RIG.K1, d1: RIG.D1.reshape(1, -1), k2: RIG.K2, d2: RIG.D2.reshape(1, -1), "R": RIG.R,
            "T": RIG.T.reshape(3, 1), "image_size": np.array([[256, 128]], dtype=np.float64)}


@pytest.mark.parametrize("suffix", [".yml", ".xml"])
def test_opencv_filestorage(tmp_path, suffix):
    path = write_filestorage(tmp_path / f"stereo{suffix}", {**opencv_nodes(), "unit": "m"})
    assert_same_rig(read_calibration(path), "m")


def test_opencv_stereo_calib_sample_naming(tmp_path):
    """The sample's intrinsics.yml (M1 D1 M2 D2) + extrinsics.yml (R T R1 R2 P1 P2 Q), and one merged file."""
    nodes = opencv_nodes(("M1", "D1", "M2", "D2"))
    view = Rectifier(RIG).view(256, 128)
    intr = write_filestorage(tmp_path / "intrinsics.yml", {k: nodes[k] for k in ("M1", "D1", "M2", "D2")})
    extr = write_filestorage(tmp_path / "extrinsics.yml", {"R": nodes["R"], "T": nodes["T"], "R1": view.R1,
                                                          "R2": view.R2, "P1": view.P1, "P2": view.P2, "Q": view.Q})
    calib = read_calibration(f"{intr},{extr}")
    assert calib.unit == "calibration units" and calib.image_size is None
    for key in ("K1", "K2", "R", "T"):
        np.testing.assert_allclose(getattr(calib, key), getattr(RIG, key), atol=1e-9)
    one = write_filestorage(tmp_path / "stereo_calib.yml", nodes)
    np.testing.assert_allclose(read_calibration(one).K2, RIG.K2)


def write_ros(tmp_path: Path) -> tuple[Path, Path]:
    return write_ros_pair(RIG, tmp_path)


def test_ros_camera_info_pair(tmp_path):
    left, right = write_ros(tmp_path)
    calib = read_ros_calibration(left, right)
    for key in ("K1", "D1", "K2", "D2"):
        np.testing.assert_allclose(getattr(calib, key), getattr(RIG, key), atol=1e-9)
    # the pose comes back through the rectified frames: same rotation, same baseline vector
    np.testing.assert_allclose(calib.R, RIG.R, atol=1e-7)
    np.testing.assert_allclose(calib.T, RIG.T, atol=1e-7)
    assert calib.unit == "m" and calib.image_size == (256, 128)
    assert read_calibration(f"{left},{right}").baseline == pytest.approx(RIG.baseline)
    # given right first (an upload's order): the right camera's file is the one whose P holds the baseline
    swapped = read_calibration([right, left])
    for key in ("K1", "D1", "K2", "D2", "R", "T"):
        np.testing.assert_allclose(getattr(swapped, key), getattr(calib, key), err_msg=key)


def kitti_text() -> str:
    """calib_cam_to_cam.txt as the KITTI raw-data devkit ships it: poses of cameras 0..3 relative to camera 0."""
    r2 = cv2.Rodrigues(np.array([0.001, 0.002, -0.001]))[0]
    t2 = np.array([0.06, -0.001, 0.002])
    poses = {0: (np.eye(3), np.zeros(3)), 1: (np.eye(3), np.array([-0.54, 0.0, 0.0])), 2: (r2, t2),
             3: (RIG.R @ r2, RIG.R @ t2 + RIG.T)}
    intr = {0: (RIG.K1, RIG.D1), 1: (RIG.K2, RIG.D2), 2: (RIG.K1, RIG.D1), 3: (RIG.K2, RIG.D2)}

    def row(values) -> str:
        return " ".join(f"{v:.12e}" for v in np.ravel(values))

    lines = ["calib_time: 09-Jan-2012 13:57:47", "corner_dist: 9.950000e-02"]
    for i in range(4):
        (r, t), (k, d) = poses[i], intr[i]
        lines += [f"S_{i:02d}: {row([256, 128])}", f"K_{i:02d}: {row(k)}", f"D_{i:02d}: {row(d)}",
                  f"R_{i:02d}: {row(r)}", f"T_{i:02d}: {row(t)}", f"S_rect_{i:02d}: {row([250, 120])}",
                  f"R_rect_{i:02d}: {row(np.eye(3))}", f"P_rect_{i:02d}: {row(np.hstack([k, np.zeros((3, 1))]))}"]
    return "\n".join(lines) + "\n"


def test_kitti_calib_cam_to_cam(tmp_path):
    path = tmp_path / "calib_cam_to_cam.txt"
    path.write_text(kitti_text())
    assert_same_rig(read_calibration(path), "m")
    gray = read_kitti_calibration(path, left=0, right=1)
    np.testing.assert_allclose(gray.T, [-0.54, 0, 0], atol=1e-12)


# --- bad calibrations: one line naming the file and the key --------------------------------------------


def one_line_error(fn, *args) -> str:
    with pytest.raises(InputError) as info:
        fn(*args)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_opencv_missing_key(tmp_path):
    nodes = opencv_nodes()
    del nodes["T"]
    path = write_filestorage(tmp_path / "no_t.yml", nodes)
    assert one_line_error(read_opencv_calibration, path) == f"{path}: missing key T"
    del nodes["K1"]
    path = write_filestorage(tmp_path / "no_k1.yml", nodes)
    assert "missing key K1 (also looked for M1" in one_line_error(read_calibration, path)


def test_singular_and_bad_matrices(tmp_path):
    singular = write_filestorage(tmp_path / "singular.yml", {**opencv_nodes(), "K2": np.zeros((3, 3))})
    assert "K2 is singular" in one_line_error(read_calibration, singular)
    bad_r = write_filestorage(tmp_path / "bad_r.yml", {**opencv_nodes(), "R": 2 * np.eye(3)})
    assert "R is not a rotation matrix" in one_line_error(read_calibration, bad_r)
    no_baseline = write_filestorage(tmp_path / "zero_t.yml", {**opencv_nodes(), "T": np.zeros((3, 1))})
    assert "T must be a non-zero 3-vector" in one_line_error(read_calibration, no_baseline)
    (tmp_path / "garbage.yml").write_text("%YAML:1.0\n---\nK1: [1, 2\n")
    assert "garbage.yml" in one_line_error(read_calibration, tmp_path / "garbage.yml")
    assert "not found" in one_line_error(read_calibration, tmp_path / "missing.yml")


def test_image_size_mismatch(tmp_path):
    path = write_filestorage(tmp_path / "stereo.yml", opencv_nodes())
    rectifier = Rectifier(read_calibration(path))
    message = one_line_error(rectifier.view, 320, 128)
    assert "320x128" in message and "256x128" in message and "image_size" in message and str(path) in message


def test_ros_and_kitti_missing_keys(tmp_path):
    left, right = write_ros(tmp_path)
    right.write_text(right.read_text().split("projection_matrix:")[0])  # the last block
    assert "missing key projection_matrix" in one_line_error(read_calibration, f"{left},{right}")
    assert "describes one camera" in one_line_error(read_calibration, left)
    kitti = tmp_path / "calib_cam_to_cam.txt"
    kitti.write_text("\n".join(line for line in kitti_text().splitlines() if not line.startswith("D_03")))
    assert one_line_error(read_calibration, kitti) == f"{kitti}: missing key D_03"
