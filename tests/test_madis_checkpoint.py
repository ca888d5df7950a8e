"""Official MaDis-Stereo checkpoints: their .pth layout loads with MaDis' DPT hooks and the student's weights.

The layout (from the public MaDis code): ``model`` = the CroCo-Stereo keys plus ``mask_token`` and
``prediction_head.*``; ``encoder`` = the EMA teacher (a CroCo pretraining-style state dict); ``optimizer``;
``scaler``; ``epoch``; ``args``, an argparse.Namespace whose ``croco_args`` carry ``img_size`` and
``mask_ratio``. MaDis' head always taps layers [13, 16, 19, 23].
"""

from __future__ import annotations

import argparse
import copy
import json

import pytest
import torch

import madis_stereo as ms
from madis_stereo.model.checkpoint import MADIS_HOOKS, croco_checkpoint_config, croco_names, to_croco_state_dict

pytestmark = pytest.mark.usefixtures("one_thread")

# vitb_basedec's depths (12 + 12 blocks, so hooks 13..23 exist) at tiny widths, to stay fast.
DEEP_TINY = dict(enc_embed_dim=32, enc_depth=12, enc_num_heads=2, dec_embed_dim=32, dec_depth=12, dec_num_heads=2,
                 dpt_layer_dims=(8, 16, 32, 64), dpt_feature_dim=16, dpt_last_dim=8, crop=(64, 128))


def croco_args(config: ms.ModelConfig) -> dict:
    return {"enc_embed_dim": config.enc_embed_dim, "enc_depth": config.enc_depth,
            "enc_num_heads": config.enc_num_heads, "dec_embed_dim": config.dec_embed_dim,
            "dec_depth": config.dec_depth, "dec_num_heads": config.dec_num_heads, "pos_embed": "RoPE100"}


def training_args(config: ms.ModelConfig, madis: bool) -> argparse.Namespace:
    extra = {"img_size": tuple(config.crop), "mask_ratio": 0.4} if madis else {}
    return argparse.Namespace(task="stereo", crop=list(config.crop), criterion="LaplacianLossBounded2()",
                              tile_conf_mode=config.conf_mode, lr=3e-5, epochs=32, croco_args={**croco_args(config),
                                                                                             **extra})


def madis_file(model: ms.StereoModel, path):
    """``model`` saved the way MaDis' trainer saves it (teacher, optimizer and scaler included)."""
    state = to_croco_state_dict(model, "stereo")
    for key in ("mask_token", "recon_head.weight", "recon_head.bias"):
        state[croco_names(key)[0]] = model.state_dict()[key]
    teacher = {k: v.clone() + 0.01 for k, v in to_croco_state_dict(model, "pretrain").items()}
    shadow = copy.deepcopy(model)  # a real AdamW state after one step, without changing ``model``
    optimizer = torch.optim.AdamW(shadow.parameters(), lr=3e-5, betas=(0.9, 0.95))
    sum(p.sum() for p in shadow.parameters()).backward()
    optimizer.step()
    torch.save({"model": state, "encoder": teacher, "optimizer": optimizer.state_dict(),
                "scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
                           "_growth_tracker": 0},
                "epoch": 31, "best_so_far": 0.42, "args": training_args(model.config, madis=True)}, path)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A deep tiny model trained with MaDis' hooks, its MaDis .pth, and a pair to run it on."""
    folder = tmp_path_factory.mktemp("madis")
    torch.manual_seed(0)
    model = ms.StereoModel(ms.ModelConfig.preset("tiny", dpt_hooks=MADIS_HOOKS, **DEEP_TINY)).eval()
    path = madis_file(model, folder / "madis_kitti.pth")
    g = torch.Generator().manual_seed(3)
    pair = torch.randn(1, 3, 64, 128, generator=g), torch.randn(1, 3, 64, 128, generator=g)
    with torch.no_grad():
        out = model(*pair).disparity
    return model, path, pair, out


def test_madis_file_loads_with_madis_hooks_and_the_students_weights(trained, caplog):
    model, path, pair, out = trained
    caplog.set_level("INFO")
    loaded, meta = ms.load_model(path, return_metadata=True)
    assert loaded.config.hooks == (13, 16, 19, 23) == tuple(model.config.hooks)
    assert meta["source"] == "madis_stereo" and meta["epoch"] == 31 and meta["mask_ratio"] == 0.4
    assert torch.equal(loaded.mask_token, model.mask_token)
    assert torch.equal(loaded.recon_head.weight, model.recon_head.weight)
    with torch.no_grad():
        assert torch.equal(loaded(*pair).disparity, out)
    assert "EMA teacher is not used" in caplog.text


def test_same_weights_in_the_croco_stereo_layout_give_the_same_output(trained, tmp_path):
    model, _, pair, out = trained
    croco = tmp_path / "as_crocostereo.pth"
    torch.save({"model": to_croco_state_dict(model), "args": training_args(model.config, madis=False),
                "epoch": 31}, croco)
    with_hooks = ms.load_model(croco, config_overrides={"dpt_hooks": list(MADIS_HOOKS)})
    default = ms.load_model(croco)  # a CroCo-Stereo file: CroCo's default hooks
    assert default.config.hooks == (11, 15, 19, 23)
    with torch.no_grad():
        assert torch.equal(with_hooks(*pair).disparity, out)
        assert not torch.allclose(default(*pair).disparity, out)  # the hooks matter


def test_vitb_basedec_madis_key_set_gets_madis_hooks(croco_dir):
    """A ViT-B + Base decoder MaDis checkpoint (the official key set, as meta tensors) -> hooks [13, 16, 19, 23]."""
    manifest = json.loads((croco_dir / "croco_key_manifest.json").read_text())["vitb_basedec"]

    def meta(shapes: dict) -> dict:
        return {k: torch.empty(v, device="meta") for k, v in shapes.items()}

    pretrain = manifest["pretrain_state_dict"]
    student = meta({**manifest["stereo_state_dict"],
                    **{k: v for k, v in pretrain.items() if k.startswith(("mask_token", "prediction_head."))}})
    preset = ms.ModelConfig.preset("vitb_basedec")
    args = training_args(preset, madis=True)
    madis = {"model": student, "encoder": meta(pretrain), "epoch": 31, "args": args}
    config, kind, meta_info = croco_checkpoint_config(madis, "madis_eth3d.pth")
    assert kind == "stereo" and meta_info["source"] == "madis_stereo"
    assert config == ms.ModelConfig.preset("vitb_basedec", dpt_hooks=(13, 16, 19, 23))
    croco = {"model": meta(manifest["stereo_state_dict"]), "args": training_args(preset, madis=False)}
    config, _, meta_info = croco_checkpoint_config(croco, "crocostereo_subtrain_vitb_basedecoder.pth")
    assert config.hooks == (11, 15, 19, 23) and meta_info["source"] == "croco_stereo"
