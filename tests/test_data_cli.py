"""``madis-stereo data check`` on every generated layout, in-process and as a real subprocess."""

from __future__ import annotations

import numpy as np
import pytest
from data_layouts import LAYOUTS, make_kitti2015, make_middlebury
from PIL import Image
from tools_helpers import run_cli

from madis_stereo.app.cli import main


def _cli_args(layout, split="train") -> list[str]:
    args = ["data", "check", "--dataset", layout.name, "--root", str(layout.root)]
    if layout.has_split:
        args += ["--split", split]
    for key, value in layout.keys.items():
        args += ["--set", f"{key}={value}"]
    return args


@pytest.mark.parametrize("layout_name", sorted(LAYOUTS))
def test_check_each_layout(tmp_path, capsys, layout_name):
    layout = LAYOUTS[layout_name](tmp_path / layout_name)
    sheet = tmp_path / "sheet.png"
    assert main(_cli_args(layout) + ["--samples", "2", "--out", str(sheet), "--verify"]) == 0
    out = capsys.readouterr().out
    assert f"{len(layout.frames['train'])} frames" in out and "verified: all" in out
    image = np.asarray(Image.open(sheet))
    assert image.ndim == 3 and image.shape[1] == 3 * 320 and image.shape[0] > 20


def test_check_test_split_and_overrides(tmp_path, capsys):
    layout = make_middlebury(tmp_path / "mid")
    assert main(_cli_args(layout, "test") + ["--set", "resolution=H", "--out", str(tmp_path / "s.png")]) == 0
    out = capsys.readouterr().out
    assert "Middlebury MiddEval3 (testH)" in out and "without ground truth" in out


def test_check_synthetic_without_root(tmp_path, capsys):
    args = ["data", "check", "--dataset", "synthetic", "--set", "size=[32,64]", "--set", "max_disparity=16",
            "--samples", "2", "--out", str(tmp_path / "synthetic.png")]
    assert main(args) == 0
    assert "synthetic stereo" in capsys.readouterr().out and (tmp_path / "synthetic.png").is_file()


def test_check_fails_with_a_one_line_error(tmp_path, capsys):
    assert main(["data", "check", "--dataset", "kitti2015", "--root", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(tmp_path / "missing") in err and "folder not found" in err
    layout = make_kitti2015(tmp_path / "kitti")
    assert main(_cli_args(layout) + ["--set", "colour=1"]) == 2
    assert "unknown config key(s) 'colour'" in capsys.readouterr().err
    assert main(["data", "check", "--dataset", "nope", "--root", str(tmp_path)]) == 2
    assert "unknown dataset 'nope'" in capsys.readouterr().err
    broken = layout.root / "training" / "image_3" / "000001_10.png"
    broken.write_bytes(broken.read_bytes()[:40])
    assert main(_cli_args(layout) + ["--verify", "--samples", "0"]) == 2
    captured = capsys.readouterr()
    assert "unreadable" in captured.out and str(broken) in captured.err


def test_check_as_a_real_process(tmp_path):
    layout = make_kitti2015(tmp_path / "kitti")
    sheet = tmp_path / "sheet.png"
    done = run_cli(*_cli_args(layout), "--samples", "3", "--out", sheet)
    assert done.returncode == 0, done.stderr
    assert "KITTI 2015 (train)" in done.stdout and "3 frames" in done.stdout and sheet.is_file()
    done = run_cli("data", "check", "--dataset", "eth3d", "--root", tmp_path / "none")
    assert done.returncode == 2 and "folder not found" in done.stderr and "Traceback" not in done.stderr
