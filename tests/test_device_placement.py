"""Every tensor of the CUDA training path is created on the device of its inputs, checked on the CPU.

Inside ``with torch.device("meta")`` a factory call without ``device=`` (``torch.arange(n)``,
``torch.zeros(...)``, ``torch.tensor(...)``, ...) makes a meta tensor, and any op that mixes it with the real
(CPU) tensors of the renderer or the model raises, as a CPU tensor mixed with CUDA tensors would on the GPU.
So each part of a GPU session's hot path runs here with "cpu" as its device and meta as the default: the
device renderer (with the occlusion test and photometry on), the on-device augmentation, the baseline and
MaDis training steps under bf16 autocast (with missing GT, so the EMA teacher runs too) and the tiled
predictor that scores the session.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

import madis_stereo as ms
from madis_stereo.data import AugmentConfig, SyntheticConfig
from madis_stereo.inference.predictor import Predictor
from madis_stereo.training import Engine, load_train_config
from madis_stereo.training.data import build_device_batches
from madis_stereo.training.distributed import DistEnv
from madis_stereo.training.rendering import DeviceBatches, DeviceRenderer

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
CPU = DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
WORLD = SyntheticConfig(size=(32, 64), max_disparity=16.0, atlas_tiles=4, atlas_tile_size=64, seed=3,
                        lighting=1.0, noise_std=0.02, blur_prob=1.0)


def test_a_stray_factory_call_is_caught():
    real = torch.ones(3)
    with torch.device("meta"), pytest.raises(RuntimeError, match="meta"):
        real + torch.arange(3)


def test_renderer_and_device_augmentation_create_every_tensor_on_their_device():
    augment = AugmentConfig(crop=(32, 64), scale_prob=0, jitter_prob=1, right_perturb_prob=1, vflip_prob=0.5)
    batches = DeviceBatches(WORLD, 2, ahead=2, atlas_refresh=4, augment=augment)  # a new atlas on the way
    occluding = DeviceRenderer(dataclasses.replace(WORLD, occlusion_mask=True), 2)
    scene, noise_seed = occluding.sample(0)
    with torch.device("meta"):
        out = [batches.batch(i) for i in range(3)]
        rendered = occluding.render(scene, noise_seed)
    assert all(t.device.type == "cpu" for b in out for t in b.values())
    assert rendered.nonocc.device.type == "cpu" and rendered.left.dtype == torch.uint8


@pytest.mark.parametrize("madis", [False, True])
def test_training_steps_under_autocast_create_every_tensor_on_the_device(madis):
    cfg = load_train_config(ROOT / "configs" / "tiny_synthetic.yaml", [
        "data.render_on_device=true", "data.val=null", "optim.batch_size=2", "data.train.0.atlas_tiles=4",
        "data.train.0.atlas_tile_size=32", "run.device=cpu", "optim.amp=bf16", f"madis.enabled={madis}",
        "data.augment={scale_prob: 0}"])
    torch.manual_seed(0)
    engine = Engine(ms.StereoModel(cfg.model.arch), cfg, CPU)
    batches = build_device_batches(cfg.data, cfg.model.arch.crop, 2, CPU.device)
    with torch.device("meta"):
        batch = batches.batch(0)
        batch["disparity"][0, 0, :4, :4] = float("inf")  # missing GT: the teacher labels it
        result = engine.step([batch], 0, 1e-4)
    assert not result.skipped and np.isfinite(result.losses["loss"])


def test_tiled_scoring_creates_every_tensor_on_the_device():
    torch.manual_seed(0)
    model = ms.StereoModel(ms.ModelConfig.preset("tiny", crop=(32, 64), dpt_hooks=(4, 5, 6, 7)))
    predictor = Predictor(model, device=torch.device("cpu"), precision="bf16")
    rng = np.random.default_rng(0)
    left, right = (rng.integers(0, 256, (50, 90, 3), dtype=np.uint8) for _ in range(2))
    with torch.device("meta"):
        disparity = predictor(left, right).disparity
    assert disparity.shape == (50, 90) and np.isfinite(disparity).all()
