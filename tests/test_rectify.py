"""The rig test: raw images of an invented distorted, rotated rig, rectified back, depth in the original
left camera compared with the truth of the synthetic world."""

from __future__ import annotations

import numpy as np
import pytest
from rig_helpers import depth_relative_error, rig_calibration, rig_pair

from madis_stereo.geometry.rectify import Rectifier, vertical_disparity

SIZE = (256, 128)  # width, height


@pytest.fixture(scope="module")
def rig():
    calib = rig_calibration(*SIZE)
    return calib, Rectifier(calib), rig_pair(calib, index=0)


def test_true_disparity_gives_true_depth_in_original_left_frame(rig):
    calib, rectifier, pair = rig
    view = rectifier.view(*SIZE)
    error = depth_relative_error(view.depth(pair.disparity), pair)
    assert error.size > 0.9 * SIZE[0] * SIZE[1] * 0.8  # most of the image is covered
    assert np.median(error) < 0.01
    # the same disparity read as if the rectified image were the original one misses by far more
    naive = depth_relative_error(view.rectified_camera().depth(pair.disparity), pair)
    assert np.median(naive) > 3 * np.median(error) + 1e-4


def test_points_are_in_original_left_frame(rig):
    calib, rectifier, pair = rig
    view = rectifier.view(*SIZE)
    points, colors = view.points(pair.disparity, pair.raw_left)
    assert points.shape[1] == 3 and colors.shape == points.shape
    # re-projecting the points with the raw left camera lands on the pixel they came from
    import cv2

    uv, _ = cv2.projectPoints(points.astype(np.float64), np.zeros(3), np.zeros(3), calib.K1, calib.D1)
    v, u = np.nonzero(np.isfinite(view.depth(pair.disparity)))
    np.testing.assert_allclose(uv.reshape(-1, 2), np.stack([u, v], 1), atol=0.05)


def test_rectification_removes_vertical_disparity(rig):
    _, rectifier, pair = rig
    before = vertical_disparity(pair.raw_left, pair.raw_right)
    rect_left, rect_right = rectifier.rectify(pair.raw_left, pair.raw_right)
    after = vertical_disparity(rect_left, rect_right)
    assert before.matches >= 10 and after.matches >= 10
    assert before.median > 1.0
    assert after.median < 0.5


def test_bundled_model_depth_error_follows_its_disparity_error(rig):
    import madis_stereo as ms

    _, rectifier, pair = rig
    view = rectifier.view(*SIZE)
    rect_left, rect_right = rectifier.rectify(pair.raw_left, pair.raw_right)
    pred = ms.predict(ms.load_default_model(), rect_left, rect_right)
    depth_error = np.median(depth_relative_error(view.depth(pred.disparity), pair))
    # Z_pred / Z_true - 1 = d_true / d_pred - 1: the relative depth error its disparity error predicts
    expected = np.median(np.abs(pred.disparity - pair.disparity) / np.maximum(pred.disparity, 1e-3))
    assert depth_error == pytest.approx(expected, rel=0.1)
