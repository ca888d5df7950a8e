"""User journeys that must work the first time (issue 18): the user's own folders, wrong flags and devices,
run folders shared by two processes, fine-tuning the bundled model. Each test failed before its fix."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import data_layouts as layouts
import numpy as np
import pytest
import torch
from tools_helpers import cli, make_tiny_checkpoint, write_pair

from madis_stereo.app.pairs import find_pairs
from madis_stereo.errors import InputError

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("journeys") / "tiny.safetensors")


# --- evaluate on the user's own folder and on the synthetic world ----------------------------------------


def test_evaluate_own_folder_and_synthetic(ckpt, tmp_path):
    layout = layouts.make_folder(tmp_path / "my_rig")
    out = tmp_path / "folder.json"
    proc = cli("evaluate", "--checkpoint", ckpt, "--dataset", "folder", "--root", layout.root,
               "--set", "disparity='disp/*.pfm'", "--out", out, "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["dataset"] == {"name": "folder", "root": str(layout.root), "disparity": "disp/*.pfm"}
    assert sorted(r["name"] for r in report["per_image"]) == ["scene_a", "scene_b", "scene_c"]
    assert f"dataset     folder at {layout.root}, protocol" in proc.stderr  # a folder has no split to name
    out = tmp_path / "synthetic.json"
    proc = cli("evaluate", "--checkpoint", ckpt, "--dataset", "synthetic", "--set", "size=[64,128]",
               "--max-images", 1, "--out", out, "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(out.read_text())["per_image"]) == 1
    assert "dataset     synthetic, protocol" in proc.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--dataset", "synthetic", "--root", "x"], "dataset 'synthetic' is generated and reads no folder: drop --root"),
    (["--dataset", "folder", "--root", "x", "--split", "train"], "dataset 'folder' has no splits: drop --split"),
    (["--dataset", "kitti2015"], "dataset 'kitti2015' needs --root DIR"),
    (["--dataset", "folder", "--root", "x", "--set", "split=null"], "instead of --set split=..."),
])
def test_evaluate_dataset_flags_one_line(ckpt, args, message):
    proc = cli("evaluate", "--checkpoint", ckpt, *args)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr


# --- devices this machine does not have -----------------------------------------------------------------

_NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


@_NO_CUDA
@pytest.mark.parametrize("command", [
    ["predict", "a.png", "b.png", "-o", "out"],
    ["evaluate", "--dataset", "synthetic"],
    ["analyze", "attention-distance", "--checkpoint", "c", "a.png", "b.png", "--json", "x.json"],
    ["demo"],
])
@pytest.mark.parametrize("device", ["cuda", "cuda:1", "mps"])
def test_missing_device_is_one_line(command, device, tmp_path):
    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    proc = cli(*command, "--device", device)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and f"device '{device}'" in proc.stderr, proc.stderr


@_NO_CUDA
def test_train_on_missing_cuda_is_one_line(tmp_path):
    proc = cli("train", CONFIGS / "tiny_synthetic.yaml", "run.device=cuda", "--out", tmp_path / "run")
    assert proc.returncode == 2
    assert "device 'cuda'" in proc.stderr.splitlines()[-1] and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


def test_onnx_with_cuda_never_runs_on_the_cpu(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    left, right = write_pair(tmp_path)
    proc = cli("predict", left, right, "-o", tmp_path / "out", "--onnx", tmp_path / "m.onnx", "--device", "cuda")
    assert proc.returncode == 2
    assert "this onnxruntime has no CUDA provider" in proc.stderr and not (tmp_path / "out").exists()


# --- crop and tiling flags: checked once, up front ------------------------------------------------------


@pytest.mark.parametrize(("flags", "message"), [
    (["--crop", "0", "0"], "crop 0x0 (--crop H W): each side must be a positive multiple of 32"),
    (["--crop", "-32", "64"], "crop -32x64 (--crop H W)"),
    (["--crop", "250", "500"], "crop 250x500 (--crop H W)"),
    (["--tile-batch", "0"], "tile batch (--tile-batch) must be an integer >= 1, got 0"),
    (["--overlap", "1"], "overlap (--overlap) must be in [0, 1), got 1.0"),
])
def test_tiling_flags_fail_once_up_front(ckpt, tmp_path, flags, message):
    for name in ("a", "b", "c"):
        write_pair(tmp_path / "in", name)
    folder = tmp_path / "in"
    proc = cli("predict", folder / "a_left.png", folder / "a_right.png", folder / "b_left.png",
               folder / "b_right.png", "-o", tmp_path / "out", "--checkpoint", ckpt, "--device", "cpu", *flags)
    assert proc.returncode == 2
    assert proc.stderr.count(message) == 1 and proc.stderr.startswith(f"madis-stereo predict: error: {message}")
    assert not (tmp_path / "out").exists()


# --- folder pairing ---------------------------------------------------------------------------------------


def _touch_images(folder, *names):
    from tools_helpers import write_png

    for name in names:
        write_png(folder / name, np.zeros((4, 4, 3), np.uint8))


def test_extra_file_is_named_and_the_rest_pairs(tmp_path, caplog):
    _touch_images(tmp_path / "left", "a.png", "b.png", "extra.png")
    _touch_images(tmp_path / "right", "a.png", "b.png")
    pairs = find_pairs([str(tmp_path / "left"), str(tmp_path / "right")])
    assert [(p.left.name, p.right.name) for p in pairs] == [("a.png", "a.png"), ("b.png", "b.png")]
    assert "1 image(s) without a partner, skipped" in caplog.text
    assert str(tmp_path / "left" / "extra.png") in caplog.text


@pytest.mark.parametrize(("left", "right"), [
    ("desk_left.png", "desk_right.png"), ("left_desk.png", "right_desk.png"), ("desk_L.png", "desk_R.png"),
    ("desk-im0.png", "desk-im1.png"),
])
def test_one_folder_with_both_views_pairs_by_naming_convention(tmp_path, left, right, caplog):
    _touch_images(tmp_path, left, right, left.replace("desk", "toy"), right.replace("desk", "toy"))
    pairs = find_pairs([str(tmp_path), str(tmp_path)])
    assert sorted((p.left.name, p.right.name) for p in pairs) == sorted(
        [(left, right), (left.replace("desk", "toy"), right.replace("desk", "toy"))])
    assert all(p.left != p.right for p in pairs)
    patterns = find_pairs([str(tmp_path / "*.png"), str(tmp_path / "*.png")])
    assert [(p.left, p.right) for p in patterns] == [(p.left, p.right) for p in pairs]
    # a left image in one folder, its right one in another, both named by the convention
    (tmp_path / "r").mkdir()
    (tmp_path / right).rename(tmp_path / "r" / right)
    (tmp_path / "l").mkdir()
    (tmp_path / left).rename(tmp_path / "l" / left)
    pairs = find_pairs([str(tmp_path / "l"), str(tmp_path / "r")])
    assert [(p.left.name, p.right.name) for p in pairs] == [(left, right)]


def test_one_folder_without_convention_is_refused(tmp_path):
    _touch_images(tmp_path, "a.png", "b.png", "Lamp.png")
    with pytest.raises(InputError, match="is both LEFT and RIGHT, and its 3 image"):
        find_pairs([str(tmp_path), str(tmp_path)])


def test_predict_on_a_left_right_folder(ckpt, tmp_path):
    for name in ("desk", "toy"):
        write_pair(tmp_path / "pairs", name, height=40, width=70)
    proc = cli("predict", tmp_path / "pairs", tmp_path / "pairs", "-o", tmp_path / "out", "--checkpoint", ckpt,
               "--device", "cpu", "--format", "npy")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["desk_left.npy", "toy_left.npy"]


# --- messages: YAML errors with their line, the pickled-module checkpoint error whole -------------------


def test_yaml_syntax_error_names_line_and_column(tmp_path):
    config = tmp_path / "recipe.yaml"
    config.write_text("model:\n  preset: tiny\noptim:\n  lr: [1e-4\n  batch_size: 2\n")
    proc = cli("train", config, "--out", tmp_path / "run")
    assert proc.returncode == 2
    line = proc.stderr.strip()
    assert line.startswith(f"madis-stereo train: error: {config}:5:13: not valid YAML: expected ',' or ']'")
    assert line.endswith("(while parsing a flow sequence at line 4)") and "\n" not in line


def test_pickled_module_checkpoint_error_is_whole_and_plain(tmp_path):
    path = tmp_path / "whole_model.pth"
    torch.save(torch.nn.Linear(2, 2), path)
    proc = cli("info", path)
    assert proc.returncode == 2
    assert proc.stderr == (f"madis-stereo info: error: refusing to load {path}: its pickle holds Python objects other "
                           "than tensors and plain data (torch.nn.modules.linear.Linear), which could run code when "
                           "loaded; load it only in code you trust and save its state_dict (or use a madis-stereo "
                           ".safetensors checkpoint)\n")


# --- training log terms ------------------------------------------------------------------------------------


def test_log_terms_are_disjoint_and_named(tmp_path, caplog):
    from toy_stereo import toy_config, write_toy_folder

    from madis_stereo.training import load_train_config, train
    from madis_stereo.training.runlog import read_metrics

    spec = write_toy_folder(tmp_path / "toy", 4)
    caplog.set_level(logging.INFO, logger="madis_stereo")
    run = train(load_train_config(toy_config(data={"train": [spec]}, optim={"max_steps": 1})), out_dir=tmp_path / "r")
    record = read_metrics(run.run_dir / "metrics.jsonl", "train")[0]
    assert "distill" not in record and record["pseudo"] > 0  # the toy GT has holes
    total = 2 * record["gt"] + record["pseudo"] + record["recon_left"] + record["recon_right"]
    assert record["loss"] == pytest.approx(total, rel=1e-5)
    assert "pseudo = Laplacian NLL on pixels without GT, against the EMA teacher's disparity" in caplog.text
    assert "loss = (w.gt + w.distill) * gt + w.distill * pseudo" in caplog.text


def test_masked_training_warns_about_encoder_taps(caplog):
    from madis_stereo.model.config import ModelConfig
    from madis_stereo.training.engine import warn_encoder_taps

    bundled_like = ModelConfig.preset("small")  # taps [3, 5, 7, 9]: encoder layers 3 and 5
    assert warn_encoder_taps(bundled_like, 0.4)
    assert "model.dpt_hooks [3, 5, 7, 9] tap encoder layer(s) [3, 5]" in caplog.text
    assert "model.dpt_hooks=[6, 7, 8, 9]" in caplog.text
    assert not warn_encoder_taps(bundled_like, 0.0)  # the baseline: no masking, encoder taps are fine
    assert not warn_encoder_taps(bundled_like.replace(dpt_hooks=(6, 7, 8, 9)), 0.4)


# --- predict: principal point ------------------------------------------------------------------------------


def test_point_cloud_uses_cx_cy(ckpt, tmp_path):
    from tools_helpers import read_ply

    left, right = write_pair(tmp_path, "scene", height=40, width=70)
    out = tmp_path / "out"
    proc = cli("predict", left, right, "-o", out, "--checkpoint", ckpt, "--device", "cpu", "--format", "npy,ply",
               "--focal", "50", "--fy", "60", "--baseline", "0.5", "--cx", "10.5", "--cy", "30")
    assert proc.returncode == 0, proc.stderr
    disparity = np.load(out / "scene_left.npy")
    _, vertices = read_ply(out / "scene_left.ply")
    v, u = np.argwhere(disparity > 0)[0]
    z = 0.5 * 50 / disparity[v, u]
    assert vertices[0]["z"] == pytest.approx(z, rel=1e-5)
    assert vertices[0]["x"] == pytest.approx((u - 10.5) * z / 50, rel=1e-4)
    assert vertices[0]["y"] == pytest.approx((v - 30) * z / 60, rel=1e-4)
    proc = cli("predict", left, right, "-o", out, "--checkpoint", ckpt, "--format", "ply", "--cx", "3",
               "--calib", tmp_path / "calib.txt")
    assert proc.returncode == 2 and "either --calib or --focal/--baseline" in proc.stderr


def test_a_given_camera_means_depth_and_a_point_cloud_unless_the_formats_say_otherwise(ckpt, tmp_path):
    left, right = write_pair(tmp_path, "scene", height=40, width=70)
    base = ["predict", left, right, "--checkpoint", ckpt, "--device", "cpu"]
    proc = cli(*base, "-o", tmp_path / "default", "--focal", "50", "--baseline", "0.5")
    assert proc.returncode == 0, proc.stderr
    stem = left.stem
    assert sorted(p.name for p in (tmp_path / "default").iterdir()) == sorted(
        [f"{stem}_color.png", f"{stem}_depth.pfm", f"{stem}.ply"])
    proc = cli(*base, "-o", tmp_path / "npy", "--format", "npy", "--focal", "50", "--baseline", "0.5")
    assert proc.returncode == 0, proc.stderr
    assert "the camera (--focal/--baseline) is unused: --format npy writes neither depth nor ply" in proc.stderr
    assert sorted(p.name for p in (tmp_path / "npy").iterdir()) == [f"{stem}.npy"]
    proc = cli(*base, "-o", tmp_path / "plain")
    assert proc.returncode == 0 and "unused" not in proc.stderr
    assert sorted(p.name for p in (tmp_path / "plain").iterdir()) == [f"{stem}_color.png"]
    proc = cli(*base, "-o", tmp_path / "half", "--focal", "50")
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith("--focal F and --baseline B go together (only --focal was given)")
    proc = cli(*base, "-o", tmp_path / "both", "--baseline", "0.5", "--calib", tmp_path / "calib.txt")
    assert proc.returncode == 2 and "either --calib or --focal/--baseline" in proc.stderr
    assert not (tmp_path / "half").exists() and not (tmp_path / "both").exists()


# --- small confusions: HxW, Middlebury resolution, run folders as checkpoints, --version -------------------


def test_data_check_prints_hxw(tmp_path):
    layout = layouts.make_folder(tmp_path / "rig")
    proc = cli("data", "check", "--dataset", "folder", "--root", layout.root, "--samples", "1")
    assert proc.returncode == 0, proc.stderr
    height, width = next(iter(layout.frames["train"].values()))["left"].shape[:2]
    assert height != width and f": {height}x{width} (HxW, like --crop)" in proc.stdout


def test_middlebury_error_suggests_the_resolution_it_sees(tmp_path):
    layout = layouts.make_middlebury(tmp_path / "mb", resolutions="Q")
    proc = cli("data", "check", "--dataset", "middlebury", "--root", layout.root)
    assert proc.returncode == 2
    assert "trainingF: folder not found; this MiddEval3 has trainingQ: pick it with resolution=Q" in proc.stderr


def test_info_on_a_run_folder_names_its_checkpoints(ckpt, tmp_path):
    import shutil

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(ckpt, run / "best.safetensors")
    shutil.copy(ckpt, run / "ckpt_step12.safetensors")
    shutil.copy(ckpt, run / "ckpt_step8.safetensors")
    proc = cli("info", run)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"madis-stereo info: error: {run} is a folder, not a checkpoint file; it holds "
                                   f"{run / 'best.safetensors'} (best validation), "
                                   f"{run / 'ckpt_step12.safetensors'} (the latest)")


def test_version(capsys):
    import madis_stereo
    from madis_stereo.app.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"madis-stereo {madis_stereo.__version__} (Python ")


# --- tile blending without seams ----------------------------------------------------------------------------


class _TileConstant(torch.nn.Module):
    """Each window predicts one constant: its left crop's mean (windows disagree, as real ones do a little)."""

    def forward(self, left, right):
        from madis_stereo.model.network import StereoOutput

        b, _, h, w = left.shape
        value = left.mean(dim=(1, 2, 3)).view(b, 1, 1, 1)
        return StereoOutput(value.expand(b, 1, h, w).clone(), torch.zeros(b, 1, h, w))


def test_taper_blend_leaves_no_seam_where_windows_end():
    from madis_stereo.inference.tiling import tiled_predict

    left = torch.linspace(0, 40, 256).view(1, 1, 1, 256).expand(1, 3, 64, 256).contiguous()
    croco, _ = tiled_predict(_TileConstant(), left, left, crop=(64, 128), overlap=0.5, blend="croco")
    taper, _ = tiled_predict(_TileConstant(), left, left, crop=(64, 128), overlap=0.5)
    jumps = {name: (d[0, 0, 0, 1:] - d[0, 0, 0, :-1]).abs() for name, d in (("croco", croco), ("taper", taper))}
    step = 40 * 64 / 255  # neighbouring windows' means differ by this; CroCo's blend jumps by up to all of it
    assert jumps["croco"].max() == pytest.approx(step, rel=1e-4)
    assert set(torch.nonzero(jumps["croco"] > 1).flatten().tolist()) == {63, 127, 191}  # the window edges
    assert jumps["taper"].max() < step / 8  # continuous: the largest step is the raised cosine's slope
    assert taper[0, 0, 0, 0] == croco[0, 0, 0, 0] and taper[0, 0, 0, -1] == croco[0, 0, 0, -1]  # image borders
    with pytest.raises(InputError, match="blend .--blend. must be one of taper, croco"):
        tiled_predict(_TileConstant(), left, left, crop=(64, 128), blend="linear")


def test_color_png_states_its_range_and_draws_a_legend(ckpt, tmp_path):
    from PIL import Image

    left, right = write_pair(tmp_path, "scene", height=40, width=70)
    proc = cli("predict", left, right, "-o", tmp_path / "a", "--checkpoint", ckpt, "--device", "cpu",
               "--format", "color,npy")
    assert proc.returncode == 0, proc.stderr
    assert "color PNGs: disparity 0 px (dark blue) to the first pair's 99th percentile (dark red)" in proc.stderr
    disparity = np.load(tmp_path / "a" / "scene_left.npy")
    with Image.open(tmp_path / "a" / "scene_left_color.png") as png:
        assert png.size == (70, 40)
        vmin, vmax = map(float, png.text["disparity_range"].split())
        assert "dark blue" in png.text["Comment"]
    assert vmin == 0 and vmax == pytest.approx(np.percentile(disparity, 99), rel=1e-5)
    proc = cli("predict", left, right, "-o", tmp_path / "b", "--checkpoint", ckpt, "--device", "cpu",
               "--vmax", "20", "--legend")
    assert proc.returncode == 0, proc.stderr
    with Image.open(tmp_path / "b" / "scene_left_color.png") as png:
        assert png.size == (70, 40 + 28) and png.text["disparity_range"] == "0 20"
        bar = np.asarray(png.convert("RGB"))[40:54]
    assert (bar[:, 0] != bar[:, -1]).any() and (bar[:, :1] == bar[:1, :1]).all()  # a ramp along x


# --- fine-tuning the bundled model by name -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["bundled", "default"])
def test_model_init_names_the_bundled_model(name):
    import madis_stereo as ms
    from madis_stereo.errors import ConfigError
    from madis_stereo.training import load_train_config
    from madis_stereo.training.trainer import build_student

    cfg = load_train_config({"model": {"preset": "small", "crop": [64, 128], "init": name}})
    student = build_student(cfg)
    bundled = ms.load_default_model()
    assert student.config.crop == (64, 128)
    assert all(torch.equal(a, b) for a, b in zip(student.state_dict().values(), bundled.state_dict().values()))
    with pytest.raises(ConfigError, match="model.init=bundled: the model section differs from the bundled model"):
        build_student(load_train_config({"model": {"preset": "tiny", "init": name}}))
