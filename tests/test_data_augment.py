"""CroCo-Stereo's augmentation: geometry kept (x-scale, crop, flip), only the right view perturbed, and every
random branch checked statistically against the rules of METHOD.md section 4 (frequencies, ranges, shared vs
own factors); jitters checked against PIL's own operations. The training wrapper is seeded by (seed, epoch,
index) and collates."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
from data_layouts import make_eth3d
from PIL import Image, ImageEnhance

from madis_stereo.data import (
    JITTERS,
    AugmentConfig,
    Augmentor,
    SyntheticConfig,
    SyntheticStereo,
    adjust,
    build_dataset,
    draw_color_plan,
)
from madis_stereo.training.data import TrainingDataset, worker_init_fn

NO_COLOR = dict(color_single_prob=1.0, jitter_prob=0.0)
GEOMETRY_ONLY = dict(vflip_prob=0.0, right_perturb_prob=0.0, **NO_COLOR)
N = 4000  # draws per statistical check; bounds are ~5 standard deviations (a false failure is ~1e-6)


def assert_frequency(count: int, n: int, p: float) -> None:
    sigma = math.sqrt(p * (1 - p) / n)
    assert abs(count / n - p) <= 5 * sigma + 1e-9, (count / n, p)


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
    log2 = math.log2(scale)
    cfg = AugmentConfig(crop=(32, 80), scale_log2_small=(log2, log2), scale_prob=1.0, **GEOMETRY_ONLY)
    out = Augmentor(cfg)(sample, np.random.default_rng(0))
    assert out["left"].shape == (32, 80, 3) and out["disparity"].shape == (32, 80)
    error = _warp_error(out)
    assert error.mean() < 2.5 and np.percentile(error, 99) < 8
    unscaled = _warp_error(out, out["disparity"] / scale)  # forgetting to scale the disparity is caught
    assert unscaled.mean() > 3 * error.mean() + 5


def test_augmented_synthetic_sample_still_matches():
    cfg_synthetic = SyntheticConfig(size=(64, 128), max_disparity=24.0, lighting=0.0, noise_std=0.0, blur_prob=0.0)
    sample = SyntheticStereo(cfg_synthetic)[2]
    cfg = AugmentConfig(crop=(48, 96), scale_prob=1.0, vflip_prob=0.5, right_perturb_prob=0.0, **NO_COLOR)
    for seed in range(4):
        out = Augmentor(cfg)(sample, np.random.default_rng(seed))
        height, width = out["disparity"].shape
        map_x = (np.arange(width)[None, :] - out["disparity"]).astype(np.float32)
        map_y = np.repeat(np.arange(height, dtype=np.float32)[:, None], width, axis=1)
        warped = cv2.remap(out["right"], map_x, map_y, cv2.INTER_LINEAR)
        error = np.abs(warped.astype(int) - out["left"]).max(-1)[out["nonocc"] & (map_x >= 0)]
        assert np.median(error) <= 3, seed


def _x_factors(cfg: AugmentConfig, height: int, width: int, n: int) -> np.ndarray:
    """The x factor each augmented sample got, read from a constant disparity of 4 px (nearest resize)."""
    sample = {"left": np.zeros((height, width, 3), np.uint8), "right": np.zeros((height, width, 3), np.uint8),
              "disparity": np.full((height, width), 4.0, np.float32), "name": "flat"}
    return np.array([Augmentor(cfg)(sample, np.random.default_rng([5, i]))["disparity"][0, 0] / 4.0
                     for i in range(n)])


def test_scale_branch_frequency_and_log2_ranges():
    cfg = AugmentConfig(crop=(16, 32), **GEOMETRY_ONLY)
    small = np.log2(_x_factors(cfg, 24, 60, 1000))  # min side < 800: 2^U(0, 1) with probability 0.5
    scaled = small[small != 0]
    assert_frequency(len(scaled), len(small), 0.5)
    assert scaled.min() >= 0 and scaled.max() <= 1 and scaled.min() < 0.05 and scaled.max() > 0.95
    assert abs(np.median(scaled) - 0.5) < 0.1  # uniform in log2
    large = np.log2(_x_factors(AugmentConfig(crop=(16, 32), large_threshold=20, **GEOMETRY_ONLY), 24, 60, 1000))
    scaled = large[large != 0]  # "large" image: 2^U(-0.2, 0.4), can shrink
    assert_frequency(len(scaled), len(large), 0.5)
    assert scaled.min() >= -0.2 and scaled.max() <= 0.4 and scaled.min() < -0.17 and scaled.max() > 0.37
    assert abs(np.mean(scaled < 0) - 1 / 3) < 0.1


def test_scale_never_leaves_less_than_crop_plus_margin():
    """Width 70, crop 64: the factor is at least 72/70, with or without the scale branch."""
    cfg = AugmentConfig(crop=(16, 64), large_threshold=20, **GEOMETRY_ONLY)
    factors = _x_factors(cfg, 24, 70, 1000)
    least = 72 / 70
    assert factors.min() == pytest.approx(least, rel=1e-6)
    at_least = np.isclose(factors, least, rtol=1e-6)
    # no scale branch (0.5), or 2^U(-0.2, 0.4) below the floor
    assert_frequency(int(at_least.sum()), len(factors), 0.5 + 0.5 * (math.log2(least) + 0.2) / 0.6)


def test_crops_and_flips_stay_aligned():
    height, width = 50, 300
    ys, xs = np.mgrid[0:height, 0:width]
    coded = np.stack([xs % 256, ys, xs // 256], axis=-1).astype(np.uint8)  # each pixel names its position
    sample = {"left": coded, "right": coded.copy(), "disparity": (xs + 1000 * ys).astype(np.float32),
              "nonocc": (xs + ys) % 3 == 0, "calib": {"baseline": 1.0}, "name": "coded"}
    cfg = AugmentConfig(crop=(16, 40), scale_prob=0.0, vflip_prob=0.5, right_perturb_prob=0.0, **NO_COLOR)
    corners, flips = set(), []
    for seed in range(400):
        out = Augmentor(cfg)(sample, np.random.default_rng(seed))
        left = out["left"].astype(int)
        x, y = left[..., 0] + 256 * left[..., 2], left[..., 1]
        np.testing.assert_array_equal(out["disparity"], x + 1000 * y)
        np.testing.assert_array_equal(out["right"], out["left"])
        np.testing.assert_array_equal(out["nonocc"], (x + y) % 3 == 0)
        assert np.all(np.diff(x, axis=1) == 1)  # never flipped horizontally (that would swap the views)
        corners.add((int(x[0, 0]), int(y[0, 0])))
        flips.append(bool(y[1, 0] < y[0, 0]))
        assert out["calib"] is None
    assert len(corners) > 100
    assert_frequency(sum(flips), len(flips), 0.5)


def test_right_perturbation_frequency_zero_border_and_size():
    """Right view only, p = 0.5; a shift of up to 2 px with a zero border; the left view and GT untouched."""
    rows = np.repeat(np.linspace(40, 240, 48)[:, None], 64, axis=1)  # brightness encodes the row
    image = np.repeat(rows[..., None], 3, axis=2).astype(np.uint8)
    sample = {"left": image, "right": image.copy(), "disparity": np.full((48, 64), 3.0, np.float32), "name": "r"}
    cfg = AugmentConfig(crop=(48, 64), scale_prob=0.0, vflip_prob=0.0, crop_margin=0, **NO_COLOR)
    perturbed, black_edge, shifts = 0, 0, []
    for seed in range(600):
        out = Augmentor(cfg)(sample, np.random.default_rng(seed))
        np.testing.assert_array_equal(out["left"], image)
        np.testing.assert_array_equal(out["disparity"], 3.0)
        if np.array_equal(out["right"], image):
            continue
        perturbed += 1
        black_edge += int(out["right"][[0, -1], 32].min() < 30)  # shifted in from outside: zeros
        middle = out["right"][10:-10, 32, 0].astype(float)
        step = (240 - 40) / 47
        shifts.append(float(np.mean((image[10:-10, 32, 0] - middle) / step)))
    assert_frequency(perturbed, 600, 0.5)
    assert black_edge > 0.3 * perturbed  # a zero border (a reflected border would never be black)
    shifts = np.array(shifts)  # rows move by U(-2, 2) (+ at most 0.1 degree x 64 px of rotation)
    assert np.abs(shifts).max() <= 2.2 and shifts.min() < -1.5 and shifts.max() > 1.5


def _plans(cfg: AugmentConfig | None = None, n: int = N):
    cfg = cfg or AugmentConfig()
    rng = np.random.default_rng(11)
    return [draw_color_plan(rng, cfg) for _ in range(n)]


def test_colour_plan_branch_frequencies():
    """One jitter with p = 0.5, else all five in a random order; each fires with p = 0.5."""
    plans = _plans()
    counts = np.bincount([len(p) for p in plans], minlength=6)
    for k in range(6):  # P(k jitters fire) = 0.5 [k<=1] Binomial(1, .5)(k) + 0.5 Binomial(5, .5)(k)
        expected = 0.5 * (0.5 if k <= 1 else 0.0) + 0.5 * math.comb(5, k) / 32
        assert_frequency(int(counts[k]), len(plans), expected)
    singles = [p[0].name for p in plans if len(p) == 1]
    for name in JITTERS:  # the single jitter is chosen uniformly
        assert_frequency(singles.count(name), len(singles), 0.2)
    both = [[s.name for s in p] for p in plans if {"contrast", "saturation"} <= {s.name for s in p}]
    first = sum(names.index("contrast") < names.index("saturation") for names in both)
    assert_frequency(first, len(both), 0.5)  # a random order, not a fixed one


def test_colour_factors_ranges_and_right_view_own_draws():
    cfg = AugmentConfig()
    steps = [s for p in _plans(cfg) for s in p]
    own = [s for s in steps if s.right_own]
    assert_frequency(len(own), len(steps), 0.5)  # the right view draws its own factor with p = 0.5
    assert all(s.right == s.left for s in steps if not s.right_own)
    ranges = {"contrast": (0.8, 1.2), "gamma": (0.7, 1.5), "brightness": (0.5, 2.0), "hue": (-0.1, 0.1),
              "saturation": (0.8, 1.2)}
    for name, (low, high) in ranges.items():
        left = np.array([s.left for s in steps if s.name == name])
        assert low <= left.min() and left.max() <= high
        assert left.min() < low + 0.03 * (high - low) and left.max() > high - 0.03 * (high - low)
        assert abs(left.mean() - (low + high) / 2) < 0.03 * (high - low)  # uniform
        right = np.array([s.right for s in own if s.name == name])
        low, high = (-0.8, 1.2) if name == "saturation" else (low, high)  # the public code's right-view range
        assert low <= right.min() and right.max() <= high and right.min() < low + 0.05 * (high - low)
        assert not np.array_equal(right, [s.left for s in own if s.name == name])
    own_saturation = np.array([s.right for s in own if s.name == "saturation"])
    assert_frequency(int((own_saturation < 0).sum()), len(own_saturation), 0.4)


def test_colour_end_to_end_on_a_gray_image():
    """On a flat gray image only brightness and gamma change anything (contrast, saturation, hue keep it), so
    the rules fix P(left unchanged) = 0.5 (3/5 + 2/5 x 1/2) + 0.5 (1/2)^2 = 0.525 and P(right differs from
    left) = 0.5 (2/5 x 1/2 x 1/2) + 0.5 (1 - (3/4)^2) = 0.26875."""
    flat = np.full((8, 8, 3), 100, np.uint8)
    sample = {"left": flat, "right": flat.copy(), "disparity": None, "name": "gray"}
    cfg = AugmentConfig(crop=(8, 8), scale_prob=0.0, vflip_prob=0.0, right_perturb_prob=0.0, crop_margin=0)
    unchanged = differ = 0
    for seed in range(N):
        out = Augmentor(cfg)(sample, np.random.default_rng([3, seed]))
        assert out["left"].min() == out["left"].max() and out["right"].min() == out["right"].max()  # stays flat
        unchanged += int(out["left"][0, 0, 0] == 100)
        differ += int(out["left"][0, 0, 0] != out["right"][0, 0, 0])
    assert_frequency(unchanged, N, 0.525)
    assert_frequency(differ, N, 0.26875)


def _pil(image: np.ndarray) -> Image.Image:
    return Image.fromarray(image)


@pytest.mark.parametrize("factor", [0.0, 0.5, 1.3, 2.0])
def test_jitters_match_pil_enhance(factor):
    """Brightness, contrast and saturation are PIL's ImageEnhance (what torchvision runs on PIL images)."""
    image = np.random.default_rng(0).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    for name, enhancer in (("brightness", ImageEnhance.Brightness), ("contrast", ImageEnhance.Contrast),
                           ("saturation", ImageEnhance.Color)):
        expected = np.asarray(enhancer(_pil(image)).enhance(factor)).astype(int)
        assert np.abs(adjust(image, name, factor).astype(int) - expected).max() <= 1, name


def test_negative_saturation_inverts_chroma_and_gamma_and_hue():
    reddish = np.array([[[200, 100, 80]]], np.uint8)
    gray = round((200 * 299 + 100 * 587 + 80 * 114) / 1000)
    out = adjust(reddish, "saturation", -0.8)[0, 0].astype(int)  # the public code's right-view range allows it
    assert out[0] < gray < out[1] and out[2] > gray  # red below gray now, green and blue above
    dark = np.full((1, 1, 3), 64, np.uint8)
    np.testing.assert_array_equal(adjust(dark, "gamma", 2.0), int(255.999 * (64 / 255) ** 2))
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 255
    green = adjust(red, "hue", 1 / 3)  # a third of the colour circle: red -> green
    assert green[..., 1].min() > 240 and green[..., 0].max() < 15 and green[..., 2].max() < 15
    hsv = np.asarray(_pil(np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8)).convert("HSV"))
    rgb = np.asarray(Image.fromarray(hsv, "HSV").convert("RGB"))
    shifted = hsv.copy()
    shifted[..., 0] = (hsv[..., 0].astype(int) + int(-0.07 * 255)) % 256
    expected = np.asarray(Image.fromarray(shifted, "HSV").convert("RGB")).astype(int)
    assert np.median(np.abs(adjust(rgb, "hue", -0.07).astype(int) - expected)) <= 2  # PIL's HSV shift


def test_small_images_are_upscaled_and_reproducible():
    sample = {"left": np.zeros((20, 30, 3), np.uint8), "right": np.zeros((20, 30, 3), np.uint8),
              "disparity": np.full((20, 30), 5.0, np.float32), "nonocc": np.ones((20, 30), bool), "name": "s"}
    sample["disparity"][0, 0] = np.inf
    cfg = AugmentConfig(crop=(32, 64), scale_prob=0.0, vflip_prob=0.0)
    out = Augmentor(cfg)(sample, np.random.default_rng(1))
    assert out["left"].shape == (32, 64, 3) and out["nonocc"].all()
    finite = out["disparity"][np.isfinite(out["disparity"])]
    np.testing.assert_allclose(finite, 5.0 * 72 / 30, rtol=1e-6)  # width to crop + 8, disparity scaled with x
    again = Augmentor(cfg)(sample, np.random.default_rng(1))
    for key in ("left", "right", "disparity"):
        np.testing.assert_array_equal(out[key], again[key])
    no_gt = Augmentor(cfg)({**sample, "disparity": None, "nonocc": None}, np.random.default_rng(1))
    assert no_gt["disparity"] is None and no_gt["nonocc"] is None


def test_config_validation():
    with pytest.raises(ValueError, match="scale_log2_small"):
        AugmentConfig(scale_log2_small=(1.5, 1.0))
    with pytest.raises(ValueError, match="vflip_prob"):
        AugmentConfig(vflip_prob=2.0)
    with pytest.raises(ValueError, match="hue"):
        AugmentConfig(hue=(-0.7, 0.1))
    with pytest.raises(ValueError, match="unknown jitter"):
        adjust(np.zeros((2, 2, 3), np.uint8), "sharpness", 1.0)

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
