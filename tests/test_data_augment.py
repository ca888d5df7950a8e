"""Augmentation keeps the geometry (x-scale, crop, flip), perturbs only the right view, jitters within bounds;
the training wrapper is seeded by (seed, epoch, index) and collates."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from data_layouts import make_eth3d

from madis_stereo.data import (
    AugmentConfig,
    Augmentor,
    ColorParams,
    SyntheticConfig,
    SyntheticStereo,
    apply_color,
    build_dataset,
    draw_color,
)
from madis_stereo.training.data import TrainingDataset, worker_init_fn

GEOMETRY_ONLY = dict(vflip_prob=0.0, right_perturb_prob=0.0, color_prob=0.0)


def _planar_pair(height=40, width=120, a=0.1, b=0.05, c=8.0):
    """A smooth texture on the plane d = a x + b y + c, rendered analytically in both views."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)

    def texture(x, y):
        return np.stack([127 + 100 * np.sin(x / 6 + p) * np.cos(y / 9 - p) for p in (0.0, 1.0, 2.0)], axis=-1)

    left = texture(xs, ys)
    right = texture((xs + b * ys + c) / (1 - a), ys)  # the left point seen at right pixel x_r
    disparity = (a * xs + b * ys + c).astype(np.float32)
    to_u8 = lambda img: np.clip(np.round(img), 0, 255).astype(np.uint8)  # noqa: E731
    return {"left": to_u8(left), "right": to_u8(right), "disparity": disparity, "nonocc": xs - disparity >= 0,
            "calib": None, "name": "plane"}


def _warp_error(sample, disparity=None) -> np.ndarray:
    disparity = sample["disparity"] if disparity is None else disparity
    height, width = disparity.shape
    map_x = (np.arange(width)[None, :] - disparity).astype(np.float32)
    map_y = np.repeat(np.arange(height, dtype=np.float32)[:, None], width, axis=1)
    warped = cv2.remap(sample["right"], map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    inside = (map_x >= 1) & (map_x <= width - 2)
    return np.abs(warped.astype(int) - sample["left"]).max(-1)[inside]


@pytest.mark.parametrize("scale", [0.8, 1.3])
def test_disparity_follows_the_x_scale(scale):
    sample = _planar_pair()
    cfg = AugmentConfig(crop=(32, 80), scale_x=(scale, scale), scale_prob=1.0, **GEOMETRY_ONLY)
    out = Augmentor(cfg)(sample, np.random.default_rng(0))
    assert out["left"].shape == (32, 80, 3) and out["disparity"].shape == (32, 80)
    error = _warp_error(out)
    assert error.mean() < 2.5 and np.percentile(error, 99) < 8
    unscaled = _warp_error(out, out["disparity"] / scale)  # forgetting to scale the disparity is caught
    assert unscaled.mean() > 3 * error.mean() + 5


def test_augmented_synthetic_sample_still_matches():
    cfg_synthetic = SyntheticConfig(size=(64, 128), max_disparity=24.0, lighting=0.0, noise_std=0.0, blur_prob=0.0)
    sample = SyntheticStereo(cfg_synthetic)[2]
    cfg = AugmentConfig(crop=(48, 96), scale_x=(0.8, 1.3), scale_prob=1.0, vflip_prob=0.5, right_perturb_prob=0.0,
                        color_prob=0.0)
    for seed in range(4):
        out = Augmentor(cfg)(sample, np.random.default_rng(seed))
        height, width = out["disparity"].shape
        map_x = (np.arange(width)[None, :] - out["disparity"]).astype(np.float32)
        map_y = np.repeat(np.arange(height, dtype=np.float32)[:, None], width, axis=1)
        warped = cv2.remap(out["right"], map_x, map_y, cv2.INTER_LINEAR)
        error = np.abs(warped.astype(int) - out["left"]).max(-1)[out["nonocc"] & (map_x >= 0)]
        assert np.median(error) <= 3, seed


def test_crops_and_flips_stay_aligned():
    height, width = 50, 300
    ys, xs = np.mgrid[0:height, 0:width]
    coded = np.stack([xs % 256, ys, xs // 256], axis=-1).astype(np.uint8)  # each pixel names its position
    sample = {"left": coded, "right": coded.copy(), "disparity": (xs + 1000 * ys).astype(np.float32),
              "nonocc": (xs + ys) % 3 == 0, "calib": {"baseline": 1.0}, "name": "coded"}
    cfg = AugmentConfig(crop=(16, 40), scale_prob=0.0, vflip_prob=0.5, right_perturb_prob=0.0, color_prob=0.0)
    corners, flips = set(), set()
    for seed in range(20):
        out = Augmentor(cfg)(sample, np.random.default_rng(seed))
        left = out["left"].astype(int)
        x, y = left[..., 0] + 256 * left[..., 2], left[..., 1]
        np.testing.assert_array_equal(out["disparity"], x + 1000 * y)
        np.testing.assert_array_equal(out["right"], out["left"])
        np.testing.assert_array_equal(out["nonocc"], (x + y) % 3 == 0)
        assert np.all(np.diff(x, axis=1) == 1)  # never flipped horizontally (that would swap the views)
        corners.add((int(x[0, 0]), int(y[0, 0])))
        flips.add(bool(y[1, 0] < y[0, 0]))
        assert out["calib"] is None
    assert len(corners) > 10 and flips == {True, False}


def test_right_perturbation_and_jitter_stay_within_bounds():
    value = 100
    flat = np.full((24, 32, 3), value, np.uint8)
    sample = {"left": flat, "right": flat.copy(), "disparity": np.full((24, 32), 3.0, np.float32), "nonocc": None,
              "name": "flat"}
    cfg = AugmentConfig(crop=(16, 16), scale_prob=0.0, right_perturb_prob=1.0)
    low = 255 * (value * cfg.brightness[0] / 255) ** cfg.gamma[1]
    high = 255 * (min(255, value * cfg.brightness[1]) / 255) ** cfg.gamma[0]
    differ = 0
    for seed in range(40):
        out = Augmentor(cfg)(sample, np.random.default_rng(seed))
        for view in ("left", "right"):
            assert out[view].min() == out[view].max()  # gray stays flat and gray (saturation/hue keep gray)
            assert low - 1 <= out[view][0, 0, 0] <= high + 1
        differ += int(out["left"][0, 0, 0] != out["right"][0, 0, 0])
        np.testing.assert_array_equal(out["disparity"], 3.0)  # GT untouched by the right-view perturbation
    assert differ > 30  # asymmetric: drawn independently per view
    rng = np.random.default_rng(0)
    for _ in range(200):
        p = draw_color(rng, cfg)
        assert 0.5 <= p.brightness <= 2.0 and 0.8 <= p.contrast <= 1.2 and 0.8 <= p.saturation <= 1.2
        assert -0.1 <= p.hue <= 0.1 and 0.7 <= p.gamma <= 1.5


def test_right_perturbation_is_small_rotation_and_vertical_shift():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
    image = cv2.GaussianBlur(image, (0, 0), 2)
    sample = {"left": image, "right": image.copy(), "disparity": np.zeros((64, 96), np.float32), "name": "x"}
    cfg = AugmentConfig(crop=(64, 96), scale_prob=0.0, vflip_prob=0.0, right_perturb_prob=1.0, color_prob=0.0)
    out = Augmentor(cfg)(sample, np.random.default_rng(3))
    np.testing.assert_array_equal(out["left"], image)
    shifted = [np.abs(np.roll(out["right"], -s, axis=0)[8:-8].astype(int) - image[8:-8]).mean() for s in range(-3, 4)]
    assert min(shifted) < 3 and np.argmin(shifted) - 3 in (-2, -1, 0, 1, 2)


def test_color_jitter_formulas():
    gray = np.full((2, 2, 3), 64, np.uint8)
    np.testing.assert_array_equal(apply_color(gray, ColorParams(brightness=2.0)), 128)
    np.testing.assert_array_equal(apply_color(gray, ColorParams(gamma=2.0)), round(255 * (64 / 255) ** 2))
    np.testing.assert_array_equal(apply_color(gray, ColorParams(saturation=1.2, hue=0.1)), 64)
    red = np.zeros((1, 1, 3), np.uint8)
    red[..., 0] = 200
    shifted = apply_color(red, ColorParams(hue=0.1))
    assert shifted[0, 0, 1] > 0 or shifted[0, 0, 2] > 0  # the hue moved away from pure red
    assert apply_color(red, ColorParams(saturation=0.0)).std() < 1.5  # no chroma left: gray


def test_small_images_are_upscaled_and_reproducible():
    sample = {"left": np.zeros((20, 30, 3), np.uint8), "right": np.zeros((20, 30, 3), np.uint8),
              "disparity": np.full((20, 30), 5.0, np.float32), "nonocc": np.ones((20, 30), bool), "name": "s"}
    sample["disparity"][0, 0] = np.inf
    cfg = AugmentConfig(crop=(32, 64), scale_prob=0.0, vflip_prob=0.0)
    out = Augmentor(cfg)(sample, np.random.default_rng(1))
    assert out["left"].shape == (32, 64, 3) and out["nonocc"].all()
    finite = out["disparity"][np.isfinite(out["disparity"])]
    np.testing.assert_allclose(finite, 5.0 * 64 / 30, rtol=1e-6)  # scaled with the x factor
    again = Augmentor(cfg)(sample, np.random.default_rng(1))
    for key in ("left", "right", "disparity"):
        np.testing.assert_array_equal(out[key], again[key])
    no_gt = Augmentor(cfg)({**sample, "disparity": None, "nonocc": None}, np.random.default_rng(1))
    assert no_gt["disparity"] is None and no_gt["nonocc"] is None


def test_config_validation():
    with pytest.raises(ValueError, match="scale_x"):
        AugmentConfig(scale_x=(1.5, 1.0))
    with pytest.raises(ValueError, match="vflip_prob"):
        AugmentConfig(vflip_prob=2.0)


# ------------------------------------------------------------------------------------------------
# TrainingDataset
# ------------------------------------------------------------------------------------------------


def _synthetic(length=4):
    return SyntheticStereo(SyntheticConfig(size=(40, 72), max_disparity=16.0, length=length, max_objects=8))


def test_training_dataset_tensors_and_collation():
    ds = TrainingDataset(_synthetic(), AugmentConfig(crop=(32, 64)), seed=7)
    item = ds[1]
    assert item["left"].dtype == torch.uint8 and item["left"].shape == (3, 32, 64)
    assert item["right"].shape == (3, 32, 64) and item["disparity"].shape == (1, 32, 64)
    assert item["disparity"].dtype == torch.float32 and item["name"] == "synthetic/0/1"
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert batch["left"].shape == (3, 3, 32, 64) and len(batch["name"]) == 3
    plain = TrainingDataset(_synthetic(), None)
    assert plain[0]["left"].shape == (3, 40, 72)


def test_training_rng_depends_on_seed_epoch_and_index(tmp_path):
    files = build_dataset(make_eth3d(tmp_path / "eth").spec())
    cfg = AugmentConfig(crop=(8, 16))
    a, b = TrainingDataset(files, cfg, seed=1), TrainingDataset(files, cfg, seed=1)
    assert torch.equal(a[0]["left"], b[0]["left"]) and torch.equal(a[1]["disparity"], b[1]["disparity"])
    first = a[0]["left"]
    a.set_epoch(1)
    assert a.epoch == 1 and not torch.equal(a[0]["left"], first)
    assert not torch.equal(TrainingDataset(files, cfg, seed=2)[0]["left"], first)
    # the synthetic set gives new scenes each epoch
    synthetic = TrainingDataset(_synthetic(length=2), AugmentConfig(crop=(32, 64)))
    synthetic.set_epoch(3)
    assert synthetic[1]["name"] == "synthetic/0/7"
    no_gt = TrainingDataset(build_dataset(make_eth3d(tmp_path / "eth2").spec("test")), cfg)
    assert torch.isinf(no_gt[0]["disparity"]).all()
    with pytest.raises(IndexError):
        a[len(a)]


def test_set_epoch_reaches_persistent_workers():
    ds = TrainingDataset(_synthetic(length=2), AugmentConfig(crop=(32, 64)))
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=1, persistent_workers=True,
                                         worker_init_fn=worker_init_fn)
    names = []
    for epoch in range(2):
        ds.set_epoch(epoch)
        names += [name for batch in loader for name in batch["name"]]
    assert names == ["synthetic/0/0", "synthetic/0/1", "synthetic/0/2", "synthetic/0/3"]
