"""Depth, point clouds, PLY files and pair discovery (library level)."""

from __future__ import annotations

import numpy as np
import pytest
from tools_helpers import read_ply, write_png

import madis_stereo as ms
from madis_stereo.app.outputs import OutputOptions, certainty_png, write_ply
from madis_stereo.app.pairs import find_pairs
from madis_stereo.geometry.camera import Camera, camera_from_calib, disparity_to_depth, point_cloud


def test_depth_formula_and_invalid_pixels():
    cam = Camera(fx=1000.0, baseline=200.0, doffs=10.0)
    disp = np.array([[90.0, 0.0, -10.0, np.nan], [np.inf, 190.0, -20.0, 40.0]], dtype=np.float32)
    depth = disparity_to_depth(disp, cam)
    assert depth.dtype == np.float32
    assert depth[0, 0] == pytest.approx(200 * 1000 / 100)
    assert depth[0, 1] == pytest.approx(200 * 1000 / 10)  # d = 0 is fine while d + doffs > 0
    assert depth[1, 1] == pytest.approx(1000.0)
    assert depth[1, 3] == pytest.approx(4000.0)
    assert np.isinf(depth[0, 2]) and np.isinf(depth[0, 3]) and np.isinf(depth[1, 0]) and np.isinf(depth[1, 2])


def test_camera_from_middlebury_calib():
    calib = {"cam0": np.array([[3997.684, 0, 1176.728], [0, 3997.684, 1011.728], [0, 0, 1]]),
             "doffs": 131.111, "baseline": 193.001, "ndisp": 280}
    cam = camera_from_calib(calib)
    assert (cam.fx, cam.cx, cam.cy, cam.doffs, cam.baseline, cam.unit) == (
        3997.684, 1176.728, 1011.728, 131.111, 193.001, "mm")
    with pytest.raises(ms.InputError, match="cam0"):
        camera_from_calib({"baseline": 1.0})
    with pytest.raises(ms.InputError, match="baseline"):
        Camera(fx=100.0, baseline=0.0)


def test_point_cloud_back_projection_and_filters():
    h, w = 4, 5
    disp = np.full((h, w), 10.0, dtype=np.float32)
    disp[0, 0] = np.nan
    disp[0, 1] = 0.0
    disp[3, 4] = 2.0  # far away
    image = np.arange(h * w * 3, dtype=np.uint8).reshape(h, w, 3)
    cam = Camera(fx=50.0, baseline=0.5, doffs=0.0, cx=2.0, cy=1.0)
    points, colors = point_cloud(disp, image, cam)
    assert len(points) == h * w - 2  # NaN and zero disparity skipped
    # pixel (v=2, u=4): Z = 0.5 * 50 / 10 = 2.5, X = (4 - 2) * 2.5 / 50, Y = (2 - 1) * 2.5 / 50
    index = [(v, u) for v in range(h) for u in range(w) if (v, u) not in ((0, 0), (0, 1))].index((2, 4))
    np.testing.assert_allclose(points[index], [0.1, 0.05, 2.5], rtol=1e-6)
    np.testing.assert_array_equal(colors[index], image[2, 4])
    near, _ = point_cloud(disp, image, cam, max_depth=5.0)
    assert len(near) == len(points) - 1
    sure = np.ones((h, w), dtype=np.float32)
    sure[1] = 0.1
    confident, _ = point_cloud(disp, image, cam, certainty=sure, min_certainty=0.5)
    assert len(confident) == len(points) - w
    # without cx/cy the image centre is used
    centred, _ = point_cloud(np.full((3, 3), 10.0), np.zeros((3, 3, 3), np.uint8), Camera(fx=50.0, baseline=0.5))
    np.testing.assert_allclose(centred[4], [0.0, 0.0, 2.5])


def test_ply_is_standard_binary_little_endian(tmp_path):
    points = np.array([[0.0, 1.5, -2.0], [3.25, 4.0, 5.0]], dtype=np.float32)
    colors = np.array([[255, 0, 10], [1, 2, 3]], dtype=np.uint8)
    path = write_ply(tmp_path / "cloud.ply", points, colors, comments=("unit mm",))
    header = path.read_bytes().split(b"end_header\n")[0].decode()
    assert "comment unit mm" in header
    info, vertices = read_ply(path)
    assert info == {"count": 2, "fields": ["x", "y", "z", "red", "green", "blue"]}
    np.testing.assert_array_equal(np.stack([vertices["x"], vertices["y"], vertices["z"]], 1), points)
    np.testing.assert_array_equal(np.stack([vertices["red"], vertices["green"], vertices["blue"]], 1), colors)
    empty = write_ply(tmp_path / "empty.ply", np.zeros((0, 3)), np.zeros((0, 3), np.uint8))
    assert read_ply(empty)[0]["count"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cloud.ply", "empty.ply"]  # no temporary files left


def test_certainty_png_and_options():
    assert certainty_png(np.array([[0.0, 0.5, 1.0, np.nan]])).tolist() == [[0, 128, 255, 0]]
    with pytest.raises(ms.InputError, match="unknown output format"):
        OutputOptions(formats=("color", "jpeg"))
    assert OutputOptions(formats=("ply",)).needs_camera and not OutputOptions(formats=("pfm",)).needs_camera


def test_find_pairs_files_folders_and_globs(tmp_path):
    img = np.zeros((4, 4, 3), np.uint8)
    for side in ("left", "right"):
        for name in ("b.png", "a.png"):
            write_png(tmp_path / side / name, img)
    for i in (1, 2):
        write_png(tmp_path / "seq" / f"im0_{i:03d}.png", img)
        write_png(tmp_path / "seq" / f"im1_{i:03d}.png", img)
    by_name = find_pairs([str(tmp_path / "left"), str(tmp_path / "right")])
    assert [(p.left.name, p.right.name, p.name) for p in by_name] == [("a.png", "a.png", "a"), ("b.png", "b.png", "b")]
    by_order = find_pairs([str(tmp_path / "seq" / "im0_*.png"), str(tmp_path / "seq" / "im1_*.png")])
    assert [(p.left.name, p.right.name) for p in by_order] == [("im0_001.png", "im1_001.png"),
                                                               ("im0_002.png", "im1_002.png")]
    # same stem in several folders: the folder name makes the output names unique
    write_png(tmp_path / "Motorcycle" / "im0.png", img)
    write_png(tmp_path / "Piano" / "im0.png", img)
    files = find_pairs([str(tmp_path / "Motorcycle" / "im0.png"), "r1.png", str(tmp_path / "Piano" / "im0.png"),
                        "r2.png"])
    assert [p.name for p in files] == ["Motorcycle_im0", "Piano_im0"]
    with pytest.raises(ms.InputError, match="LEFT RIGHT"):
        find_pairs(["only_one.png"])
    with pytest.raises(ms.InputError, match="no file matches"):
        find_pairs([str(tmp_path / "*.nothing"), str(tmp_path / "*.nothing")])
    with pytest.raises(ms.InputError, match="two files, two folders"):
        find_pairs([str(tmp_path / "left"), "x.png"])
    write_png(tmp_path / "right" / "c.png", img)
    write_png(tmp_path / "right" / "d.png", img)
    write_png(tmp_path / "right" / "e.png", img)
    with pytest.raises(ms.InputError, match="no common file names, no left/right naming convention, and the counts"):
        find_pairs([str(tmp_path / "left"), str(tmp_path / "seq")])
