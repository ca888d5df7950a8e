"""``madis-stereo evaluate`` on generated benchmark layouts: JSON numbers equal the metrics library on the same
predictions, and the submission files follow each benchmark's layout."""

from __future__ import annotations

import json
import re

import data_layouts as layouts  # noqa: E402
import numpy as np
import pytest
from tools_helpers import cli, make_tiny_checkpoint, run_cli

import madis_stereo as ms
from madis_stereo.data import build_dataset  # noqa: E402
from madis_stereo.data import formats as data_io  # noqa: E402
from madis_stereo.evaluation.protocols import PROTOCOLS, evaluate_protocol

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("eval") / "tiny.safetensors")


def _predictions(ckpt, spec, overlap=0.7):
    """The predictions ``evaluate`` makes, computed here with the library (same settings, same process)."""
    predictor = ms.Predictor(ms.load_model(ckpt), overlap=overlap, device="cpu")
    dataset = build_dataset(spec)
    return dataset, {s["name"]: predictor(s["left"], s["right"]).disparity for s in dataset}


def _assert_same(got, expected):
    assert set(got) >= set(expected)
    for key, value in expected.items():
        if value is None or (isinstance(value, float) and np.isnan(value)):
            assert got[key] is None, key
        else:
            assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


def test_kitti2015_json_equals_library_and_submission_layout(ckpt, tmp_path):
    layout = layouts.make_kitti2015(tmp_path / "kitti")
    out, sub = tmp_path / "results.json", tmp_path / "submission"
    proc = cli("evaluate", "--checkpoint", ckpt, "--dataset", "kitti2015", "--root", layout.root, "--out", out,
               "--submission", sub, "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    dataset, preds = _predictions(ckpt, layout.spec("train"))
    samples = [(preds[s["name"]], s["disparity"], s["nonocc"]) for s in dataset]
    _assert_same(report["aggregate"], evaluate_protocol("kitti2015", samples))
    assert report["protocol"] == "kitti2015" and report["n_images"] == 3
    assert [r["name"] for r in report["per_image"]] == ["000000_10", "000001_10", "000002_10"]
    first = dataset[0]
    _assert_same(report["per_image"][0], PROTOCOLS["kitti2015"].per_image(preds["000000_10"], first["disparity"],
                                                                          first["nonocc"]))
    assert report["settings"]["crop"] == [64, 128] and report["settings"]["overlap"] == 0.7
    # the printed table shows D1-all for both regions
    assert "d1_all" in proc.stdout and "noc" in proc.stdout
    # submission: disp_0/<frame>_10.png, uint16 d * 256
    assert sorted(p.relative_to(sub).as_posix() for p in sub.rglob("*") if p.is_file()) == [
        "disp_0/000000_10.png", "disp_0/000001_10.png", "disp_0/000002_10.png"]
    png = data_io.read_kitti_disparity(sub / "disp_0" / "000001_10.png")
    ok = np.isfinite(png)
    np.testing.assert_allclose(png[ok], preds["000001_10"][ok], atol=1 / 512 + 1e-6)


def test_eth3d_real_process_submission_and_numbers(ckpt, tmp_path):
    layout = layouts.make_eth3d(tmp_path / "eth3d")
    out, sub = tmp_path / "eth3d.json", tmp_path / "sub"
    proc = run_cli("evaluate", "--checkpoint", ckpt, "--dataset", "eth3d", "--root", layout.root, "--out", out,
                   "--submission", sub, "--device", "cpu", "--overlap", "0.5")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    names = ["delivery_area_1l", "electro_1l"]
    assert sorted(p.name for p in (sub / "low_res_two_view").iterdir()) == [f"{n}.{e}" for n in names
                                                                            for e in ("pfm", "txt")]
    for record in report["per_image"]:
        text = (sub / "low_res_two_view" / f"{record['name']}.txt").read_text()
        assert text.startswith("runtime ") and float(text.split()[1]) == pytest.approx(record["runtime_s"], abs=1e-5)
    # the numbers equal the library's on the submitted PFMs (the exact float32 predictions)
    dataset = build_dataset(layout.spec("train"))
    samples = [(data_io.read_pfm(sub / "low_res_two_view" / f"{s['name']}.pfm"), s["disparity"], s["nonocc"])
               for s in dataset]
    expected = evaluate_protocol("eth3d", samples)
    _assert_same(report["aggregate"], expected)
    assert {"all/bad_1.0", "noc/bad_1.0", "all/avgerr", "noc/rms", "all/a50", "noc/a99"} <= set(expected)
    assert "error" not in proc.stderr
    assert re.search(r"evaluate finished\n  dataset +eth3d \(train\) at \S+, protocol eth3d\n(.*\n)*  results +\S+",
                     proc.stderr)
    assert "bad_0.5" in proc.stdout


def test_middlebury_train_and_test_submission(ckpt, tmp_path):
    layout = layouts.make_middlebury(tmp_path / "mb")
    out, sub = tmp_path / "mb.json", tmp_path / "sub"
    proc = cli("evaluate", "--checkpoint", ckpt, "--dataset", "middlebury", "--root", layout.root, "--set",
               "resolution=Q", "--out", out, "--submission", sub, "--algo", "MaDisTiny", "--max-images", "1",
               "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["n_images"] == 1 and report["per_image"][0]["name"] == "Adirondack"
    pfm = data_io.read_pfm(sub / "trainingQ" / "Adirondack" / "disp0MaDisTiny.pfm")
    sample = build_dataset(layout.spec("train"))[0]
    expected = evaluate_protocol("middlebury", [(pfm, sample["disparity"], sample["nonocc"], {"max_disparity": 280})])
    _assert_same(report["aggregate"], expected)
    assert float((sub / "trainingQ" / "Adirondack" / "timeMaDisTiny.txt").read_text()) > 0
    # test split: no ground truth, submission only
    proc = cli("evaluate", "--checkpoint", ckpt, "--dataset", "middlebury", "--root", layout.root, "--split", "test",
               "--set", "resolution=Q", "--submission", sub, "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert "no ground truth" in proc.stdout
    assert sorted(p.name for p in (sub / "testQ" / "Australia").iterdir()) == ["disp0MaDis.pfm", "timeMaDis.txt"]


def test_missing_dataset_root_and_bad_checkpoint(ckpt, tmp_path):
    missing = tmp_path / "no_such_kitti"
    proc = cli("evaluate", "--checkpoint", ckpt, "--dataset", "kitti2015", "--root", missing)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"madis-stereo evaluate: error: {missing}") and "not found" in proc.stderr
    layout = layouts.make_eth3d(tmp_path / "eth3d")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"PK\x03\x04 truncated zip")
    proc = cli("evaluate", "--checkpoint", bad, "--dataset", "eth3d", "--root", layout.root)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"madis-stereo evaluate: error: {bad}: truncated or corrupt PyTorch file")
    proc = cli("evaluate", "--checkpoint", ckpt, "--dataset", "sceneflow", "--root", tmp_path, "--submission", "x")
    assert proc.returncode == 2 and "no submission format for 'sceneflow'" in proc.stderr
