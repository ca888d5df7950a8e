"""``madis-stereo data make-synthetic``: the synthetic world written in each documented layout reads back
through our own dataset readers with the same images, disparity and occlusion mask."""

from __future__ import annotations

import numpy as np
import pytest
from tools_helpers import cli

from madis_stereo.app.pairs import find_pairs
from madis_stereo.data import build_dataset
from madis_stereo.data.synthetic import SyntheticConfig, SyntheticStereo
from madis_stereo.data.synthetic.disk import LAYOUTS, read_spec, write_synthetic

SMALL = {"size": (48, 96), "max_disparity": 12.0, "seed": 5}


@pytest.mark.parametrize("layout", sorted(set(LAYOUTS) - {"pairs"}))
def test_round_trip_through_our_readers(tmp_path, layout):
    config = SyntheticConfig(**SMALL)
    names = write_synthetic(tmp_path / layout, layout, 2, config)
    dataset = build_dataset(read_spec(layout, tmp_path / layout))
    assert [dataset[i]["name"] for i in range(len(dataset))] == names
    world = SyntheticStereo(config)
    kitti = layout.startswith("kitti")
    for i in range(2):
        got, expected = dataset[i], world.render(i)
        np.testing.assert_array_equal(got["left"], expected.left)
        np.testing.assert_array_equal(got["right"], expected.right)
        visible = expected.disparity >= 1 / 256 if kitti else np.ones(expected.disparity.shape, bool)
        assert np.isfinite(got["disparity"][visible]).all()
        np.testing.assert_allclose(got["disparity"][visible], expected.disparity[visible], atol=1 / 512 if kitti else 0)
        if layout == "folder":
            assert got["nonocc"] is None
        else:
            np.testing.assert_array_equal(got["nonocc"], expected.nonocc & visible)
        if layout in ("middlebury", "eth3d"):
            calib = got["calib"]
            assert calib["cam0"][0, 0] == 96 and calib["baseline"] == 100 and calib["ndisp"] == 13


def test_pairs_layout_is_what_predict_pairs(tmp_path):
    names = write_synthetic(tmp_path / "p", "pairs", 3, SyntheticConfig(**SMALL))
    pairs = find_pairs([str(tmp_path / "p"), str(tmp_path / "p")])
    assert [(p.left.name, p.right.name) for p in pairs] == [(f"{n}_left.png", f"{n}_right.png") for n in names]
    assert len(build_dataset(read_spec("pairs", tmp_path / "p"))) == 3


def test_cli_writes_and_data_check_reads(tmp_path):
    out = tmp_path / "kitti"
    proc = cli("data", "make-synthetic", "--layout", "kitti2015", "--out", out, "--count", 2, "--size", 48, 96,
               "--set", "max_disparity=12", "--set", "seed=3")
    assert proc.returncode == 0, proc.stderr
    assert f"madis-stereo data check --dataset kitti2015 --root {out}" in proc.stdout
    check = cli("data", "check", "--dataset", "kitti2015", "--root", out, "--samples", "0", "--verify")
    assert check.returncode == 0 and "2 frames with ground truth" in check.stdout
    again = cli("data", "make-synthetic", "--layout", "folder", "--out", out, "--count", 1)
    assert again.returncode == 2 and "folder is not empty" in again.stderr
    bad = cli("data", "make-synthetic", "--layout", "kitti2015", "--out", tmp_path / "x", "--count", 1,
              "--set", "max_disparity=300")
    assert bad.returncode == 2 and "does not fit KITTI's uint16 PNG" in bad.stderr
