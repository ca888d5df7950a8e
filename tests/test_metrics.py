"""stereo_metrics and format_table: every definition pinned on hand-built arrays."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from madis_stereo.errors import InputError
from madis_stereo.evaluation.metrics import stereo_metrics
from madis_stereo.utils.tables import format_table

KEYS = ["epe", "rmse", "bad_0.5", "bad_1", "bad_2", "bad_3", "bad_4", "d1", "invalid_pred", "n_valid"]


def test_keys_and_python_floats():
    out = stereo_metrics(np.ones((2, 2)), np.ones((2, 2)))
    assert list(out) == KEYS
    assert all(type(v) in (float, int) for v in out.values())
    assert out["epe"] == 0.0 and out["d1"] == 0.0 and out["n_valid"] == 4


def test_bad_x_is_strictly_greater_and_epe_rmse():
    gt = np.full(5, 10.0)
    pred = gt + np.array([0.5, 1.0, 2.0, 3.0, 4.0])  # errors exactly on each threshold
    out = stereo_metrics(pred, gt)
    assert out["bad_0.5"] == pytest.approx(80.0)
    assert out["bad_1"] == pytest.approx(60.0)
    assert out["bad_2"] == pytest.approx(40.0)
    assert out["bad_3"] == pytest.approx(20.0)
    assert out["bad_4"] == pytest.approx(0.0)
    assert out["epe"] == pytest.approx(2.1)
    assert out["rmse"] == pytest.approx(math.sqrt((0.25 + 1 + 4 + 9 + 16) / 5))


def test_d1_needs_both_conditions():
    # error 4 px on gt 100 is only 4 % -> not D1; error 3.5 px on gt 10 is 35 % -> D1
    out = stereo_metrics(np.array([104.0, 13.5]), np.array([100.0, 10.0]))
    assert out["d1"] == pytest.approx(50.0)
    assert out["bad_3"] == pytest.approx(100.0)  # both above 3 px
    # error 2.9 px on gt 10 (29 %) is below 3 px -> not D1
    assert stereo_metrics(np.array([12.9]), np.array([10.0]))["d1"] == 0.0
    # negative gt: the relative test uses |gt|
    assert stereo_metrics(np.array([-13.5]), np.array([-10.0]))["d1"] == 100.0


def test_non_finite_predictions_are_errors_but_not_in_epe():
    gt = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    pred = np.array([1.0, np.nan, np.inf, -np.inf, 5.25])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = stereo_metrics(pred, gt)
    for key in ("bad_0.5", "bad_1", "bad_2", "bad_3", "bad_4", "d1"):
        assert out[key] == pytest.approx(60.0), key
    assert out["invalid_pred"] == pytest.approx(60.0)
    assert out["epe"] == pytest.approx(0.125)
    assert out["rmse"] == pytest.approx(math.sqrt(0.0625 / 2))
    assert out["n_valid"] == 5


def test_all_predictions_missing():
    out = stereo_metrics(np.full(3, np.nan), np.ones(3))
    assert out["bad_1"] == 100.0 and out["d1"] == 100.0 and out["invalid_pred"] == 100.0
    assert math.isnan(out["epe"]) and math.isnan(out["rmse"])


def test_invalid_gt_and_valid_mask():
    gt = np.array([[1.0, np.inf], [np.nan, 4.0]])
    pred = np.array([[1.0, 100.0], [100.0, 9.0]])
    out = stereo_metrics(pred, gt)
    assert out["n_valid"] == 2 and out["bad_1"] == pytest.approx(50.0) and out["epe"] == pytest.approx(2.5)
    valid = np.array([[True, True], [True, False]])
    out = stereo_metrics(pred, gt, valid)
    assert out["n_valid"] == 1 and out["bad_1"] == 0.0
    # uint8 masks (0/255) work too
    assert stereo_metrics(pred, gt, valid.astype(np.uint8) * 255)["n_valid"] == 1


def test_empty_valid_set_gives_nan_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = stereo_metrics(np.ones((3, 3)), np.full((3, 3), np.inf))
        masked = stereo_metrics(np.ones(3), np.ones(3), np.zeros(3, dtype=bool))
    for res in (out, masked):
        assert res["n_valid"] == 0
        assert all(math.isnan(v) for k, v in res.items() if k != "n_valid")


def test_torch_tensors_and_leading_singleton_dims():
    gt = np.array([[10.0, 20.0], [30.0, 40.0]])
    pred = torch.tensor(gt + [[0.0, 2.0], [0.0, 0.0]]).reshape(1, 1, 2, 2).to(torch.bfloat16)
    out = stereo_metrics(pred, torch.tensor(gt), torch.ones(2, 2, dtype=torch.bool))
    assert out["bad_1"] == pytest.approx(25.0) and out["n_valid"] == 4


def test_shape_mismatch_is_an_input_error():
    with pytest.raises(InputError, match="same shape"):
        stereo_metrics(np.ones((2, 3)), np.ones((3, 2)))
    with pytest.raises(InputError, match="valid"):
        stereo_metrics(np.ones((2, 2)), np.ones((2, 2)), np.ones((3, 3), dtype=bool))


def test_format_table():
    rows = [{"model": "sgbm", "bad_2": 20.0085, "n": 343274}, {"model": "madis", "bad_2": float("nan")}]
    text = format_table(rows, ["model", "bad_2", "n"])
    assert text.splitlines() == [
        "model  bad_2       n",
        "-----  -----  ------",
        "sgbm   20.01  343274",
        "madis    nan       -",
    ]
    assert format_table(rows, float_format=".1f").splitlines()[2] == "sgbm    20.0  343274"


def test_public_api_export():
    import madis_stereo as ms

    assert ms.stereo_metrics is stereo_metrics
