"""Benchmark protocols (KITTI, Middlebury, ETH3D, SceneFlow, generic) and their aggregation over images."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from madis_stereo.errors import InputError
from madis_stereo.evaluation.metrics import (
    eth3d_image,
    kitti2012_image,
    kitti2015_image,
    middlebury_image,
    sceneflow_image,
    stereo_metrics,
)
from madis_stereo.evaluation.protocols import PROTOCOLS, evaluate_protocol

NAN = np.nan
INF = np.inf


# ---------------------------------------------------------------------------- KITTI


def _two_kitti_images():
    # image A: 4 valid pixels, one D1 outlier (10 px off on gt 20); image B: 1 valid pixel, an outlier
    gt_a = np.array([[20.0, 20.0], [20.0, 20.0]])
    pred_a = np.array([[20.0, 20.0], [20.0, 30.0]])
    gt_b = np.array([[INF, 50.0]])
    pred_b = np.array([[0.0, 10.0]])
    return (pred_a, gt_a), (pred_b, gt_b)


def test_kitti2015_aggregates_pixels_as_the_devkit():
    a, b = _two_kitti_images()
    assert kitti2015_image(*a)["all/d1_all"] == pytest.approx(25.0)
    assert kitti2015_image(*b)["all/d1_all"] == pytest.approx(100.0)
    out = evaluate_protocol("kitti2015", [a, b])
    assert out["n_images"] == 2 and out["all/n"] == 5
    assert out["all/d1_all"] == pytest.approx(40.0)  # 2 outliers / 5 pixels, not (25 + 100) / 2
    assert out["all/epe"] == pytest.approx((10.0 + 40.0) / 5)


def test_kitti2012_averages_images_as_the_devkit():
    a, b = _two_kitti_images()
    out = evaluate_protocol("kitti2012", [a, b])
    assert out["all/bad_3.0"] == pytest.approx(62.5)  # mean of 25 % and 100 %
    assert out["all/d1_all"] == pytest.approx(62.5)
    assert out["all/epe"] == pytest.approx((2.5 + 40.0) / 2)


def test_kitti2012_out_x_has_no_relative_term():
    # 4 px off on gt 100: Out-3 error, but not a D1 outlier
    out = kitti2012_image(np.array([[104.0]]), np.array([[100.0]]))
    assert out["all/bad_3.0"] == 100.0 and out["all/bad_4.0"] == 0.0 and out["all/d1_all"] == 0.0


def test_kitti_noc_and_all_regions():
    gt = np.array([[10.0, 10.0, 10.0, 10.0]])
    pred = np.array([[10.0, 10.0, 10.0, 20.0]])
    nonocc = np.array([[True, True, True, False]])
    out = kitti2015_image(pred, gt, nonocc)
    assert out["noc/d1_all"] == 0.0 and out["noc/n"] == 3
    assert out["all/d1_all"] == pytest.approx(25.0) and out["all/n"] == 4
    assert "noc/d1_all" not in kitti2015_image(pred, gt)
    with pytest.raises(InputError, match="HxW"):
        kitti2015_image(np.ones(3), np.ones(3))
    assert kitti2015_image(np.ones(3), np.ones(3), interpolate=False)["all/d1_all"] == 0.0


def test_kitti2015_background_and_foreground():
    gt = np.array([[10.0, 10.0, 40.0, 40.0, INF]])
    pred = np.array([[10.0, 20.0, 40.0, 40.0, 0.0]])
    obj_map = np.array([[0, 0, 1, 1, 1]])
    out = kitti2015_image(pred, gt, obj_map=obj_map)
    assert out["all/d1_bg"] == pytest.approx(50.0) and out["all/n_bg"] == 2
    assert out["all/d1_fg"] == 0.0 and out["all/n_fg"] == 2
    assert out["all/d1_all"] == pytest.approx(25.0)
    # aggregation weights D1-bg/fg by their own pixel counts
    other = kitti2015_image(np.array([[10.0, 80.0]]), np.array([[10.0, 40.0]]), obj_map=np.array([[0, 1]]))
    agg = PROTOCOLS["kitti2015"].aggregate([out, other])
    assert agg["all/d1_bg"] == pytest.approx(100 * 1 / 3)
    assert agg["all/d1_fg"] == pytest.approx(100 * 1 / 3)


def test_kitti_fills_missing_estimates_with_the_background():
    gt = np.array([[10.0, 10.0, 20.0, 20.0]])
    pred = np.array([[10.0, NAN, 20.0, 20.0]])  # the hole takes min(10, 20) = 10: correct
    out = kitti2015_image(pred, gt)
    assert out["all/d1_all"] == 0.0 and out["all/density"] == pytest.approx(75.0)
    assert kitti2015_image(pred, gt, interpolate=False)["all/d1_all"] == pytest.approx(25.0)
    # a row without any estimate is filled from the column below / above (devkit's border extrapolation)
    gt2 = np.array([[5.0, 6.0], [5.0, 6.0], [5.0, 6.0]])
    pred2 = np.array([[NAN, NAN], [5.0, 6.0], [NAN, NAN]])
    out2 = kitti2012_image(pred2, gt2)
    assert out2["all/bad_2.0"] == 0.0 and out2["all/density"] == pytest.approx(100 / 3)
    # nothing predicted at all: everything is an outlier, no crash
    out3 = kitti2015_image(np.full((2, 2), NAN), np.ones((2, 2)))
    assert out3["all/d1_all"] == 100.0 and out3["all/density"] == 0.0


# ---------------------------------------------------------------------------- Middlebury / ETH3D


def test_middlebury_counts_missing_as_bad_and_skips_them_in_avgerr():
    gt = np.array([[10.0, 10.0, 10.0, 10.0, INF]])
    pred = np.array([[10.0, 11.5, 13.0, INF, 3.0]])
    nonocc = np.array([[True, True, False, True, True]])
    out = middlebury_image(pred, gt, nonocc)
    assert out["all/n"] == 4
    assert out["all/bad_1.0"] == pytest.approx(75.0)  # 1.5, 3.0 and the missing one
    assert out["all/bad_2.0"] == pytest.approx(50.0)
    assert out["all/invalid"] == pytest.approx(25.0)
    assert out["all/avgerr"] == pytest.approx(1.5)  # (0 + 1.5 + 3) / 3 estimated pixels
    assert out["all/rms"] == pytest.approx(math.sqrt((0 + 2.25 + 9) / 3))
    assert out["noc/n"] == 3 and out["noc/bad_2.0"] == pytest.approx(100 / 3)
    assert out["noc/avgerr"] == pytest.approx(0.75)


def test_middlebury_clips_to_the_disparity_range():
    out = middlebury_image(np.array([100.0, -5.0]), np.array([49.0, 1.0]), max_disparity=50)
    assert out["all/avgerr"] == pytest.approx(1.0)  # 100 -> 50 (error 1), -5 -> 0 (error 1)


def test_quantiles_are_the_sorted_element_at_floor_n_q():
    gt = np.zeros(20)
    pred = np.arange(20.0)[::-1].copy()  # errors 0..19
    for out in (middlebury_image(pred, gt), eth3d_image(pred.reshape(1, 20), gt.reshape(1, 20))):
        assert out["all/a50"] == 10.0  # not the interpolated median 9.5
        assert out["all/a90"] == 18.0
        assert out["all/a95"] == 19.0
        assert out["all/a99"] == 19.0


def test_middlebury_weighted_mean():
    one = middlebury_image(np.array([10.0]), np.array([10.0]), weight=1.0)  # bad 0
    two = middlebury_image(np.array([20.0]), np.array([10.0]), weight=3.0)  # bad 100
    assert PROTOCOLS["middlebury"].aggregate([one, two])["all/bad_2.0"] == pytest.approx(75.0)
    agg = evaluate_protocol("middlebury", [(np.array([10.0]), np.array([10.0]), None, {"weight": 1.0}),
                                           (np.array([20.0]), np.array([10.0]), None, {"weight": 3.0})])
    assert agg["all/bad_2.0"] == pytest.approx(75.0) and "weight" not in agg


def test_eth3d_scores_estimated_pixels_and_reports_coverage():
    gt = np.array([[1.0, 2.0, 3.0, 4.0, INF]])
    pred = np.array([[1.0, 4.0, NAN, 40.0, 1.0]])  # 40 > width 5: not an estimate
    nonocc = np.array([[True, False, True, True, True]])
    out = eth3d_image(pred, gt, nonocc)
    assert out["all/n"] == 4 and out["all/coverage"] == pytest.approx(50.0)
    assert out["all/bad_1.0"] == pytest.approx(50.0)  # 1 of 2 estimated pixels
    assert out["all/avgerr"] == pytest.approx(1.0)
    assert out["noc/coverage"] == pytest.approx(100 / 3) and out["noc/bad_0.5"] == 0.0
    # GT but no estimate at all: the official worst result
    worst = eth3d_image(np.full((1, 2), NAN), np.ones((1, 2)))
    assert worst["all/bad_2.0"] == 100.0 and worst["all/avgerr"] == INF and worst["all/coverage"] == 0.0


def test_eth3d_aggregate_is_image_mean():
    a = eth3d_image(np.array([[1.0, 1.0]]), np.array([[1.0, 5.0]]))  # bad 50 %
    b = eth3d_image(np.array([[1.0, 1.0, 1.0, 1.0]]), np.ones((1, 4)))  # bad 0 %
    assert PROTOCOLS["eth3d"].aggregate([a, b])["all/bad_2.0"] == pytest.approx(25.0)


# ---------------------------------------------------------------------------- SceneFlow / generic


def test_sceneflow_keeps_gt_below_192():
    gt = np.array([10.0, 191.9, 192.0, 300.0, INF])
    pred = gt + np.array([0.5, 2.0, 100.0, 100.0, 0.0])
    out = sceneflow_image(pred, gt)
    assert out["all/n"] == 2
    assert out["all/epe"] == pytest.approx(1.25)
    assert out["all/bad_1.0"] == pytest.approx(50.0)
    assert sceneflow_image(pred, gt, max_disparity=1000.0)["all/n"] == 4


def test_sceneflow_aggregate_is_image_mean_and_skips_empty_images():
    a = (np.array([1.0, 3.0]), np.array([1.0, 1.0]))  # epe 1
    b = (np.array([5.0]), np.array([2.0]))  # epe 3
    empty = (np.array([5.0]), np.array([500.0]))  # nothing below 192
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = evaluate_protocol("sceneflow", [a, b, empty])
    assert out["n_images"] == 3 and out["all/epe"] == pytest.approx(2.0)
    assert out["all/bad_1.0"] == pytest.approx(75.0)


def test_generic_aggregate_equals_metrics_of_all_pixels_pooled():
    rng = np.random.default_rng(0)
    samples = []
    for shape in ((6, 7), (3, 9), (5, 5)):
        gt = rng.uniform(1, 60, shape)
        gt[rng.random(shape) < 0.2] = INF
        pred = gt + rng.normal(0, 3, shape)
        pred[rng.random(shape) < 0.1] = NAN
        samples.append((pred, gt, rng.random(shape) < 0.8))
    out = evaluate_protocol("generic", samples)
    pooled = stereo_metrics(np.concatenate([p.ravel() for p, _, _ in samples]),
                            np.concatenate([g.ravel() for _, g, _ in samples]))
    assert out["all/n"] == pooled["n_valid"]
    for ours, ref in (("epe", "epe"), ("rmse", "rmse"), ("bad_2.0", "bad_2"), ("d1_all", "d1"),
                      ("invalid_pred", "invalid_pred")):
        assert out[f"all/{ours}"] == pytest.approx(pooled[ref]), ours
    assert "noc/bad_1.0" in out


def test_registry_and_errors():
    assert set(PROTOCOLS) == {"kitti2012", "kitti2015", "eth3d", "middlebury", "sceneflow", "generic"}
    per_image, aggregate = PROTOCOLS["generic"]
    assert callable(per_image) and callable(aggregate)
    with pytest.raises(InputError, match="unknown evaluation protocol"):
        evaluate_protocol("kitti2020", [])
    with pytest.raises(InputError, match="expected"):
        evaluate_protocol("generic", [(np.ones(2),)])
    assert evaluate_protocol("eth3d", iter([])) == {"n_images": 0}
    out = evaluate_protocol("generic", ((np.ones(2), np.ones(2)) for _ in range(3)))
    assert out["n_images"] == 3 and out["all/n"] == 6
