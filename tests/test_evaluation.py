"""``evaluate_dataset``: per-image and aggregate numbers equal the metrics library on the same predictions."""

from __future__ import annotations

import math

import numpy as np
import pytest

import madis_stereo as ms
from madis_stereo.evaluation.evaluate import EvaluationResult, SubmissionWriter, evaluate_dataset, protocol_for
from madis_stereo.evaluation.protocols import PROTOCOLS, evaluate_protocol
from madis_stereo.inference.predictor import Prediction


class NoisyPredictor:
    """Returns the GT (looked up by the left image) plus seeded noise: a known prediction per sample."""

    def __init__(self, dataset, noise=1.5):
        self.by_id = {id(s["left"]): s for s in dataset}
        self.noise = noise
        self.made = {}

    def __call__(self, left, right):
        sample = self.by_id[id(left)]
        rng = np.random.default_rng(len(self.made))
        gt = sample["disparity"]
        base = np.where(np.isfinite(gt), gt, 20.0) if gt is not None else np.full(left.shape[:2], 20.0)
        pred = (base + rng.normal(0, self.noise, base.shape)).astype(np.float32)
        self.made[sample["name"]] = pred
        return Prediction(pred, np.zeros_like(pred))


def _samples(n=3, h=20, w=30, with_gt=True):
    rng = np.random.default_rng(1)
    out = []
    for i in range(n):
        gt = rng.uniform(5, 60, (h, w)).astype(np.float32)
        gt[rng.random((h, w)) < 0.2] = np.inf
        nonocc = rng.random((h, w)) > 0.3
        out.append({"left": np.zeros((h, w, 3), np.uint8), "right": np.zeros((h, w, 3), np.uint8),
                    "disparity": gt if with_gt else None, "nonocc": nonocc if with_gt else None,
                    "name": f"scene{i}", "calib": {"ndisp": 50}})
    return out


@pytest.mark.parametrize("protocol", ["kitti2015", "kitti2012", "eth3d", "middlebury", "sceneflow", "generic"])
def test_numbers_equal_the_metrics_library(protocol):
    data = _samples()
    predictor = NoisyPredictor(data)
    result = evaluate_dataset(predictor, data, protocol)
    extra = [{"max_disparity": 50.0} if protocol == "middlebury" else {} for _ in data]
    expected = evaluate_protocol(protocol, [(predictor.made[s["name"]], s["disparity"], s["nonocc"], e)
                                            for s, e in zip(data, extra)])
    assert result.aggregate.keys() == expected.keys()
    for key, value in expected.items():
        assert result.aggregate[key] == pytest.approx(value, nan_ok=True), key
    single = PROTOCOLS[protocol].per_image(predictor.made["scene1"], data[1]["disparity"],
                                                      data[1]["nonocc"], **extra[1])
    record = result.per_image[1]
    assert record["name"] == "scene1" and record["runtime_s"] >= 0
    assert {k: record[k] for k in single} == pytest.approx(single, nan_ok=True)


def test_max_images_progress_and_json():
    data = _samples(4)
    seen = []
    result = evaluate_dataset(NoisyPredictor(data), data, "eth3d", max_images=2,
                              progress=lambda it: (seen.append(i) or i for i in it))
    assert seen == [0, 1] and [r["name"] for r in result.per_image] == ["scene0", "scene1"]
    assert result.aggregate["n_images"] == 2
    report = result.to_dict()
    assert report["n_images"] == 2 and report["protocol"] == "eth3d" and report["mean_runtime_s"] >= 0
    nan_free = EvaluationResult("generic", [{"name": "a", "runtime_s": 0.1, "all/epe": math.nan}]).to_dict()
    assert nan_free["per_image"][0]["all/epe"] is None  # NaN is not JSON


def test_samples_without_gt_give_no_metrics():
    data = _samples(2, with_gt=False)
    result = evaluate_dataset(NoisyPredictor(data), data, "kitti2015")
    assert result.aggregate == {}
    assert set(result.per_image[0]) == {"name", "runtime_s"}


def test_bad_arguments():
    data = _samples(1)
    with pytest.raises(ms.InputError, match="unknown evaluation protocol"):
        evaluate_dataset(NoisyPredictor(data), data, "kitti2099")
    with pytest.raises(ms.InputError, match="no samples"):
        evaluate_dataset(NoisyPredictor(data), [], "eth3d")
    with pytest.raises(ms.InputError, match="no submission format"):
        SubmissionWriter("sceneflow", "out")
    with pytest.raises(ms.InputError, match="algorithm name"):
        SubmissionWriter("middlebury", "out", algo="my algo")
    assert protocol_for("kitti2015") == "kitti2015" and protocol_for("folder") == "generic"


def test_submission_paths(tmp_path):
    assert SubmissionWriter("kitti2015", tmp_path).paths("000007_10") == [tmp_path / "disp_0" / "000007_10.png"]
    assert SubmissionWriter("kitti2012", tmp_path).paths("000007_10") == [tmp_path / "disp_0" / "000007_10.png"]
    assert SubmissionWriter("eth3d", tmp_path).paths("delivery_area_1l") == [
        tmp_path / "low_res_two_view" / "delivery_area_1l.pfm", tmp_path / "low_res_two_view" / "delivery_area_1l.txt"]
    mb = SubmissionWriter("middlebury", tmp_path, algo="MaDis", split="test", resolution="H")
    assert mb.paths("Australia") == [tmp_path / "testH" / "Australia" / "disp0MaDis.pfm",
                                     tmp_path / "testH" / "Australia" / "timeMaDis.txt"]
    train = SubmissionWriter("middlebury", tmp_path, split="train")
    assert train.paths("Adirondack/im1E")[0] == tmp_path / "trainingF" / "Adirondack_im1E" / "disp0MaDis.pfm"
