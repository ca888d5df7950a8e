"""Mean attention distance: known answers on hand-made attention patterns and on a model with forced
uniform attention, plus the ``analyze attention-distance`` command on a real (CroCo fixture) checkpoint."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from tools_helpers import run_cli, stereo_images, write_pair

import madis_stereo as ms
from madis_stereo.inference.attention import attention_distance, fit_to_crop, head_distances, token_distances

PATCH = 16


pytestmark = pytest.mark.usefixtures("one_thread")


def test_uniform_attention_on_a_2x3_grid():
    # 6 tokens at (r, c), r in {0, 1}, c in {0, 1, 2}. Summed over the 36 ordered pairs, the distances within a
    # row add up to 0+1+2 + 1+0+1 + 2+1+0 = 8 (two rows: 16) and across rows to 3 * 1 + 4 * sqrt(2) + 2 * sqrt(5)
    # (twice), so MAD = (22 + 8 sqrt(2) + 4 sqrt(5)) / 36 patches.
    expected = (22 + 8 * math.sqrt(2) + 4 * math.sqrt(5)) / 36 * PATCH
    weights = torch.full((1, 2, 6, 6), 1 / 6, dtype=torch.float64)
    mad = head_distances(weights, token_distances(2, 3, PATCH))
    assert mad.shape == (1, 2)
    assert mad[0, 0].item() == pytest.approx(expected, rel=1e-12)


def test_self_and_neighbour_attention():
    rows, cols = 3, 4
    n = rows * cols
    distances = token_distances(rows, cols, PATCH)
    identity = torch.eye(n)[None, None]
    neighbour = torch.zeros(n, n)
    for q in range(n):
        r, c = divmod(q, cols)
        neighbour[q, r * cols + (c + 1 if c + 1 < cols else c - 1)] = 1.0  # the last column looks left
    below = torch.zeros(n, n)
    for q in range(n):
        r, c = divmod(q, cols)
        below[q, (r + 1 if r + 1 < rows else r - 1) * cols + c] = 1.0
    weights = torch.stack([identity[0, 0], neighbour, below])[None]  # [1, 3 heads, n, n]
    mad = head_distances(weights, distances)[0].tolist()
    assert mad == pytest.approx([0.0, PATCH, PATCH])
    with pytest.raises(ms.InputError, match="do not match"):
        head_distances(weights, token_distances(2, 2))


def _uniform_model() -> ms.StereoModel:
    """The tiny model with zero query/key projections: every attention row is uniform."""
    model = ms.StereoModel(ms.ModelConfig.preset("tiny", crop=(64, 128)))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".attn.qkv." in name:
                param[: 2 * param.shape[0] // 3].zero_()  # q and k rows of the fused projection
            if ".cross_attn.projq." in name or ".cross_attn.projk." in name:
                param.zero_()
    return model.eval()


def _brute_force_uniform_mad(rows: int, cols: int) -> float:
    pos = [(r, c) for r in range(rows) for c in range(cols)]
    total = sum(math.dist(p, q) for p in pos for q in pos)
    return total / len(pos) ** 2 * PATCH


def test_model_with_uniform_attention_gives_the_grid_answer():
    model = _uniform_model()
    left, right = stereo_images(70, 150)
    result = attention_distance(model, [(left, right), (right, left)])
    expected = _brute_force_uniform_mad(64 // PATCH, 128 // PATCH)  # the crop's 4 x 8 grid
    assert set(result) == {"encoder", "decoder_self", "decoder_cross"}
    for kind, depth in (("encoder", 4), ("decoder_self", 4), ("decoder_cross", 4)):
        assert len(result[kind]) == depth and all(len(heads) == 4 for heads in result[kind])
        np.testing.assert_allclose(np.array(result[kind]), expected, rtol=1e-6)
    both = attention_distance(model, [(left, right)], encoder_views="both", crop=(32, 64))
    np.testing.assert_allclose(np.array(both["encoder"]), _brute_force_uniform_mad(2, 4), rtol=1e-6)


def test_encoder_uses_the_left_half_of_the_batch(monkeypatch):
    """Feed the capture callback a batch whose left half attends to itself and right half uniformly."""
    model = ms.StereoModel(ms.ModelConfig.preset("tiny", crop=(64, 128))).eval()
    n = 4 * 8

    def fake_capture(fn):
        import contextlib

        @contextlib.contextmanager
        def ctx():
            weights = torch.cat([torch.eye(n).expand(1, 4, n, n), torch.full((1, 4, n, n), 1 / n)])
            fn("enc_blocks.0.attn", weights)
            yield

        return ctx()

    monkeypatch.setattr(model, "capture_attention", fake_capture)
    left, right = stereo_images(64, 128)
    assert attention_distance(model, [(left, right)])["encoder"] == [[0.0] * 4]
    both = attention_distance(model, [(left, right)], encoder_views="both")["encoder"][0]
    assert both == pytest.approx([_brute_force_uniform_mad(4, 8) / 2] * 4)


def test_fit_to_crop_keeps_aspect_and_centres():
    image = np.zeros((50, 300, 3), np.uint8)
    image[:, 140:160] = 255  # a bright stripe in the middle
    x = fit_to_crop(image, (64, 128))
    assert x.shape == (1, 3, 64, 128)
    # scaled by 64/50 to 64 x 384, then the central 128 columns kept: the stripe lands at the centre
    column = x[0, 0, 32]
    assert column[64] > column[0] and column[64] > column[-1]


def test_attention_distance_needs_pairs():
    with pytest.raises(ms.InputError, match="at least one"):
        attention_distance(_uniform_model(), [])


def test_analyze_command_on_the_croco_fixture(tmp_path, croco_dir):
    left, right = write_pair(tmp_path, "scene", height=80, width=150)
    ckpt = croco_dir / "croco_stereo_tiny.pth"
    out_json, out_png = tmp_path / "mad.json", tmp_path / "mad.png"
    tiny = tmp_path / "tiny.safetensors"
    ms.save_model(_uniform_model(), tiny)
    proc = run_cli("analyze", "attention-distance", "--checkpoint", ckpt, left, right, "--compare", tiny,
                   "--json", out_json, "--plot", out_png, "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out_json.read_text())
    assert report["crop"] == [64, 128] and report["unit"] == "pixels"
    croco = report["models"]["croco_stereo_tiny"]
    assert [len(croco[k]) for k in ("encoder", "decoder_self", "decoder_cross")] == [4, 8, 8]
    assert all(len(heads) == 4 for layers in croco.values() for heads in layers)
    largest = math.dist((0, 0), (3, 7)) * PATCH  # the 4 x 8 grid's diagonal
    assert all(0 < v < largest for layers in croco.values() for heads in layers for v in heads)
    np.testing.assert_allclose(np.array(report["models"]["tiny"]["decoder_cross"]), _brute_force_uniform_mad(4, 8),
                               rtol=1e-6)
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "croco_stereo_tiny: mean over heads" in proc.stdout


