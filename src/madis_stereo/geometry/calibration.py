"""Stereo calibrations of raw (unrectified) camera pairs, read from the files calibration tools write.

A :class:`StereoCalibration` holds what ``cv2.stereoCalibrate`` estimates: the intrinsics ``K1``/``K2``
(3x3), the distortion coefficients ``D1``/``D2`` (OpenCV's k1 k2 p1 p2 [k3 [k4 k5 k6]] model) and the
pose of the right camera relative to the left one, ``X_right = R @ X_left + T``. Depth and point clouds
come out in the unit of ``T``.

Readers (:func:`read_calibration` picks one from the file):

- OpenCV ``FileStorage`` YAML or XML with ``K1 D1 K2 D2 R T`` (what ``cv2.stereoCalibrate`` users save)
  or ``M1 D1 M2 D2 R T`` (OpenCV's ``stereo_calib`` sample); optional image size (``image_size`` /
  ``imageSize`` [w, h], or ``image_width`` and ``image_height``) and ``unit`` (a string).
- A pair of ROS ``camera_info`` YAML files (left, right), as ``camera_calibration`` writes them: the pose
  between the raw cameras follows from their rectification rotations and the right projection matrix
  (``P_right[0, 3] = -fx' * baseline``); ROS lengths are metres.
- KITTI ``calib_cam_to_cam.txt`` (``S_0i K_0i D_0i R_0i T_0i`` per camera, poses relative to camera 0,
  metres); cameras 2 and 3 (the colour pair) by default.

A bad file gives a :class:`~madis_stereo.errors.InputError` whose one line names the file and the key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from madis_stereo.errors import InputError

__all__ = [
    "StereoCalibration",
    "read_calibration",
    "read_kitti_calibration",
    "read_opencv_calibration",
    "read_ros_calibration",
]

PathLike = str | os.PathLike


@dataclass(frozen=True)
class StereoCalibration:
    """Intrinsics, distortion and relative pose of a raw stereo pair (``X_right = R @ X_left + T``).

    ``image_size`` is (width, height) of the calibrated images, or None when the file does not say;
    ``unit`` names the unit of ``T`` (the unit of depth and points); ``source`` names the file(s).
    """

    K1: np.ndarray
    D1: np.ndarray
    K2: np.ndarray
    D2: np.ndarray
    R: np.ndarray
    T: np.ndarray
    image_size: tuple[int, int] | None = None
    unit: str = "calibration units"
    source: str = "calibration"
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        src = self.source
        for name in ("K1", "K2"):
            k = _matrix(getattr(self, name), (3, 3), src, name)
            if not (k[0, 0] > 0 and k[1, 1] > 0) or abs(np.linalg.det(k)) < 1e-12:
                raise InputError(f"{src}: {name} is singular or has a non-positive focal length: {_fmt(k)}")
            object.__setattr__(self, name, k)
        for name in ("D1", "D2"):
            d = np.asarray(getattr(self, name), dtype=np.float64).reshape(-1)
            if d.size not in (0, 4, 5, 8, 12, 14) or not np.all(np.isfinite(d)):
                raise InputError(f"{src}: {name} must hold 4, 5, 8, 12 or 14 finite distortion coefficients, "
                                 f"got {d.size}")
            object.__setattr__(self, name, d)
        r = _matrix(self.R, (3, 3), src, "R")
        if r.shape != (3, 3) or not np.allclose(r @ r.T, np.eye(3), atol=1e-4) or np.linalg.det(r) < 0:
            raise InputError(f"{src}: R is not a rotation matrix (R R^T != I or det(R) = {np.linalg.det(r):.3g})")
        object.__setattr__(self, "R", r)
        t = np.asarray(self.T, dtype=np.float64).reshape(-1)
        if t.size != 3 or not np.all(np.isfinite(t)) or np.linalg.norm(t) <= 0:
            raise InputError(f"{src}: T must be a non-zero 3-vector (the baseline), got {_fmt(t)}")
        object.__setattr__(self, "T", t)
        if self.image_size is not None:
            w, h = (int(v) for v in self.image_size)
            if w < 1 or h < 1:
                raise InputError(f"{src}: image size must be positive, got {w}x{h}")
            object.__setattr__(self, "image_size", (w, h))

    @property
    def baseline(self) -> float:
        """Distance between the optical centres, in :attr:`unit`."""
        return float(np.linalg.norm(self.T))

    def check_image_size(self, width: int, height: int, what: str = "image") -> None:
        """InputError when the calibration states an image size and (width, height) differs from it."""
        if self.image_size is not None and (width, height) != self.image_size:
            w, h = self.image_size
            raise InputError(f"{what} is {width}x{height} but {self.source} was calibrated at {w}x{h} "
                             "(key image_size); rectify images of the calibrated size")


def _fmt(a: Any) -> str:
    return np.array2string(np.asarray(a), precision=4, separator=" ", max_line_width=200).replace("\n", "")


def _matrix(value: Any, shape: tuple[int, int], source: str, key: str) -> np.ndarray:
    try:
        m = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{source}: {key} is not numeric") from None
    if m.size != shape[0] * shape[1]:
        raise InputError(f"{source}: {key} must be a {shape[0]}x{shape[1]} matrix, got {m.size} values")
    m = m.reshape(shape)
    if not np.all(np.isfinite(m)):
        raise InputError(f"{source}: {key} holds non-finite values")
    return m


def _require(path: PathLike, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {what} not found")
    return path


# --------------------------------------------------------------------------------------------------
# OpenCV FileStorage (YAML / XML)
# --------------------------------------------------------------------------------------------------

# (intrinsics key names tried in order) for the left and right camera
_OPENCV_K = (("K1", "M1", "cameraMatrix1"), ("K2", "M2", "cameraMatrix2"))
_OPENCV_D = (("D1", "distCoeffs1"), ("D2", "distCoeffs2"))


def read_opencv_calibration(*paths: PathLike) -> StereoCalibration:
    """A calibration from OpenCV ``FileStorage`` file(s), YAML or XML (see the module docstring).

    Several files are read as one (OpenCV's ``stereo_calib`` sample writes ``intrinsics.yml`` with
    M1 D1 M2 D2 and ``extrinsics.yml`` with R T).
    """
    import cv2

    if not paths:
        raise InputError("no calibration file given")
    files = [_require(p, "calibration file") for p in paths]
    src = " + ".join(str(p) for p in files)
    storages = []
    try:
        for path in files:
            try:
                fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_READ)
            except (cv2.error, SystemError) as err:  # a parse error can surface as SystemError
                detail = str(err.__cause__ or err.__context__ or err).strip().splitlines()[-1]
                raise InputError(f"{path}: not an OpenCV FileStorage YAML/XML file ({detail})") from None
            if not fs.isOpened():
                raise InputError(f"{path}: not an OpenCV FileStorage YAML/XML file")
            storages.append(fs)
        values = {"K1": _fs_matrix(storages, _OPENCV_K[0], src), "D1": _fs_matrix(storages, _OPENCV_D[0], src),
                  "K2": _fs_matrix(storages, _OPENCV_K[1], src), "D2": _fs_matrix(storages, _OPENCV_D[1], src),
                  "R": _fs_matrix(storages, ("R",), src), "T": _fs_matrix(storages, ("T",), src)}
        size = _opencv_size(storages, src)
        unit = _fs_node(storages, ("unit",), src, required=False)
        unit = unit[1].string() if unit is not None and unit[1].isString() else ""
    finally:
        for fs in storages:
            fs.release()
    _check_shapes(values, src)
    return StereoCalibration(**values, image_size=size, unit=unit or "calibration units", source=src)


def _fs_node(storages: list[Any], names: tuple[str, ...], src: str, required: bool = True) -> tuple[str, Any] | None:
    """(name, node) of the first of ``names`` found in any of the FileStorages."""
    for name in names:
        for fs in storages:
            node = fs.getNode(name)
            if not node.empty():
                return name, node
    if not required:
        return None
    also = f" (also looked for {', '.join(names[1:])})" if len(names) > 1 else ""
    raise InputError(f"{src}: missing key {names[0]}{also}")


def _fs_numbers(node: Any, name: str, src: str) -> np.ndarray:
    if node.isMap():
        m = node.mat()
        if m is None:
            raise InputError(f"{src}: {name} is not a matrix")
        return np.asarray(m, dtype=np.float64)
    if node.isSeq():
        return np.array([node.at(i).real() for i in range(node.size())], dtype=np.float64)
    raise InputError(f"{src}: {name} is not a matrix")


def _fs_matrix(storages: list[Any], names: tuple[str, ...], src: str) -> np.ndarray:
    found = _fs_node(storages, names, src)
    assert found is not None
    return _fs_numbers(found[1], found[0], src)


def _check_shapes(values: dict[str, np.ndarray], src: str) -> None:
    for key, size in (("K1", 9), ("K2", 9), ("R", 9), ("T", 3)):
        if values[key].size != size:
            raise InputError(f"{src}: {key} must have {size} values, got {values[key].size}")
    for key in ("K1", "K2", "R"):
        values[key] = _matrix(values[key], (3, 3), src, key)


def _opencv_size(storages: list[Any], src: str) -> tuple[int, int] | None:
    found = _fs_node(storages, ("image_size", "imageSize"), src, required=False)
    if found is not None:
        values = _fs_numbers(found[1], found[0], src).reshape(-1)
        if values.size != 2:
            raise InputError(f"{src}: {found[0]} must be [width, height]")
        return int(values[0]), int(values[1])
    w = _fs_node(storages, ("image_width",), src, required=False)
    h = _fs_node(storages, ("image_height",), src, required=False)
    if (w is None) != (h is None):
        raise InputError(f"{src}: missing key {'image_width' if w is None else 'image_height'}")
    return None if w is None or h is None else (int(w[1].real()), int(h[1].real()))


# --------------------------------------------------------------------------------------------------
# ROS camera_info YAML (one file per camera)
# --------------------------------------------------------------------------------------------------

_ROS_MODELS = {"plumb_bob", "rational_polynomial"}


def _ros_camera(path: PathLike) -> dict[str, Any]:
    import yaml

    path = _require(path, "ROS camera_info file")
    src = str(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise InputError(f"{src}: not a YAML file ({str(err).splitlines()[0]})") from None
    if not isinstance(doc, dict):
        raise InputError(f"{src}: not a ROS camera_info YAML file (expected a mapping)")

    def get(key: str) -> Any:
        if key not in doc:
            raise InputError(f"{src}: missing key {key}")
        return doc[key]

    def matrix(key: str, shape: tuple[int, int]) -> np.ndarray:
        value = get(key)
        data = value.get("data") if isinstance(value, dict) else None
        if data is None:
            raise InputError(f"{src}: {key} has no data list")
        return _matrix(data, shape, src, key)

    model = doc.get("distortion_model", "plumb_bob")
    if model not in _ROS_MODELS:
        raise InputError(f"{src}: distortion_model {model!r} is not supported (plumb_bob, rational_polynomial)")
    dist = get("distortion_coefficients")
    if not isinstance(dist, dict) or not isinstance(dist.get("data"), list):
        raise InputError(f"{src}: distortion_coefficients has no data list")
    try:
        d = np.asarray(dist["data"], dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{src}: distortion_coefficients is not numeric") from None
    try:
        width, height = int(get("image_width")), int(get("image_height"))
    except (TypeError, ValueError):
        raise InputError(f"{src}: image_width and image_height must be integers") from None
    return {"K": matrix("camera_matrix", (3, 3)), "D": d, "R": matrix("rectification_matrix", (3, 3)),
            "P": matrix("projection_matrix", (3, 4)), "size": (width, height), "src": src}


def _ros_is_right(path: PathLike) -> bool:
    """Whether a ROS camera_info file is a right camera's: its projection matrix holds Tx = -fx' * baseline."""
    return abs(_ros_camera(path)["P"][0, 3]) > 1e-12


def read_ros_calibration(left: PathLike, right: PathLike) -> StereoCalibration:
    """A calibration from the left and right ROS ``camera_info`` YAML files (lengths in metres)."""
    cl, cr = _ros_camera(left), _ros_camera(right)
    src = f"{cl['src']} + {cr['src']}"
    if cl["size"] != cr["size"]:
        raise InputError(f"{src}: the cameras' image_width/image_height differ ({cl['size']} vs {cr['size']})")
    p2 = cr["P"]
    if p2[0, 0] <= 0:
        raise InputError(f"{cr['src']}: projection_matrix has a non-positive focal length")
    if abs(p2[0, 3]) < 1e-12:
        raise InputError(f"{cr['src']}: projection_matrix has Tx = 0; the right camera's file must hold "
                         "Tx = -fx' * baseline")
    # rectified frames: X_rect_right = X_rect_left + t, with t = (Tx / fx', Ty / fy', 0)
    t_rect = np.array([p2[0, 3] / p2[0, 0], p2[1, 3] / p2[1, 1], 0.0])
    for cam, key in ((cl, "rectification_matrix"), (cr, "rectification_matrix")):
        r = cam["R"]
        if not np.allclose(r @ r.T, np.eye(3), atol=1e-4):
            raise InputError(f"{cam['src']}: {key} is not a rotation matrix")
    rotation = cr["R"].T @ cl["R"]
    translation = cr["R"].T @ t_rect
    return StereoCalibration(cl["K"], cl["D"], cr["K"], cr["D"], rotation, translation, image_size=cl["size"],
                             unit="m", source=src)


# --------------------------------------------------------------------------------------------------
# KITTI calib_cam_to_cam.txt
# --------------------------------------------------------------------------------------------------


def read_kitti_calibration(path: PathLike, left: int = 2, right: int = 3) -> StereoCalibration:
    """Cameras ``left`` and ``right`` of a KITTI ``calib_cam_to_cam.txt`` (raw, unrectified; metres)."""
    path = _require(path, "KITTI calibration file")
    src = str(path)
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError:
        raise InputError(f"{src}: not a text calibration file") from None
    entries: dict[str, str] = {}
    for line in lines:
        key, sep, value = line.partition(":")
        if sep:
            entries[key.strip()] = value.strip()

    def values(key: str, count: int) -> np.ndarray:
        if key not in entries:
            raise InputError(f"{src}: missing key {key}")
        try:
            v = np.array([float(x) for x in entries[key].split()], dtype=np.float64)
        except ValueError:
            raise InputError(f"{src}: {key} is not numeric") from None
        if v.size != count:
            raise InputError(f"{src}: {key} must have {count} values, got {v.size}")
        return v

    cams = {}
    for i in (left, right):
        cams[i] = {"S": values(f"S_{i:02d}", 2), "K": values(f"K_{i:02d}", 9).reshape(3, 3),
                   "D": values(f"D_{i:02d}", 5), "R": values(f"R_{i:02d}", 9).reshape(3, 3),
                   "T": values(f"T_{i:02d}", 3)}
    a, b = cams[left], cams[right]
    if not np.array_equal(a["S"], b["S"]):
        raise InputError(f"{src}: S_{left:02d} and S_{right:02d} (image sizes) differ")
    for i in (left, right):
        r = cams[i]["R"]
        if not np.allclose(r @ r.T, np.eye(3), atol=1e-4):
            raise InputError(f"{src}: R_{i:02d} is not a rotation matrix")
    # X_i = R_0i X_0 + T_0i  =>  X_right = R_r R_l^T X_left + (T_r - R_r R_l^T T_l)
    rotation = b["R"] @ a["R"].T
    translation = b["T"] - rotation @ a["T"]
    size = (int(round(a["S"][0])), int(round(a["S"][1])))
    return StereoCalibration(a["K"], a["D"], b["K"], b["D"], rotation, translation, image_size=size, unit="m",
                             source=src, extra={"cameras": (left, right)})


# --------------------------------------------------------------------------------------------------


def _is_filestorage(path: Path) -> bool:
    return path.read_bytes()[:256].lstrip().startswith((b"%YAML", b"<?xml", b"<opencv_storage"))


def read_calibration(spec: PathLike | tuple[PathLike, PathLike] | list[PathLike]) -> StereoCalibration:
    """Read a calibration, picking the reader from the file(s).

    ``spec``: one OpenCV YAML/XML or KITTI ``calib_cam_to_cam.txt`` path; two ROS ``camera_info`` paths
    (in either order: the right camera's is the one whose projection matrix holds the baseline) or two OpenCV
    files (intrinsics, extrinsics), as a list, a tuple or one string ``a.yaml,b.yaml``.
    """
    if isinstance(spec, (str, os.PathLike)) and "," in str(spec):
        spec = [s.strip() for s in str(spec).split(",")]
    if isinstance(spec, (list, tuple)):
        if len(spec) != 2:
            raise InputError(f"expected two calibration files (ROS left,right or OpenCV intrinsics,extrinsics), "
                             f"got {len(spec)}")
        if all(_is_filestorage(_require(p, "calibration file")) for p in spec):
            return read_opencv_calibration(*spec)
        left, right = spec
        if _ros_is_right(left) and not _ros_is_right(right):  # given right first (e.g. uploaded in that order)
            left, right = right, left
        return read_ros_calibration(left, right)
    path = _require(spec, "calibration file")
    head = path.read_bytes()[:4096]
    if _is_filestorage(path):
        return read_opencv_calibration(path)
    text = head.decode("utf-8", errors="replace")
    if "calib_time:" in text or "K_00:" in text or "S_00:" in text:
        return read_kitti_calibration(path)
    if "camera_matrix:" in text and "projection_matrix:" in text:
        raise InputError(f"{path}: a ROS camera_info file describes one camera; give LEFT.yaml,RIGHT.yaml")
    return read_opencv_calibration(path)
