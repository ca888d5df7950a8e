"""ONNX export: onnxruntime matches PyTorch, the adapter runs tiled inference, the command reports the check."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tools_helpers import cli, make_tiny_checkpoint, run_cli, stereo_images

import madis_stereo as ms
from madis_stereo.inference.export import OnnxStereoModel, export_onnx, onnx_forward_seconds, onnx_session

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    torch.manual_seed(0)
    model = ms.StereoModel(ms.ModelConfig.preset("tiny", crop=(64, 128))).eval()
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    report = export_onnx(model, path, (64, 128))
    return model, path, report


def test_tiny_export_matches_pytorch(tiny_onnx):
    model, path, report = tiny_onnx
    assert report.exporter == "torchscript" and report.crop == (64, 128) and report.opset == 17
    assert report.max_abs_diff_disparity < 1e-3 and report.max_abs_diff_confidence < 1e-3
    session = onnx_session(path, threads=1)
    assert [i.name for i in session.get_inputs()] == ["left", "right"]
    assert [o.name for o in session.get_outputs()] == ["disparity", "confidence"]
    assert session.get_inputs()[0].shape == [1, 3, 64, 128]
    left, right = torch.randn(2, 1, 3, 64, 128, generator=torch.Generator().manual_seed(5))
    disp, conf = session.run(None, {"left": left.numpy(), "right": right.numpy()})
    assert disp.shape == conf.shape == (1, 1, 64, 128)
    with torch.inference_mode():
        ref = model(left, right)
    np.testing.assert_allclose(disp, ref.disparity.numpy(), atol=1e-3)
    np.testing.assert_allclose(conf, ref.confidence.numpy(), atol=1e-3)
    assert onnx_forward_seconds(session, warmup=0, repeats=1) > 0


def test_onnx_adapter_runs_tiled_inference(tiny_onnx):
    model, path, _ = tiny_onnx
    adapter = OnnxStereoModel(path)
    assert adapter.config.crop == (64, 128) and adapter.config.enc_embed_dim == 96  # config from the metadata
    left, right = stereo_images(70, 150)
    ref = ms.predict(model, left, right)
    got = ms.Predictor(adapter, tile_batch=3)(left, right)
    np.testing.assert_allclose(got.disparity, ref.disparity, atol=1e-3)
    np.testing.assert_allclose(got.confidence, ref.confidence, atol=1e-3)
    with pytest.raises(ms.InputError, match="ONNX model takes"):
        adapter(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 32))


def test_export_rejects_bad_crops_and_files(tmp_path):
    model = ms.StereoModel(ms.ModelConfig.preset("tiny", crop=(64, 128)))
    with pytest.raises(ms.InputError, match="multiples of 32"):
        export_onnx(model, tmp_path / "x.onnx", (60, 128))
    with pytest.raises(ms.InputError, match="opset 18 or later"):
        export_onnx(model, tmp_path / "x.onnx", (64, 128), exporter="dynamo", opset=17)
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(ms.CheckpointError, match="not a usable ONNX model"):
        onnx_session(tmp_path / "bad.onnx")
    with pytest.raises(ms.CheckpointError, match="not found"):
        onnx_session(tmp_path / "missing.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_export_command(tmp_path):
    ckpt = make_tiny_checkpoint(tmp_path / "tiny.safetensors")
    out = tmp_path / "model.onnx"
    proc = run_cli("export", "onnx", "--checkpoint", ckpt, "--crop", "64", "128", "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert "onnxruntime vs PyTorch max abs diff: disparity" in proc.stdout
    assert out.is_file() and onnx_session(out).get_inputs()[0].shape == [1, 3, 64, 128]
    proc = cli("export", "onnx", "--checkpoint", tmp_path / "missing.safetensors", "-o", out)
    assert proc.returncode == 2 and "madis-stereo export: error: checkpoint not found" in proc.stderr


@pytest.mark.slow
def test_vitb_basedec_export_matches_pytorch(tmp_path):
    torch.manual_seed(0)
    model = ms.StereoModel(ms.ModelConfig.preset("vitb_basedec")).eval()
    report = export_onnx(model, tmp_path / "vitb.onnx", (192, 384))
    assert report.max_abs_diff_disparity < 1e-3 and report.max_abs_diff_confidence < 1e-3


def test_onnx_without_our_metadata_warns_and_names_what_it_assumes(tiny_onnx, tmp_path):
    import onnx

    _, path, _ = tiny_onnx
    proto = onnx.load(str(path))
    stored = {p.key: p.value for p in proto.metadata_props}["madis_stereo_config"]
    assert '"laplace_b"' in stored  # the certainty scale travels with the export
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    with pytest.warns(UserWarning, match=r"no madis-stereo metadata.*conf_mode=conf_expsigmoid_15_3.*laplace_b=3"):
        model = OnnxStereoModel(bare)
    assert model.config.crop == (64, 128)
    entry = proto.metadata_props.add()
    entry.key, entry.value = "madis_stereo_config", '{"enc_depth": "not a number"'
    broken = tmp_path / "broken.onnx"
    onnx.save(proto, str(broken))
    with pytest.raises(ms.CheckpointError, match="unreadable model config in the ONNX metadata"):
        OnnxStereoModel(broken)
