"""Benchmark datasets read the right files from each benchmark's exact layout, with the right invalid pixels."""

from __future__ import annotations

import dataclasses
import inspect
import shutil

import numpy as np
import pytest
from data_layouts import (
    LAYOUTS,
    make_eth3d,
    make_folder,
    make_kitti2015,
    make_middlebury,
    make_middlebury_scenes,
    make_sceneflow,
)

from madis_stereo.data import DATASETS, base, build_dataset, build_mixture, dataset_keys, read_calib, read_disparity
from madis_stereo.errors import ConfigError, DataError


def _check_samples(ds, expected: dict) -> None:
    """Every sample equals the written files; invalid GT is +inf; dtypes and shapes as documented."""
    assert len(ds) == len(expected)
    samples = [ds[i] for i in range(len(ds))]
    assert sorted(s["name"] for s in samples) == sorted(expected)
    for sample in samples:
        want = expected[sample["name"]]
        assert sample["left"].dtype == np.uint8 and sample["left"].ndim == 3 and sample["left"].shape[2] == 3
        np.testing.assert_array_equal(sample["left"], want["left"])
        np.testing.assert_array_equal(sample["right"], want["right"])
        if want["disparity"] is None:
            assert sample["disparity"] is None
        else:
            assert sample["disparity"].dtype == np.float32
            np.testing.assert_array_equal(np.isinf(sample["disparity"]), ~np.isfinite(want["disparity"]))
            np.testing.assert_allclose(sample["disparity"], want["disparity"], rtol=0, atol=1e-6)
        if want["nonocc"] is None:
            assert sample["nonocc"] is None
        else:
            assert sample["nonocc"].dtype == bool
            np.testing.assert_array_equal(sample["nonocc"], want["nonocc"])


@pytest.mark.parametrize("layout_name", sorted(LAYOUTS))
@pytest.mark.parametrize("split", ["train", "test"])
def test_each_layout_reads_the_right_files(tmp_path, layout_name, split):
    layout = LAYOUTS[layout_name](tmp_path / layout_name)
    if split not in layout.frames:
        pytest.skip(f"{layout_name} has no {split} split")
    ds = build_dataset(layout.spec(split))
    _check_samples(ds, layout.frames[split])
    text = ds.describe()
    assert str(layout.root) in text and f"{len(ds)} frames" in text


def test_kitti_uses_only_frame_10_and_noc_mask(tmp_path, monkeypatch):
    layout = make_kitti2015(tmp_path / "kitti")
    ds = build_dataset(layout.spec("train", gt="noc"))
    reads = []
    monkeypatch.setattr(base, "read_disparity", lambda path: reads.append(path) or read_disparity(path))
    sample = ds[0]
    assert len(reads) == 1  # the noc GT file is also the mask: decoded once
    assert sample["name"].endswith("_10")
    np.testing.assert_array_equal(np.isfinite(sample["disparity"]), sample["nonocc"])  # noc GT is the mask
    assert "KITTI 2015 (train)" in ds.describe() and "train: 3" in ds.describe()


def test_calib_is_read_where_the_benchmark_has_one(tmp_path):
    eth = build_dataset(make_eth3d(tmp_path / "eth").spec())
    assert eth[0]["calib"]["baseline"] == pytest.approx(59.8367)
    mid = build_dataset(make_middlebury(tmp_path / "mid").spec())
    assert mid[0]["calib"]["ndisp"] == 280 and mid[0]["calib"]["cam0"].shape == (3, 3)
    assert build_dataset(make_kitti2015(tmp_path / "k").spec())[0]["calib"] is None
    assert read_calib(tmp_path / "eth" / "two_view_training" / "electro_1l" / "calib.txt")["ndisp"] == 64


def test_training_samples_skip_the_mask_and_calib_files(tmp_path):
    eth = build_dataset(make_eth3d(tmp_path / "eth").spec())
    for path in (tmp_path / "eth").rglob("*"):
        if path.name in ("mask0nocc.png", "calib.txt"):
            path.write_bytes(b"not read for training")
    with pytest.raises(DataError):
        eth[0]
    sample, full = eth.get(0, epoch=3), make_eth3d(tmp_path / "again").frames["train"]
    assert sample["nonocc"] is None and sample["calib"] is None
    np.testing.assert_array_equal(sample["left"], full[sample["name"]]["left"])
    np.testing.assert_array_equal(sample["disparity"], eth.get(0)["disparity"])
    with pytest.raises(IndexError):
        eth.get(len(eth))


def test_sceneflow_options(tmp_path):
    layout = make_sceneflow(tmp_path / "sf")
    spec = layout.spec()
    things = build_dataset({**spec, "subset": "flyingthings3d"})
    assert sorted(things[i]["name"] for i in range(len(things))) == [
        "flyingthings3d/TRAIN/A/0000/0006", "flyingthings3d/TRAIN/A/0000/0007", "flyingthings3d/TRAIN/B/0001/0006"]
    assert len(build_dataset({**spec, "subset": "flyingthings3d", "parts": ["B"]})) == 1
    # a single subset may be given as root itself
    assert len(build_dataset({**spec, "root": str(layout.root / "Driving"), "subset": "driving"})) == 2
    final = build_dataset({**spec, "subset": "monkaa", "pass": "final"})
    clean = build_dataset({**spec, "subset": "monkaa"})
    assert not np.array_equal(final[0]["left"], clean[0]["left"])
    np.testing.assert_array_equal(final[0]["disparity"], clean[0]["disparity"])
    # final pass exists only for Monkaa: the others are reported, not silently dropped
    text = build_dataset({**spec, "pass": "final"}).describe()
    assert "monkaa: 1" in text and "frames_finalpass" in text
    with pytest.raises(DataError, match="no test split"):
        build_dataset({**spec, "split": "test", "subset": "monkaa"})
    with pytest.raises(ConfigError, match="pass.*clean, final"):
        build_dataset({**spec, "pass": "dirty"})


def test_middlebury_resolutions_and_scene_layouts(tmp_path):
    layout = make_middlebury(tmp_path / "mid")
    half = build_dataset(layout.spec(resolution="H"))
    assert half[0]["left"].shape == layout.frames["train"][half[0]["name"]]["left"].shape
    assert "trainH" in half.describe()
    with pytest.raises(DataError, match="trainingF.*not found"):
        build_dataset(layout.spec(resolution="F"))
    assert len(build_dataset(layout.spec(scenes=["Moto*"]))) == 1

    scenes = make_middlebury_scenes(tmp_path / "scenes")
    ds = build_dataset(scenes.spec())
    _check_samples(ds, scenes.frames["train"])
    assert "Middlebury scenes" in ds.describe()
    exposure = build_dataset(scenes.spec(right_image="im1E.png"))
    assert len(exposure) == 2 and "skipped 1 frame" in exposure.describe()  # the 2021 scene has no im1E
    sample = exposure[0]
    np.testing.assert_array_equal(sample["right"], scenes.frames["train"]["Adirondack-perfect"]["im1E"])
    with pytest.raises(DataError, match="no test split"):
        build_dataset(scenes.spec("test"))


def test_folder_dataset_matching_and_formats(tmp_path):
    for fmt in ("pfm", "png", "npy", "none"):
        layout = make_folder(tmp_path / fmt, disparity=fmt)
        ds = build_dataset(layout.spec())
        _check_samples(ds, layout.frames["train"])
        text = ds.describe()
        assert "1 left file(s) without a match" in text and "lonely_left.png" in text
        assert "1 right file(s) without a match" in text and "lonely_right.png" in text
    # keys come from the wildcard part of the pattern, so per-scene folders work too
    root = tmp_path / "scenes"
    for scene in ("bike", "chair"):
        (root / scene).mkdir(parents=True)
        for name in ("im0.png", "im1.png"):
            shutil.copy(tmp_path / "pfm" / "left" / "scene_a.png", root / scene / name)
    ds = build_dataset({"name": "folder", "root": str(root), "left": "*/im0.png", "right": "*/im1.png"})
    assert [ds[i]["name"] for i in range(len(ds))] == ["bike", "chair"]
    with pytest.raises(DataError, match="no complete folder frames"):
        build_dataset({"name": "folder", "root": str(root), "left": "*/im0.png", "right": "*/nothing.png"})


def test_missing_root_and_subfolders_are_named(tmp_path):
    with pytest.raises(DataError, match=r"nowhere.*folder not found"):
        build_dataset({"name": "kitti2015", "root": str(tmp_path / "nowhere")})
    kitti = make_kitti2015(tmp_path / "kitti")
    shutil.rmtree(kitti.root / "training" / "disp_occ_0")
    with pytest.raises(DataError, match=r"disp_occ_0: folder not found \(expected KITTI disparity"):
        build_dataset(kitti.spec())
    eth = make_eth3d(tmp_path / "eth")
    shutil.rmtree(eth.root / "two_view_training_gt")
    with pytest.raises(DataError, match="two_view_training_gt: folder not found"):
        build_dataset(eth.spec())
    assert len(build_dataset(eth.spec("test"))) == 1  # the test split needs no GT
    sf = make_sceneflow(tmp_path / "sf")
    shutil.rmtree(sf.root / "Monkaa" / "disparity")
    with pytest.raises(DataError, match=r"Monkaa/disparity: folder not found"):
        build_dataset(sf.spec())
    with pytest.raises(DataError, match="no complete SceneFlow"):
        build_dataset({"name": "sceneflow", "root": str(tmp_path / "eth")})


def test_missing_files_are_skipped_and_reported(tmp_path):
    layout = make_kitti2015(tmp_path / "kitti")
    (layout.root / "training" / "image_3" / "000001_10.png").unlink()
    (layout.root / "training" / "disp_noc_0" / "000002_10.png").unlink()
    ds = build_dataset(layout.spec())
    assert [ds[i]["name"] for i in range(len(ds))] == ["000000_10", "000002_10"]
    assert "skipped 1 frame(s) with missing files, e.g." in ds.describe()
    assert "image_3/000001_10.png" in ds.describe()
    assert ds[1]["nonocc"] is None  # the optional noc file is missing: no mask, not an error
    # a frame whose file is corrupt fails when it is read, naming the file
    (layout.root / "training" / "image_2" / "000000_10.png").write_bytes(b"broken")
    with pytest.raises(DataError, match="image_2/000000_10.png"):
        ds[0]


def test_spec_errors_name_the_key(tmp_path):
    root = str(make_kitti2015(tmp_path / "kitti").root)
    with pytest.raises(ConfigError, match="unknown config key.*'colour'"):
        build_dataset({"name": "kitti2015", "root": root, "colour": True})
    with pytest.raises(ConfigError, match="unknown dataset 'kitti'.*kitti2015"):
        build_dataset({"name": "kitti", "root": root})
    with pytest.raises(ConfigError, match="missing required key.*root"):
        build_dataset({"name": "kitti2015"})
    with pytest.raises(ConfigError, match="split.*train, test"):
        build_dataset({"name": "kitti2015", "root": root, "split": "val"})
    with pytest.raises(ConfigError, match="'sceneflow'.*unknown.*'pass_'.*valid keys:.* pass,"):
        build_dataset({"name": "sceneflow", "root": root, "pass_": "clean"})
    assert "pass" in dataset_keys("sceneflow")


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_spec_dataclass_mirrors_the_constructor(name):
    cls = DATASETS[name]
    if name == "synthetic":
        return  # SyntheticStereo takes its config dataclass itself
    params = inspect.signature(cls.__init__).parameters
    fields = {f.name: f.default for f in dataclasses.fields(cls.Spec)}
    assert list(fields) == [p for p in params if p != "self"]
    for key, default in fields.items():
        expected = params[key].default
        assert (default is dataclasses.MISSING and expected is inspect.Parameter.empty) or default == expected, key


def test_mixture_with_repeats(tmp_path):
    eth = make_eth3d(tmp_path / "eth")
    mid = make_middlebury(tmp_path / "mid")
    mixture = build_mixture([{**eth.spec(), "repeat": 3}, mid.spec()])
    assert len(mixture) == 3 * 2 + 2
    names = [mixture[i]["name"] for i in range(len(mixture))]
    assert names == ["delivery_area_1l", "electro_1l"] * 3 + ["Adirondack", "Motorcycle"]
    assert mixture[-1]["name"] == "Motorcycle"
    text = mixture.describe()
    assert "3 x ETH3D two-view (train)" in text and "1 x Middlebury MiddEval3" in text
    with pytest.raises(ConfigError, match="repeat must be an integer >= 1"):
        build_mixture([{**eth.spec(), "repeat": "2*3"}])
    with pytest.raises(ConfigError, match="repeat"):
        build_mixture([{**eth.spec(), "repeat": 0}])
    with pytest.raises(ConfigError, match="list of dataset specs"):
        build_mixture(eth.spec())
    with pytest.raises(IndexError):
        mixture[len(mixture)]


def test_mixture_gives_synthetic_fresh_scenes_per_repeat_and_epoch():
    mixture = build_mixture([{"name": "synthetic", "size": [16, 32], "max_disparity": 8, "length": 2,
                              "min_objects": 1, "max_objects": 2, "repeat": 2}])
    first, second = mixture.get(0), mixture.get(2)  # same scene index, other repeat
    assert first["name"] == "synthetic/0/0" and second["name"] == "synthetic/0/2"
    assert mixture.get(0, epoch=1)["name"] == "synthetic/0/4"
