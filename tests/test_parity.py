"""Numerical parity with the public CroCo code (fixtures in tests/fixtures/croco, max abs diff <= 1e-4)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import madis_stereo as ms

TOL = 1e-4


@pytest.fixture(scope="module")
def stereo(croco_dir):
    meta = json.loads((croco_dir / "croco_stereo_tiny.json").read_text())
    io = np.load(croco_dir / "croco_stereo_tiny_io.npz")
    return ms.load_model(croco_dir / "croco_stereo_tiny.pth"), meta, io


def test_stereo_config_read_from_checkpoint(stereo):
    model, meta, _ = stereo
    cfg = model.config
    args = meta["croco_args"]
    assert (cfg.enc_embed_dim, cfg.enc_depth, cfg.enc_num_heads) == (
        args["enc_embed_dim"], args["enc_depth"], args["enc_num_heads"])
    assert (cfg.dec_embed_dim, cfg.dec_depth, cfg.dec_num_heads) == (
        args["dec_embed_dim"], args["dec_depth"], args["dec_num_heads"])
    assert list(cfg.hooks) == meta["dpt"]["hooks"]
    assert list(cfg.dpt_layer_dims) == meta["dpt"]["layer_dims"]
    assert cfg.dpt_feature_dim == meta["dpt"]["feature_dim"]
    assert list(cfg.crop) == meta["crop"]


def test_stereo_forward_matches_croco(stereo):
    model, _, io = stereo
    with torch.no_grad():
        out = model(torch.from_numpy(io["forward_left"]), torch.from_numpy(io["forward_right"]))
    got = torch.cat((out.disparity, out.confidence), dim=1).numpy()
    assert got.shape == io["forward_out"].shape
    assert np.abs(got - io["forward_out"]).max() <= TOL


@pytest.mark.parametrize("case", [0, 1])
@pytest.mark.parametrize("tile_batch", [1, 4])
def test_tiled_prediction_matches_croco(stereo, case, tile_batch):
    model, meta, io = stereo
    spec = meta["tiled"][case]
    left = torch.from_numpy(io[f"tiled{case}_left"])
    assert tuple(left.shape[-2:]) == (spec["height"], spec["width"])
    disp, conf = ms.tiled_predict(model, left, torch.from_numpy(io[f"tiled{case}_right"]), crop=meta["crop"],
                                  overlap=spec["overlap"], conf_mode=spec["conf_mode"], tile_batch=tile_batch,
                                  blend="croco")  # CroCo's blend, kept as a named mode for this parity
    assert disp.shape == io[f"tiled{case}_disparity"].shape
    assert conf.shape == io[f"tiled{case}_confidence"].shape
    assert np.abs(disp.numpy() - io[f"tiled{case}_disparity"]).max() <= TOL
    assert np.abs(conf.numpy() - io[f"tiled{case}_confidence"]).max() <= TOL


def test_pretrain_reconstruction_matches_croco(croco_dir):
    io = np.load(croco_dir / "croco_pretrain_tiny_io.npz")
    model = ms.load_model(croco_dir / "croco_pretrain_tiny.pth")
    left, right, mask = (torch.from_numpy(io[k]) for k in ("left", "right", "mask"))
    with torch.no_grad():
        out = model.forward_masked(left, right, mask)
    assert out.recon_right is None
    assert out.recon_left.shape == io["recon"].shape
    assert np.abs(out.recon_left.numpy() - io["recon"]).max() <= TOL
    # our patchify uses the same (py, px, rgb) layout as CroCo's target
    from madis_stereo.model.network import patchify

    assert np.abs(patchify(left).numpy() - io["target"]).max() == 0.0


def test_pretrain_reconstruction_at_80x80_matches_croco(croco_dir):
    """CroCo's pretraining network takes any multiple of the patch size (80 = 5 patches); so does ours: the
    DPT head (multiples of 32) is skipped, and the reconstruction matches CroCo's on a batch of 2 with
    different masks per image."""
    io = np.load(croco_dir / "croco_pretrain_tiny_80_io.npz")
    model = ms.load_model(croco_dir / "croco_pretrain_tiny.pth")
    left, right, mask = (torch.from_numpy(io[k]) for k in ("left", "right", "mask"))
    assert left.shape[-2:] == (80, 80) and mask.shape == (2, 25)
    with torch.no_grad():
        out = model.forward_masked(left, right, mask)
    assert out.disparity is None and out.confidence is None  # 80 is not a multiple of 32
    assert out.recon_left.shape == io["recon"].shape
    assert np.abs(out.recon_left.numpy() - io["recon"]).max() <= TOL
    from madis_stereo.model.network import patchify

    assert np.abs(patchify(left).numpy() - io["target"]).max() == 0.0
    with pytest.raises(ms.InputError, match="80x80 is not a multiple of 32"):
        model.forward_masked(left, right, mask, disparity=True)
    with pytest.raises(ms.InputError, match="80x72 is not a multiple of 16"):
        model.forward_masked(left[..., :72], right[..., :72], mask)
