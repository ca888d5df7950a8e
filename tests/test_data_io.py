"""File formats: PFM (both byte orders, Pf/PF, bottom-to-top rows), KITTI PNG, calib.txt, images, errors."""

from __future__ import annotations

import os

import numpy as np
import pytest
from data_layouts import MIDDLEBURY_CALIB
from PIL import Image

from madis_stereo.data import (
    read_calib,
    read_disparity,
    read_image,
    read_kitti_disparity,
    read_mask,
    read_pfm,
    write_kitti_disparity,
    write_pfm,
)
from madis_stereo.errors import DataError


@pytest.mark.parametrize("little_endian", [True, False])
@pytest.mark.parametrize("channels", [1, 3])
def test_pfm_round_trip(tmp_path, little_endian, channels):
    rng = np.random.default_rng(0)
    shape = (5, 7) if channels == 1 else (5, 7, 3)
    array = rng.normal(size=shape).astype(np.float32)
    array[1, 2] = np.inf
    array[3, 4] = -np.inf
    array[0, 0] = np.nan
    path = tmp_path / "a.pfm"
    write_pfm(path, array, little_endian=little_endian)
    raw = path.read_bytes()
    assert raw.startswith(b"Pf\n" if channels == 1 else b"PF\n")
    assert (b"\n-1.0\n" in raw) == little_endian
    back = read_pfm(path)
    assert back.dtype == np.float32 and back.shape == shape
    np.testing.assert_array_equal(back, array)  # nan == nan for assert_array_equal
    assert os.listdir(tmp_path) == ["a.pfm"]  # atomic write left no temporary file


def test_written_files_get_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        write_pfm(tmp_path / "d.pfm", np.zeros((4, 6), np.float32))
        write_kitti_disparity(tmp_path / "d.png", np.zeros((4, 6), np.float32))
    finally:
        os.umask(old)
    assert {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()} == {"d.pfm": 0o644, "d.png": 0o644}


def test_pfm_rows_are_stored_bottom_to_top(tmp_path):
    # a hand-written big-endian file: first stored row is the BOTTOM image row
    data = np.array([[1, 2, 3], [4, 5, 6]], dtype=">f4")  # stored order: row 1 = bottom
    path = tmp_path / "hand.pfm"
    path.write_bytes(b"Pf\n3 2\n1.0\n" + data.tobytes())
    np.testing.assert_array_equal(read_pfm(path), [[4, 5, 6], [1, 2, 3]])
    # header tokens may be split over lines differently; little-endian by negative scale
    path.write_bytes(b"Pf 3\n2 -2.5\n" + data.astype("<f4").tobytes())
    np.testing.assert_array_equal(read_pfm(path), [[4, 5, 6], [1, 2, 3]])
    path.write_bytes(b"Pf\r\n3 2\r\n-1.0\r\n" + data.astype("<f4").tobytes())
    np.testing.assert_array_equal(read_pfm(path), [[4, 5, 6], [1, 2, 3]])


def test_kitti_png_round_trip(tmp_path):
    disparity = np.array([[0.0, 1.5, 10.25], [np.inf, np.nan, 255.99]], dtype=np.float32)
    path = tmp_path / "000000_10.png"
    write_kitti_disparity(path, disparity)
    raw = np.asarray(Image.open(path))
    assert raw.dtype == np.uint16
    np.testing.assert_array_equal(raw, [[1, 384, 2624], [0, 0, 65533]])  # valid 0 px stays valid (1/256)
    back = read_kitti_disparity(path)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back[0], [1 / 256, 1.5, 10.25])
    assert np.isinf(back[1, :2]).all() and back[1, 2] == pytest.approx(65533 / 256)
    np.testing.assert_array_equal(read_disparity(path), back)


def test_read_disparity_dispatch(tmp_path):
    array = np.array([[1.0, np.nan], [np.inf, 3.0]], dtype=np.float32)
    write_pfm(tmp_path / "d.pfm", array)
    np.save(tmp_path / "d.npy", array.astype(np.float64))
    for name in ("d.pfm", "d.npy"):
        out = read_disparity(tmp_path / name)
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out, [[1.0, np.inf], [np.inf, 3.0]])  # every non-finite -> +inf
    (tmp_path / "d.exr").write_bytes(b"x")
    with pytest.raises(DataError, match=r"d\.exr.*unsupported"):
        read_disparity(tmp_path / "d.exr")
    write_pfm(tmp_path / "rgb.pfm", np.zeros((2, 2, 3)))
    with pytest.raises(DataError, match=r"rgb\.pfm.*1 channel"):
        read_disparity(tmp_path / "rgb.pfm")


def test_read_calib(tmp_path):
    path = tmp_path / "calib.txt"
    path.write_text(MIDDLEBURY_CALIB + "note=some text\n")
    calib = read_calib(path)
    assert calib["cam0"].shape == (3, 3) and calib["cam0"][0, 0] == pytest.approx(3997.684)
    assert calib["cam1"][0, 2] == pytest.approx(1307.839) and calib["cam1"][2, 2] == 1
    assert calib["baseline"] == pytest.approx(193.001) and calib["doffs"] == pytest.approx(131.111)
    assert (calib["width"], calib["height"], calib["ndisp"], calib["isint"]) == (2964, 1988, 280, 0)
    assert isinstance(calib["width"], int) and isinstance(calib["vmin"], float)
    assert calib["dymax"] == pytest.approx(1.516) and calib["note"] == "some text"


def test_read_image_conversions(tmp_path):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (4, 5), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(gray).save(tmp_path / "gray.png")
    Image.fromarray(np.dstack([rgb, np.full((4, 5), 7, np.uint8)])).save(tmp_path / "rgba.png")
    Image.fromarray(gray).convert("P").save(tmp_path / "palette.png")
    wide = (gray.astype(np.uint16) * 257)
    Image.frombytes("I;16", (5, 4), wide.astype("<u2").tobytes()).save(tmp_path / "gray16.png")
    np.testing.assert_array_equal(read_image(tmp_path / "rgb.png"), rgb)
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png"), rgb)
    for name in ("gray.png", "gray16.png", "palette.png"):
        out = read_image(tmp_path / name)
        assert out.dtype == np.uint8 and out.shape == (4, 5, 3), name
        np.testing.assert_array_equal(out, np.repeat(gray[:, :, None], 3, axis=2), err_msg=name)
    np.testing.assert_array_equal(read_mask(tmp_path / "gray.png"), gray)


# ------------------------------------------------------------------------------------------------
# corrupt, truncated and missing files: a DataError that names the file
# ------------------------------------------------------------------------------------------------


def _kitti_file(tmp_path):
    path = tmp_path / "good.png"
    write_kitti_disparity(path, np.full((20, 30), 12.5, np.float32))
    return path


def test_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope" / "missing.pfm"
    cases = []
    cases.append((read_pfm, missing, "not found"))
    (tmp_path / "header.pfm").write_bytes(b"P6\n3 2\n255\n" + bytes(18))
    cases.append((read_pfm, tmp_path / "header.pfm", "not a PFM"))
    (tmp_path / "dims.pfm").write_bytes(b"Pf\nthree 2\n-1.0\n" + bytes(24))
    cases.append((read_pfm, tmp_path / "dims.pfm", "bad PFM header"))
    (tmp_path / "short.pfm").write_bytes(b"Pf\n3 2\n-1.0\n" + bytes(20))
    cases.append((read_pfm, tmp_path / "short.pfm", "truncated PFM.*24.*20"))
    (tmp_path / "empty.pfm").write_bytes(b"")
    cases.append((read_pfm, tmp_path / "empty.pfm", "not a PFM"))
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "eight_bit.png")
    cases.append((read_kitti_disparity, tmp_path / "eight_bit.png", "8-bit.*16-bit"))
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "colour.png")
    cases.append((read_disparity, tmp_path / "colour.png", "16-bit"))
    raw = _kitti_file(tmp_path).read_bytes()
    (tmp_path / "cut.png").write_bytes(raw[: len(raw) // 2])
    cases.append((read_kitti_disparity, tmp_path / "cut.png", "truncated or corrupt"))
    cases.append((read_image, tmp_path / "cut.png", "truncated or corrupt"))
    (tmp_path / "text.png").write_text("hello, not an image")
    cases.append((read_image, tmp_path / "text.png", "not a readable image"))
    cases.append((read_image, tmp_path / "missing.jpg", "not found"))
    cases.append((read_image, tmp_path, "folder"))
    (tmp_path / "bad.npy").write_bytes(b"\x93NUMPY garbage")
    cases.append((read_disparity, tmp_path / "bad.npy", "not a valid .npy"))
    (tmp_path / "calib_line.txt").write_text("cam0=[1 0 2; 0 1 3; 0 0 1]\nthis line is wrong\n")
    cases.append((read_calib, tmp_path / "calib_line.txt", "line 2"))
    (tmp_path / "calib_matrix.txt").write_text("cam0=[1 0 2; 0 1 3]\n")
    cases.append((read_calib, tmp_path / "calib_matrix.txt", "3x3"))
    (tmp_path / "calib_empty.txt").write_text("\n")
    cases.append((read_calib, tmp_path / "calib_empty.txt", "empty"))
    cases.append((read_calib, tmp_path / "calib.txt", "not found"))
    for reader, path, pattern in cases:
        with pytest.raises(DataError, match=pattern) as info:
            reader(path)
        assert str(path) in str(info.value), (reader.__name__, str(info.value))


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "d.pfm"
    write_pfm(path, np.ones((2, 2)))
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_pfm(path, np.zeros((3, 3)))
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["d.pfm"]
    with pytest.raises(ValueError, match="HxW"):
        write_pfm(tmp_path / "bad.pfm", np.zeros((2, 2, 2)))
