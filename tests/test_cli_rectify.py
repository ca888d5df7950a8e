"""``madis-stereo rectify`` and ``predict --rectify`` on raw images of the invented rig, and sequences
(one colour range, an MP4)."""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest
from rig_helpers import rig_calibration, rig_pair
from tools_helpers import cli, make_tiny_checkpoint, read_ply, write_png

from madis_stereo.app.visualize import colorize_disparity
from madis_stereo.data.formats import read_image, read_pfm
from madis_stereo.geometry.rectify import Rectifier

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = (256, 128)


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    root = tmp_path_factory.mktemp("rig")
    calib = rig_calibration(*SIZE)
    fs = cv2.FileStorage(str(root / "stereo.yml"), cv2.FILE_STORAGE_WRITE)
    for key in ("K1", "D1", "K2", "D2", "R", "T"):
        fs.write(key, getattr(calib, key))
    fs.write("unit", "m")
    fs.release()
    for i in range(3):
        pair = rig_pair(calib, index=i)
        write_png(root / "left" / f"frame{i:03d}.png", pair.raw_left)
        write_png(root / "right" / f"frame{i:03d}.png", pair.raw_right)
    return root, calib, make_tiny_checkpoint(root / "tiny.safetensors")


def test_rectify_command(rig, tmp_path):
    root, calib, _ = rig
    proc = cli("rectify", root / "stereo.yml", root / "left" / "frame000.png", root / "right" / "frame000.png",
               "-o", tmp_path)
    assert proc.returncode == 0, proc.stderr
    view = Rectifier(calib).view(*SIZE)
    expected = Rectifier(calib).rectify(read_image(root / "left" / "frame000.png"),
                                        read_image(root / "right" / "frame000.png"))
    np.testing.assert_array_equal(read_image(tmp_path / "frame000_left.png"), expected[0])
    fs = cv2.FileStorage(str(tmp_path / "rectification.yml"), cv2.FILE_STORAGE_READ)
    np.testing.assert_allclose(fs.getNode("P2").mat(), view.P2)
    assert fs.getNode("unit").string() == "m"
    after = float(re.search(r"frame000: vertical disparity median ([\d.]+) px", proc.stderr).group(1))
    before = float(re.search(r"\(raw: median ([\d.]+) px", proc.stderr).group(1))
    assert after < 0.5 < before
    assert "rectify finished" in proc.stderr


def test_predict_rectify_writes_depth_and_points_in_the_original_left_camera(rig, tmp_path):
    root, calib, ckpt = rig
    proc = cli("predict", root / "left" / "frame000.png", root / "right" / "frame000.png", "-o", tmp_path,
               "--checkpoint", ckpt, "--device", "cpu", "--format", "pfm,depth,ply", "--rectify", root / "stereo.yml")
    assert proc.returncode == 0, proc.stderr
    assert "depth and point coordinates are in m (the calibration's T), original left camera" in proc.stderr
    assert re.search(r"vertical disparity of matched points: median [\d.]+ px.* before rectification", proc.stderr)
    assert "predict finished" in proc.stderr
    view = Rectifier(calib).view(*SIZE)
    disparity = read_pfm(tmp_path / "frame000.pfm")  # of the rectified left image
    depth = read_pfm(tmp_path / "frame000_depth.pfm")  # on the original left pixel grid
    assert depth.shape == (SIZE[1], SIZE[0])
    np.testing.assert_allclose(depth, view.depth(disparity), rtol=1e-6)
    header, vertices = read_ply(tmp_path / "frame000.ply")
    assert header["count"] == np.isfinite(depth).sum()
    np.testing.assert_allclose(np.sort(vertices["z"]), np.sort(depth[np.isfinite(depth)]), rtol=1e-6)


def test_predict_sequence_keeps_one_colour_range_and_writes_a_video(rig, tmp_path):
    import imageio_ffmpeg

    root, _, ckpt = rig
    video = tmp_path / "seq.mp4"
    proc = cli("predict", root / "left", root / "right", "-o", tmp_path, "--checkpoint", ckpt, "--device", "cpu",
               "--format", "color,pfm", "--rectify", root / "stereo.yml", "--video", video, "--fps", "5")
    assert proc.returncode == 0, proc.stderr
    first = read_pfm(tmp_path / "frame000.pfm")
    vmax = float(np.percentile(first[np.isfinite(first)], 99))
    for i in range(3):  # every frame is coloured with the first frame's range
        disparity = read_pfm(tmp_path / f"frame{i:03d}.pfm")
        np.testing.assert_array_equal(read_image(tmp_path / f"frame{i:03d}_color.png"),
                                      colorize_disparity(disparity, vmin=0.0, vmax=vmax))
    assert "colour range 0.." in proc.stderr and "for all 3 pairs" in proc.stderr
    frames = imageio_ffmpeg.read_frames(str(video))
    meta = next(frames)
    assert meta["size"] == (2 * SIZE[0], SIZE[1])
    assert sum(1 for _ in frames) == 3
    assert re.search(rf"\n  video +{re.escape(str(video))} \(3 frames\)", proc.stderr)


def test_bad_calibration_is_one_line(rig, tmp_path):
    root, calib, ckpt = rig
    bad = tmp_path / "bad.yml"
    fs = cv2.FileStorage(str(bad), cv2.FILE_STORAGE_WRITE)
    for key in ("K1", "D1", "K2", "D2", "R"):
        fs.write(key, getattr(calib, key))
    fs.release()
    proc = cli("predict", root / "left", root / "right", "-o", tmp_path, "--checkpoint", ckpt, "--rectify", bad)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"madis-stereo predict: error: {bad}: missing key T"
    proc = cli("predict", root / "left", root / "right", "-o", tmp_path, "--rectify", bad, "--focal", "100")
    assert proc.stderr.strip().endswith("--rectify takes the cameras from the calibration; drop --focal")
