"""Colour maps, error images, sheets, atomic PNG writing and the attention-distance plot."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from madis_stereo.app import visualize as vis
from madis_stereo.errors import InputError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_colorize_shape_dtype_and_invalid_black():
    disp = np.array([[0.0, 10.0, np.inf], [np.nan, 5.0, 20.0]], dtype=np.float32)
    rgb = vis.colorize_disparity(disp, vmax=20.0)
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    assert (rgb[0, 2] == 0).all() and (rgb[1, 0] == 0).all()
    assert rgb[1, 2, 0] > rgb[1, 2, 2]  # far end of the ramp is warm (red > blue)
    assert rgb[0, 0, 2] > rgb[0, 0, 0]  # near zero is cold


def test_fixed_range_gives_identical_colours_across_frames():
    frame_a = np.array([[1.0, 7.5, 30.0]])
    frame_b = np.array([[7.5, 100.0, -3.0]])  # a different value range
    a = vis.colorize(frame_a, vmin=0.0, vmax=30.0)
    b = vis.colorize(frame_b, vmin=0.0, vmax=30.0)
    assert (a[0, 1] == b[0, 0]).all()  # 7.5 -> same colour in both frames
    assert (a[0, 2] == b[0, 1]).all()  # values above vmax saturate to the same colour
    # automatic ranges would differ
    assert not (vis.colorize(frame_a)[0, 1] == vis.colorize(frame_b)[0, 0]).all()


def test_error_map_colours():
    gt = np.array([[10.0, 10.0, 10.0, np.inf, 10.0, 100.0]])
    pred = np.array([[10.0, 10.5, 100.0, 5.0, np.nan, 104.0]])  # r = 0, 1/6, 30 (saturated), -, inf, 0.8
    rgb = vis.error_map(pred, gt)
    assert rgb.shape == (1, 6, 3) and rgb.dtype == np.uint8
    assert (rgb[0, 3] == 0).all()  # no GT: black
    small, medium, large, missing = rgb[0, 0].astype(int), rgb[0, 1].astype(int), rgb[0, 2], rgb[0, 4]
    assert small[2] > small[0] and medium[2] > medium[0]  # small errors are blue
    assert large[0] > large[2] and (missing == large).all()  # large and missing: red
    assert rgb[0, 0].any()  # a perfect pixel is not black (black means "no GT")
    assert (vis.error_map(np.zeros((1, 1)), np.zeros((1, 1)))[0, 0] == rgb[0, 0]).all()  # also on gt = 0
    # same ratio, same colour: 4 px on gt 100 (r = 0.8) vs 0.8 * 3 px on gt 10 (r = 0.8)
    same = vis.error_map(np.array([[104.0, 12.4]]), np.array([[100.0, 10.0]]))
    assert (same[0, 0] == same[0, 1]).all()


def test_error_map_darkens_occluded_pixels():
    gt, pred = np.full((1, 2), 10.0), np.array([[10.0, 10.0]])
    rgb = vis.error_map(pred, gt, nonocc=np.array([[True, False]]))
    assert (rgb[0, 1] == rgb[0, 0] // 2).all()
    with pytest.raises(InputError, match="same shape"):
        vis.error_map(np.ones((2, 2)), np.ones((2, 3)))


def test_confidence_image():
    conf = np.array([[0.0, 1.0], [np.nan, 2.0]])
    rgb = vis.confidence_image(conf, vmin=0.0, vmax=2.0)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8 and (rgb[1, 0] == 0).all()


def test_side_by_side_layout_and_labels():
    a = np.full((20, 30, 3), 200, np.uint8)
    b = np.full((10, 40), 100, np.uint8)  # grey, smaller height, wider
    sheet = vis.side_by_side([a, b], None, pad=2)
    assert sheet.dtype == np.uint8 and sheet.shape == (2 + 20 + 2, 2 + 2 * (40 + 2), 3)
    assert (sheet[2, 2] == 200).all() and (sheet[2, 2 + 42] == 100).all()
    labelled = vis.side_by_side([a, b], ["left", "right"], pad=2)
    strip = labelled.shape[0] - sheet.shape[0]
    assert strip > 0 and labelled[:strip].max() > 0  # text drawn above the images
    assert (labelled[strip + 2, 2] == 200).all()
    grid = vis.side_by_side([a, a, a], ["1", "2", "3"], columns=2)
    assert grid.shape[1] < vis.side_by_side([a, a, a], ["1", "2", "3"]).shape[1]
    with pytest.raises(InputError, match="labels"):
        vis.side_by_side([a, b], ["only one"])
    with pytest.raises(InputError, match="uint8"):
        vis.side_by_side([a.astype(np.float32)], ["x"])


def test_save_png_roundtrip_and_atomic(tmp_path, monkeypatch):
    image = np.random.default_rng(0).integers(0, 255, (5, 7, 3), dtype=np.uint8)
    path = vis.save_png(tmp_path / "sub" / "out.png", image)
    assert np.array_equal(np.asarray(Image.open(path)), image)
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.png"]  # no temp file left behind
    deep = np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000
    assert np.array_equal(np.asarray(Image.open(vis.save_png(tmp_path / "d16.png", deep))), deep)

    # a failing write leaves the old file intact and no temporary file
    def broken_save(self, fp, *args, **kwargs):
        with open(fp, "wb") as handle:
            handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        vis.save_png(path, np.zeros((2, 2), np.uint8))
    monkeypatch.undo()
    assert np.array_equal(np.asarray(Image.open(path)), image)
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.png"]
    with pytest.raises(InputError, match="uint8"):
        vis.save_png(tmp_path / "bad.png", np.zeros((2, 2), np.float32))


def test_plot_attention_distance_writes_png(tmp_path):
    results = {
        "croco": {"encoder": [[10.0, 30.0, 50.0], [40.0, 60.0, 80.0]], "decoder_self": [[5.0, 6.0]],
                  "decoder_cross": [[1.0, 2.0], [3.0, 4.0]]},
        "madis": {"encoder": [[8.0, 9.0, 10.0], [11.0, 12.0, 13.0]]},
    }
    path = vis.plot_attention_distance(results, tmp_path / "mad.png", labels=["CroCo-Stereo", "MaDis-Stereo"])
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    width, height = Image.open(path).size
    assert width > 2 * height  # three subplots side by side
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mad.png"]
    with pytest.raises(InputError):
        vis.plot_attention_distance({}, tmp_path / "none.png")
    with pytest.raises(InputError, match="labels"):
        vis.plot_attention_distance(results, tmp_path / "x.png", labels=["one"])
