"""The batched torch renderer against the NumPy/OpenCV reference: same scenes, same geometry and images;
warping consistency; matching statistics; determinism."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from synthetic_helpers import box_scene, smooth_atlas

from madis_stereo.data import AugmentConfig, Augmentor, SyntheticConfig
from madis_stereo.data.synthetic.atlas import build_atlas
from madis_stereo.data.synthetic.world import render_scene
from madis_stereo.training.device_augment import DeviceAugment
from madis_stereo.training.rendering import DeviceBatches, DeviceRenderer

pytestmark = pytest.mark.usefixtures("one_thread")

PLAIN = SyntheticConfig(size=(48, 96), max_disparity=32.0, lighting=0.0, noise_std=0.0, blur_prob=0.0,
                        atlas_tiles=8, atlas_tile_size=64, seed=4)


def _reference(cfg, scene, atlas, b):
    return render_scene(scene.scene(b), atlas, np.random.default_rng(b), cfg)


def _image(t: torch.Tensor) -> np.ndarray:
    return t.permute(1, 2, 0).numpy()


def test_same_scenes_give_the_same_geometry_and_images_in_both_renderers():
    renderer = DeviceRenderer(PLAIN, 6)
    scene, noise_seed = renderer.sample(0)
    out = renderer.render(scene, noise_seed)
    atlas = build_atlas(PLAIN.seed, PLAIN.atlas_tiles, PLAIN.atlas_tile_size)
    pixels = differ = label_differ = occ_differ = 0
    errors = []
    for b in range(scene.count):
        ref = _reference(PLAIN, scene, atlas, b)
        slots = np.flatnonzero(scene.active[b])  # reference labels index the active layers
        differ += int((np.abs(out.disparity[b, 0].numpy() - ref.disparity) > 1e-3).sum())
        label_differ += int((out.labels_left[b].numpy() != slots[ref.labels_left]).sum())
        label_differ += int((out.labels_right[b].numpy() != slots[ref.labels_right]).sum())
        occ_differ += int((out.nonocc[b, 0].numpy() != ref.nonocc).sum())
        pixels += ref.disparity.size
        for ours, theirs in ((out.left[b], ref.left), (out.right[b], ref.right)):
            errors.append(np.abs(_image(ours).astype(int) - theirs).max(-1))
    # the only differences: shape outlines on pixel centres (the reference tabulates star outlines)
    assert differ <= 1e-3 * pixels and label_differ <= 2e-3 * pixels and occ_differ <= 2e-3 * pixels
    errors = np.concatenate([e.ravel() for e in errors])
    assert errors.mean() < 0.8 and np.percentile(errors, 99) <= 3, (errors.mean(), np.percentile(errors, 99))


def test_box_in_front_of_a_plane_is_exact():
    height, width = 16, 64
    cfg = SyntheticConfig(size=(height, width), max_disparity=20.0, lighting=0.0, noise_std=0.0, blur_prob=0.0)
    scene, atlas = box_scene()
    out = DeviceRenderer(cfg, 1, atlas=atlas).render(scene)
    x = np.arange(width)
    expected = np.broadcast_to(np.where((x >= 21) & (x <= 30), 12.0, 4.0), (height, width))
    np.testing.assert_array_equal(out.disparity[0, 0].numpy(), expected)
    occluded = (x <= 3) | ((x >= 13) & (x <= 20))
    np.testing.assert_array_equal(out.nonocc[0, 0].numpy(), np.broadcast_to(~occluded, (height, width)))
    np.testing.assert_array_equal(out.right[0, 0, 0].numpy(), np.where((x >= 9) & (x <= 18), 200, 50))
    np.testing.assert_array_equal(out.left[0, 0, 0].numpy(), np.where((x >= 21) & (x <= 30), 200, 50))


def test_warping_the_right_view_by_the_gt_reproduces_the_left_view():
    cfg = dataclasses.replace(PLAIN, curved_prob=0.6, seed=9)
    renderer = DeviceRenderer(cfg, 6, atlas=smooth_atlas(8, 64))
    out = renderer.render(*renderer.sample(0))
    count, _, height, width = out.left.shape
    xs = torch.arange(width).view(1, 1, width) - out.disparity[:, 0]
    ys = torch.arange(height).view(1, height, 1).expand_as(xs)
    grid = torch.stack([xs / (width - 1) * 2 - 1, ys / (height - 1) * 2 - 1], -1)
    warped = F.grid_sample(out.right.float(), grid, align_corners=True)
    error = (warped - out.left.float()).abs().amax(1)
    # where the surface is visible in the right view and not at a right-view depth edge
    floor = xs.floor().long().clamp(0, width - 2)
    right_labels = out.labels_right.gather(2, floor), out.labels_right.gather(2, floor + 1)
    same = out.nonocc[:, 0] & (right_labels[0] == out.labels_left) & (right_labels[1] == out.labels_left)
    assert same.float().mean() > 0.5
    error = error[same]
    # a few grey levels; the rare larger ones sit where minified texture meets a depth edge within a pixel
    assert error.mean() < 1.0 and torch.quantile(error, 0.99) <= 3 and (error > 8).float().mean() < 2e-3
    shifted = F.grid_sample(out.right.float(), grid + torch.tensor([2 / (width - 1), 0.0]), align_corners=True)
    assert (shifted - out.left.float()).abs().amax(1)[same].mean() > 3 * error.mean()


def test_statistics_of_both_renderers_match_with_photometry_on():
    """Over the same 12 scenes (curved, shaded, exposure/white balance/blur/noise differing between the views):
    disparity quantiles, share of low-gradient pixels, mean and spread of intensities agree."""
    cfg = SyntheticConfig(size=(64, 128), max_disparity=40.0, atlas_tiles=8, atlas_tile_size=64, seed=2)
    renderer = DeviceRenderer(cfg, 12)
    scene, noise_seed = renderer.sample(0)
    out = renderer.render(scene, noise_seed)
    atlas = build_atlas(cfg.seed, cfg.atlas_tiles, cfg.atlas_tile_size)
    refs = [_reference(cfg, scene, atlas, b) for b in range(scene.count)]

    def stats(lefts, rights, disparities):
        grey = [cv2.cvtColor(np.ascontiguousarray(im), cv2.COLOR_RGB2GRAY).astype(np.float32) for im in lefts + rights]
        grad = np.concatenate([np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1)).ravel()
                               for g in grey])
        values = np.concatenate([g.ravel() for g in grey])
        return (np.percentile(np.concatenate([d.ravel() for d in disparities]), [5, 25, 50, 75, 95]),
                float((grad < 8).mean()), float(values.mean()), float(values.std()))

    ours = stats([_image(t) for t in out.left], [_image(t) for t in out.right], list(out.disparity[:, 0].numpy()))
    theirs = stats([r.left for r in refs], [r.right for r in refs], [r.disparity for r in refs])
    np.testing.assert_allclose(ours[0], theirs[0], atol=0.05)  # disparity quantiles (px)
    assert abs(ours[1] - theirs[1]) < 0.02  # low-gradient share
    assert abs(ours[2] - theirs[2]) < 1.5 and abs(ours[3] / theirs[3] - 1) < 0.03  # grey mean, std
    # the views really differ photometrically
    gap = np.mean([abs(r.left.mean() - r.right.mean()) for r in refs])
    assert gap > 2


def test_batches_are_deterministic_per_seed_stream_and_index():
    cfg = dataclasses.replace(PLAIN, lighting=1.0, noise_std=0.02, blur_prob=0.5)
    a = DeviceRenderer(cfg, 2).batch(3)
    b = DeviceRenderer(cfg, 2).batch(3)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert not torch.equal(a["left"], DeviceRenderer(cfg, 2).batch(4)["left"])
    assert not torch.equal(a["left"], DeviceRenderer(cfg, 2, stream=1).batch(3)["left"])
    ahead = DeviceBatches(cfg, 1, ahead=2)
    second = ahead.batch(7)  # batch 7 = the second half of render call 3
    assert torch.equal(second["left"], a["left"][1:]) and torch.equal(second["disparity"], a["disparity"][1:])
    assert a["left"].dtype == torch.uint8 and a["left"].shape == (2, 3, 48, 96)
    assert a["disparity"].shape == (2, 1, 48, 96) and torch.isfinite(a["disparity"]).all()
    assert a["disparity"].min() >= 0 and a["disparity"].max() <= 32.0 + 1e-3


def test_atlas_refresh_changes_the_textures_not_the_geometry():
    cfg = dataclasses.replace(PLAIN, lighting=1.0)
    fixed, fresh = DeviceBatches(cfg, 1), DeviceBatches(cfg, 1, atlas_refresh=2)
    for n in (0, 1):
        assert torch.equal(fixed.batch(n)["left"], fresh.batch(n)["left"])
    a, b = fixed.batch(2), fresh.batch(2)  # pair 2 starts atlas generation 1
    assert torch.equal(a["disparity"], b["disparity"]) and not torch.equal(a["left"], b["left"])
    assert torch.equal(DeviceBatches(cfg, 1, atlas_refresh=2).batch(2)["left"], b["left"])  # a function of n


def test_device_augmentation_matches_the_cpu_augmentor():
    """Same draws, same formulas: flip and GT exact, colour and the right-view perturbation within rounding."""
    cfg = AugmentConfig(crop=(48, 96), scale_prob=0.0, crop_margin=0, color_single_prob=0.0, jitter_prob=0.9)
    batch = DeviceRenderer(dataclasses.replace(PLAIN, lighting=1.0), 4).batch(1)
    out = DeviceAugment(cfg)(batch, np.random.default_rng(5))
    rng = np.random.default_rng(5)
    augmentor = Augmentor(cfg)
    flipped = changed = 0
    for i in range(4):  # the CPU augmentor draws per sample in the same order
        sample = {"left": _image(batch["left"][i]), "right": _image(batch["right"][i]),
                  "disparity": batch["disparity"][i, 0].numpy(), "nonocc": None}
        ref = augmentor(sample, rng)
        np.testing.assert_array_equal(out["disparity"][i, 0].numpy(), ref["disparity"])
        flipped += not np.array_equal(ref["disparity"], sample["disparity"])
        for key in ("left", "right"):
            error = np.abs(_image(out[key][i]).astype(int) - ref[key])[3:-3, 3:-3]  # borders: interpolation at the edge
            assert error.mean() < 0.8 and np.percentile(error, 99.9) <= 3, (i, key, error.mean(), error.max())
            changed += np.abs(ref[key].astype(int) - sample[key]).mean() > 3
    assert flipped and changed  # something happened
    with pytest.raises(ValueError, match="scale_prob"):
        DeviceAugment(AugmentConfig(crop=(48, 96)))
