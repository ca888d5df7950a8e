"""The demo code path on a downscaled real pair (Middlebury Motorcycle from scikit-image)."""

from __future__ import annotations

import json

import numpy as np
import torch

import madis_stereo as ms
from madis_stereo.app.cli import main
from madis_stereo.app.demo import motorcycle, run_demo
from madis_stereo.evaluation.baselines import fill_holes_rowwise, sgbm_disparity
from madis_stereo.model.checkpoint import default_model_path


def test_motorcycle_downscaled_keeps_invalid_gt_and_scales_disparity():
    left, right, gt = motorcycle(0.5)
    full = motorcycle()[2]
    assert left.shape == right.shape == (250, 370, 3) and gt.shape == (250, 370)
    assert np.isinf(gt).any() and np.isfinite(gt).mean() > 0.8
    assert abs(np.nanmax(gt[np.isfinite(gt)]) - 0.5 * full[np.isfinite(full)].max()) < 1.0


def test_run_demo_writes_images_and_scores_every_method(tmp_path):
    left, right, gt = motorcycle(0.25)
    torch.manual_seed(0)
    model = ms.StereoModel(ms.ModelConfig.preset("tiny", crop=(64, 128))).eval()
    result = run_demo(model, left, right, gt, tmp_path, max_disparity=17)
    assert [r["method"] for r in result.rows] == ["ours", "SGBM", "SGBM filled"]
    sgbm = sgbm_disparity(left, right, max_disparity=17)
    assert result.rows[1]["bad_2"] == ms.stereo_metrics(sgbm, gt)["bad_2"]
    assert result.rows[2]["bad_2"] == ms.stereo_metrics(fill_holes_rowwise(sgbm), gt)["bad_2"]
    for name in ("disparity", "confidence", "error", "error_sgbm", "sgbm", "sgbm_filled", "sheet"):
        assert (tmp_path / f"{name}.png").stat().st_size > 100
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["rows"][0]["epe"] == result.rows[0]["epe"]


def test_demo_command_prints_the_table(tmp_path, capsys):
    ckpt = ms.save_model(ms.StereoModel(ms.ModelConfig.preset("tiny", crop=(64, 128))), tmp_path / "t.safetensors")
    code = main(["demo", "--checkpoint", str(ckpt), "--compare", "bundled", "--scale", "0.25",
                 "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert code == 0
    assert "SGBM filled" in out and "bad_2" in out and "Motorcycle" in out
    methods = [line.split("  ")[0].strip() for line in out.splitlines()[3:7]]
    assert methods == ["t", "bundled model", "SGBM", "SGBM filled"], out
    for name in ("sheet", "disparity", "disparity_bundled_model", "error_bundled_model"):
        assert (tmp_path / "out" / f"{name}.png").exists()


def test_default_model_loads_offline(monkeypatch):
    """No network access; how long it takes is measured by benchmarks/load_time.py (not asserted here)."""
    import socket

    def no_network(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    model, meta = ms.load_default_model(return_metadata=True)
    assert model.config == ms.ModelConfig.preset("small")
    assert meta["steps"] > 0 and "motorcycle" in meta
    assert default_model_path().stat().st_size <= 25 * 10**6
