"""``madis-stereo predict`` end to end on generated files: every output format and every failure mode."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from tools_helpers import (
    cli,
    make_tiny_checkpoint,
    read_ply,
    run_cli,
    stereo_images,
    write_pair,
    write_png,
)

import madis_stereo as ms
from madis_stereo.app.visualize import colorize_disparity
from madis_stereo.data import formats as data_io  # noqa: E402
from madis_stereo.inference.predictor import certainty

CALIB = """cam0=[120.5 0 70.25; 0 120.5 33.5; 0 0 1]
cam1=[120.5 0 75.25; 0 120.5 33.5; 0 0 1]
doffs=5.0
baseline=193.001
width=150
height=70
ndisp=64
"""


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    ckpt = make_tiny_checkpoint(root / "tiny.safetensors")
    left, right = write_pair(root / "images", "scene", height=70, width=150)
    (root / "images" / "calib.txt").write_text(CALIB)
    return root, ckpt, left, right


def _reference(ckpt, left_path, right_path):
    model = ms.load_model(ckpt)
    return ms.predict(model, data_io.read_image(left_path), data_io.read_image(right_path))


def test_every_format(setup, tmp_path):
    root, ckpt, left, right = setup
    out = tmp_path / "out"
    proc = run_cli("predict", left, right, "-o", out, "--checkpoint", ckpt, "--device", "cpu",
                   "--format", "color,png16,pfm,npy,depth,ply,conf", "--calib", root / "images" / "calib.txt",
                   "--vmin", "0", "--vmax", "40")
    assert proc.returncode == 0, proc.stderr
    assert "depth and point coordinates are in mm" in proc.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == ["scene_left.npy", "scene_left.pfm", "scene_left.ply", "scene_left_color.png",
                     "scene_left_conf.png", "scene_left_depth.pfm", "scene_left_disp16.png"]
    ref = _reference(ckpt, left, right)
    pfm = data_io.read_pfm(out / "scene_left.pfm")
    np.testing.assert_allclose(pfm, ref.disparity, atol=1e-4)
    np.testing.assert_array_equal(np.load(out / "scene_left.npy"), pfm)
    png16 = data_io.read_kitti_disparity(out / "scene_left_disp16.png")
    finite = pfm > 0
    np.testing.assert_allclose(png16[finite], pfm[finite], atol=1 / 512 + 1e-6)
    color = data_io.read_image(out / "scene_left_color.png")
    np.testing.assert_array_equal(color, colorize_disparity(pfm, vmin=0, vmax=40))
    conf = np.asarray(Image.open(out / "scene_left_conf.png"))
    assert conf.dtype == np.uint8 and conf.ndim == 2
    np.testing.assert_allclose(conf, np.round(certainty(ref.confidence) * 255), atol=1)

    # depth: Z = baseline * f / (d + doffs), in mm
    depth = data_io.read_pfm(out / "scene_left_depth.pfm")
    np.testing.assert_allclose(depth, 193.001 * 120.5 / (pfm.astype(np.float64) + 5.0), rtol=1e-5)

    # point cloud: one point per pixel with a positive disparity, back-projected with cam0's cx, cy
    info, vertices = read_ply(out / "scene_left.ply")
    assert info["fields"] == ["x", "y", "z", "red", "green", "blue"]
    valid = np.isfinite(pfm) & (pfm > 0)
    assert info["count"] == int(valid.sum())
    v, u = np.argwhere(valid)[17]
    point = vertices[17]
    z = 193.001 * 120.5 / (float(pfm[v, u]) + 5.0)
    assert point["z"] == pytest.approx(z, rel=1e-5)
    assert point["x"] == pytest.approx((u - 70.25) * z / 120.5, rel=1e-5, abs=1e-4)
    assert point["y"] == pytest.approx((v - 33.5) * z / 120.5, rel=1e-5, abs=1e-4)
    image = data_io.read_image(left)
    assert (point["red"], point["green"], point["blue"]) == tuple(image[v, u])


def test_focal_baseline_depth_npy_and_filters(setup, tmp_path):
    root, ckpt, left, right = setup
    ref = _reference(ckpt, left, right)
    depth_ref = 0.5 * 100 / ref.disparity.astype(np.float64)
    sure = certainty(ref.confidence)
    max_depth, min_sure = float(np.percentile(depth_ref, 70)), float(np.percentile(sure, 20))
    out = tmp_path / "out"
    proc = cli("predict", left, right, "-o", out, "--checkpoint", ckpt, "--device", "cpu", "--format", "depth,ply",
               "--focal", "100", "--baseline", "0.5", "--depth-format", "npy", "--max-depth", max_depth,
               "--min-certainty", min_sure)
    assert proc.returncode == 0, proc.stderr
    assert "depth and point coordinates are in the unit of --baseline" in proc.stderr
    depth = np.load(out / "scene_left_depth.npy")
    np.testing.assert_allclose(depth, depth_ref, rtol=1e-4)
    info, vertices = read_ply(out / "scene_left.ply")
    depth32 = depth_ref.astype(np.float32)  # the written depth's precision decides ties at the limit
    kept = (ref.disparity > 0) & (depth32 <= np.float32(max_depth)) & (sure >= min_sure)
    assert 0 < info["count"] == int(kept.sum()) < kept.size
    assert vertices["z"].max() <= max_depth * (1 + 1e-5)
    # image-centre principal point: ((150 - 1) / 2, (70 - 1) / 2)
    z = vertices["z"].astype(np.float64)
    v, u = np.argwhere(kept)[0]
    assert vertices[0]["x"] == pytest.approx((u - 74.5) * z[0] / 100, rel=1e-4)
    assert vertices[0]["y"] == pytest.approx((v - 34.5) * z[0] / 100, rel=1e-4)


def test_folders_globs_and_failures_keep_going(setup, tmp_path):
    root, ckpt, _, _ = setup
    for i, width in enumerate((150, 150, 140)):
        left, right = stereo_images(70, width, seed=i)
        write_png(tmp_path / "L" / f"f{i}.png", left)
        write_png(tmp_path / "R" / f"f{i}.png", right if width == 150 else right[:, :-6])  # f2: sizes differ
    (tmp_path / "L" / "f3.png").write_bytes(b"not a png")  # unreadable
    write_png(tmp_path / "R" / "f3.png", right)
    out = tmp_path / "out"
    proc = cli("predict", tmp_path / "L", tmp_path / "R", "-o", out, "--checkpoint", ckpt, "--device", "cpu",
                   "--format", "pfm")
    assert proc.returncode == 1
    assert sorted(p.name for p in out.iterdir()) == ["f0.pfm", "f1.pfm"]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("madis-stereo predict: error:")]
    assert len(errors) == 2
    assert "f2.png: left and right images differ in size: 70x140 vs 70x134 (HxW)" in errors[0]
    assert f"{tmp_path / 'L' / 'f3.png'} + {tmp_path / 'R' / 'f3.png'}: " in errors[1]
    assert str(tmp_path / "L" / "f3.png") in errors[1].split(": ", 2)[2]  # the reader names the bad file
    assert "madis-stereo predict: 2 of 4 pair(s) failed:" in proc.stderr
    # --batch: f0 and f1 go through the model together, the failures are the same
    batched = tmp_path / "batched"
    proc = cli("predict", tmp_path / "L", tmp_path / "R", "-o", batched, "--checkpoint", ckpt, "--device", "cpu",
               "--format", "pfm", "--batch", "4")
    assert proc.returncode == 1 and "madis-stereo predict: 2 of 4 pair(s) failed:" in proc.stderr
    for name in ("f0.pfm", "f1.pfm"):
        assert np.abs(data_io.read_pfm(batched / name) - data_io.read_pfm(out / name)).max() < 1e-4
    assert sorted(p.name for p in batched.iterdir()) == ["f0.pfm", "f1.pfm"]
    # globs, quoted as the user would
    proc = cli("predict", str(tmp_path / "L" / "f[01].png"), str(tmp_path / "R" / "f[01].png"), "-o",
                   tmp_path / "globbed", "--checkpoint", ckpt, "--device", "cpu", "--format", "npy")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "globbed").iterdir()) == ["f0.npy", "f1.npy"]


def test_missing_calibration_and_bad_checkpoint(setup, tmp_path):
    root, ckpt, left, right = setup
    proc = cli("predict", left, right, "-o", tmp_path, "--checkpoint", ckpt, "--format", "ply")
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith("madis-stereo predict: error: formats depth and ply need --rectify CALIB, "
                                        "--calib calib.txt (or 'auto'), or --focal F --baseline B")
    proc = cli("predict", left, right, "-o", tmp_path / "o", "--checkpoint", ckpt, "--format", "depth",
                   "--calib", tmp_path / "nowhere" / "calib.txt", "--device", "cpu")
    assert proc.returncode == 2
    assert f"madis-stereo predict: error: {tmp_path / 'nowhere' / 'calib.txt'}" in proc.stderr
    assert "not found" in proc.stderr
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"garbage" * 10)
    proc = cli("predict", left, right, "-o", tmp_path / "o", "--checkpoint", bad)
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith(f"madis-stereo predict: error: {bad} is not a checkpoint (neither "
                                        "safetensors nor a PyTorch .pth file)")
    proc = cli("predict", left, right, "-o", tmp_path / "o", "--checkpoint", ckpt, "--format", "jpeg")
    assert proc.returncode == 2 and "unknown output format(s) ['jpeg']" in proc.stderr


def test_calib_auto_and_onnx_model(setup, tmp_path):
    root, ckpt, left, right = setup
    onnx = tmp_path / "tiny.onnx"
    assert cli("export", "onnx", "--checkpoint", ckpt, "-o", onnx, "--no-check").returncode == 0
    proc = cli("predict", left, right, "-o", tmp_path / "out", "--onnx", onnx, "--format", "pfm,depth",
                   "--calib", "auto", "--tile-batch", "2")
    assert proc.returncode == 0, proc.stderr
    ref = _reference(ckpt, left, right)
    np.testing.assert_allclose(data_io.read_pfm(tmp_path / "out" / "scene_left.pfm"), ref.disparity, atol=1e-3)
    assert (tmp_path / "out" / "scene_left_depth.pfm").is_file()


def test_without_checkpoint_uses_the_bundled_model_or_says_so(setup, tmp_path, monkeypatch):
    from madis_stereo.model import checkpoint

    root, ckpt, left, right = setup
    monkeypatch.setattr(checkpoint, "default_model_path", lambda: tmp_path / "missing.safetensors")
    proc = cli("predict", left, right, "-o", tmp_path / "out", "--device", "cpu")
    assert proc.returncode == 2
    assert "madis-stereo predict: error: no bundled model in this installation" in proc.stderr
    assert "pass --checkpoint" in proc.stderr
    monkeypatch.setattr(checkpoint, "default_model_path", lambda: ckpt)
    proc = cli("predict", left, right, "-o", tmp_path / "out", "--device", "cpu", "--format", "pfm")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "scene_left.pfm").is_file()
