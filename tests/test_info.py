"""``madis-stereo info`` and the library function behind it."""

from __future__ import annotations

import json

import pytest
from tools_helpers import cli, make_tiny_checkpoint, run_cli

import madis_stereo as ms
from madis_stereo.app.info import checkpoint_info, format_checkpoint_info

pytestmark = pytest.mark.usefixtures("one_thread")


def test_info_of_our_checkpoint(tmp_path):
    ckpt = make_tiny_checkpoint(tmp_path / "tiny.safetensors", dataset="synthetic", steps=120,
                                metrics={"val/epe": 1.25, "val/d1": 7.5})
    info = checkpoint_info(ckpt)
    model = ms.StereoModel(ms.ModelConfig.preset("tiny", crop=(64, 128)))
    assert info["format"] == "madis-stereo safetensors"
    assert info["parameters"] == sum(p.numel() for p in model.state_dict().values())
    assert info["metadata"] == {"dataset": "synthetic", "steps": 120, "metrics": {"val/epe": 1.25, "val/d1": 7.5}}
    assert info["config"]["crop"] == [64, 128] and info["architecture"]["crop"] == [64, 128]
    text = format_checkpoint_info(info)
    assert "metrics.val/epe" in text and "1.25" in text and "96 dim / 4 blocks / 4 heads" in text


def test_info_command_text_and_json(tmp_path, croco_dir):
    proc = run_cli("info", croco_dir / "croco_stereo_tiny.pth", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["format"] == "CroCo-Stereo .pth"
    assert info["config"]["enc_embed_dim"] == 64 and info["config"]["dec_depth"] == 8
    assert info["architecture"]["dpt_hooks"] == [2, 5, 8, 11] and info["metadata"]["task"] == "stereo"
    proc = cli("info", croco_dir / "croco_pretrain_tiny.pth")
    assert proc.returncode == 0, proc.stderr
    assert "CroCo v2 pretraining .pth" in proc.stdout
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 64)
    proc = cli("info", bad)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"madis-stereo info: error: {bad} is not a checkpoint (neither safetensors nor a " \
                                  "PyTorch .pth file)"


def test_info_missing_file(tmp_path):
    with pytest.raises(ms.CheckpointError, match="not found"):
        checkpoint_info(tmp_path / "none.safetensors")


def test_bundled_is_a_checkpoint_name_everywhere(tmp_path, monkeypatch):
    from madis_stereo.model import checkpoint
    from madis_stereo.model.registry import resolve_checkpoint

    bundled = checkpoint.default_model_path()
    assert resolve_checkpoint("bundled") == bundled and resolve_checkpoint("default") == bundled
    proc = run_cli("info", "--json")  # no CKPT: the bundled model
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["path"] == str(bundled) and info["format"] == "madis-stereo safetensors"
    model = ms.load_model("bundled")
    reference = ms.load_default_model()
    assert all(a.equal(b) for a, b in zip(model.state_dict().values(), reference.state_dict().values(), strict=True))
    from madis_stereo.app import web  # the app's checkpoint box: empty or either name is the bundled model

    for name in ("", " default "):
        app_model = web._model(name)
        assert all(a.equal(b) for a, b in zip(app_model.state_dict().values(), reference.state_dict().values(),
                                              strict=True))
    monkeypatch.chdir(tmp_path)  # a file of that name in the working folder wins over the name
    (tmp_path / "default").write_bytes(b"\x00" * 64)
    assert resolve_checkpoint("default") == tmp_path.joinpath("default").relative_to(tmp_path)
    monkeypatch.setattr(checkpoint, "default_model_path", lambda: tmp_path / "missing.safetensors")
    with pytest.raises(ms.CheckpointError, match="no bundled model in this installation"):
        resolve_checkpoint("bundled")
