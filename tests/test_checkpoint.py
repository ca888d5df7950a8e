"""Checkpoints: our safetensors round trip, CroCo import, and refusal of bad or unsafe files."""

from __future__ import annotations

import os
import pickle
import zipfile

import pytest
import torch

import madis_stereo as ms
from madis_stereo.model.checkpoint import read_metadata, to_croco_state_dict


def tiny_model(**changes):
    torch.manual_seed(0)
    return ms.StereoModel(ms.ModelConfig.preset("tiny", **changes)).eval()


def pair(h=64, w=128):
    g = torch.Generator().manual_seed(2)
    return torch.randn(1, 3, h, w, generator=g), torch.randn(1, 3, h, w, generator=g)


def test_save_load_round_trip_identical_outputs(tmp_path):
    model = tiny_model(dpt_hooks=(2, 4, 5, 7), crop=(64, 128))
    path = ms.save_model(model, tmp_path / "m.safetensors", dataset="synthetic", steps=12, metrics={"epe": 1.5})
    loaded, meta = ms.load_model(path, return_metadata=True)
    assert loaded.config == model.config
    assert meta == {"dataset": "synthetic", "steps": 12, "metrics": {"epe": 1.5}}
    left, right = pair()
    with torch.no_grad():
        a, b = model(left, right), loaded(left, right)
    assert torch.equal(a.disparity, b.disparity) and torch.equal(a.confidence, b.confidence)
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary file left


def test_our_file_needs_no_pickle(tmp_path, monkeypatch):
    path = ms.save_model(tiny_model(), tmp_path / "m.safetensors")
    raw = path.read_bytes()
    assert raw[8:9] == b"{" and b"madis_stereo" in raw[:20000]  # safetensors JSON header

    def no_pickle(*args, **kwargs):
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    monkeypatch.setattr(torch, "load", no_pickle)
    ms.load_model(path)
    assert read_metadata(path)["config"]["enc_embed_dim"] == 96


def test_half_precision_storage_loads_as_float32(tmp_path):
    model = tiny_model()
    small = ms.save_model(model, tmp_path / "h.safetensors", dtype=torch.float16)
    full = ms.save_model(model, tmp_path / "f.safetensors")
    assert small.stat().st_size < 0.6 * full.stat().st_size
    loaded = ms.load_model(small)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    left, right = pair()
    with torch.no_grad():
        diff = (loaded(left, right).disparity - model(left, right).disparity).abs().max()
    assert diff < 1e-2


def test_croco_stereo_export_reimports(tmp_path):
    """Our weights saved under CroCo-Stereo's names and format load back identically."""
    import argparse

    model = tiny_model()
    args = argparse.Namespace(task="stereo", crop=[128, 256], tile_conf_mode="conf_expsigmoid_15_3",
                              croco_args={"enc_embed_dim": 96, "enc_depth": 4, "enc_num_heads": 4,
                                          "dec_embed_dim": 96, "dec_depth": 4, "dec_num_heads": 4,
                                          "pos_embed": "RoPE100"})
    torch.save({"model": to_croco_state_dict(model), "args": args, "epoch": 3}, tmp_path / "c.pth")
    loaded = ms.load_model(tmp_path / "c.pth")
    left, right = pair()
    with torch.no_grad():
        assert torch.equal(model(left, right).disparity, loaded(left, right).disparity)


def test_pretrain_checkpoint_initialises_all_but_the_head(croco_dir, caplog):
    caplog.set_level("INFO")
    model = ms.load_model(croco_dir / "croco_pretrain_tiny.pth")
    raw = torch.load(croco_dir / "croco_pretrain_tiny.pth", weights_only=True)["model"]
    assert torch.equal(model.mask_token, raw["mask_token"])
    assert torch.equal(model.recon_head.weight, raw["prediction_head.weight"])
    assert torch.equal(model.dec_blocks[3].cross_attn.projk.weight, raw["dec_blocks.3.cross_attn.projk.weight"])
    assert "DPT stereo head is freshly initialised" in caplog.text


def test_not_a_checkpoint(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("hello, I am not a checkpoint")
    with pytest.raises(ms.CheckpointError, match="notes.pth is not a checkpoint"):
        ms.load_model(text)
    with pytest.raises(ms.CheckpointError, match="not found"):
        ms.load_model(tmp_path / "missing.safetensors")
    with pytest.raises(ms.CheckpointError, match="folder"):
        ms.load_model(tmp_path)
    zipped = tmp_path / "other.pth"
    torch.save({"weights": [1, 2, 3]}, zipped)
    with pytest.raises(ms.CheckpointError, match="not a CroCo checkpoint"):
        ms.load_model(zipped)


@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_truncated_checkpoint(tmp_path, croco_dir, fmt):
    if fmt == "safetensors":
        src = ms.save_model(tiny_model(), tmp_path / "full.safetensors")
    else:
        src = croco_dir / "croco_stereo_tiny.pth"
    raw = src.read_bytes()
    cut = tmp_path / f"cut.{fmt}"
    cut.write_bytes(raw[: len(raw) * 2 // 3])
    with pytest.raises(ms.CheckpointError, match="cut"):
        ms.load_model(cut)


def test_wrong_architecture(tmp_path):
    from safetensors.torch import load_file, save_file

    path = ms.save_model(tiny_model(), tmp_path / "m.safetensors")
    state = load_file(str(path))
    meta = {"madis_stereo": __import__("json").dumps(read_metadata(path))}
    state["enc_blocks.0.attn.qkv.weight"] = torch.zeros(3, 3)
    save_file(state, str(tmp_path / "bad.safetensors"), metadata=meta)
    with pytest.raises(ms.CheckpointError, match="enc_blocks.0.attn.qkv.weight"):
        ms.load_model(tmp_path / "bad.safetensors")


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['EVIL_MARKER']}",))


def test_malicious_pickle_is_refused_without_running(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("EVIL_MARKER", str(marker))
    path = tmp_path / "evil.pth"
    torch.save({"model": {}, "args": _Evil()}, path)
    assert zipfile.is_zipfile(path)
    with pytest.raises(ms.CheckpointError, match="refusing to load"):
        ms.load_model(path)
    assert not marker.exists()


def test_written_files_get_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = ms.save_model(tiny_model(), tmp_path / "m.safetensors")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_metadata_that_is_not_json_gets_a_checkpoint_error(tmp_path):
    model = tiny_model()
    loaded, meta = ms.load_model(ms.save_model(model, tmp_path / "ok.safetensors", loss=torch.tensor(0.5)),
                                 return_metadata=True)
    assert meta["loss"] == 0.5  # a one-element tensor is stored as its number
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    for bad in (torch.zeros(3), object()):
        with pytest.raises(ms.CheckpointError, match="not JSON-serialisable"):
            ms.save_model(tiny_model(), tmp_path / "bad.safetensors", extra=bad)
    assert not (tmp_path / "bad.safetensors").exists()
