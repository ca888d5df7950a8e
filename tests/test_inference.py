"""Tiled inference and the high-level predictor."""

from __future__ import annotations

import contextlib
import math

import numpy as np
import pytest
import torch

import madis_stereo as ms
from madis_stereo.inference.tiling import tile_log_weights, tile_offsets


def test_tile_offsets_follow_croco_formula():
    assert tile_offsets(704, 704, 0.7) == [0]
    # 1 + ceil((1242 - 704) / (0.3 * 704)) = 1 + ceil(2.547) = 4 windows, evenly spaced
    assert tile_offsets(1242, 704, 0.7) == [0, 179, 359, 538]
    assert tile_offsets(375, 352, 0.7) == [0, 23]
    with pytest.raises(ms.InputError):
        tile_offsets(100, 128, 0.7)


def test_tile_weights_modes():
    c = torch.tensor([-1e6, -3.0, 0.0, 3.0, 1e6])
    # expsigmoid_15_3: weight exp(-30 (sigmoid(c / 3) - 1/2)), between e^-15 and e^15. The values by hand:
    # sigmoid(-1) = 1 / (1 + e) = 0.268941..., so c = -3 gives exp(30 * 0.231059) = exp(6.93177) = 1024.29...
    w = torch.exp(tile_log_weights(c, "conf_expsigmoid_15_3")).double()
    assert w.tolist() == pytest.approx([math.exp(15), 1024.29, 1.0, 1 / 1024.29, math.exp(-15)], rel=1e-5)
    # expbeta3: exp(-3 c); its log is what the blend uses, finite even where exp overflows
    assert tile_log_weights(c, "conf_expbeta3").tolist() == pytest.approx([3e6, 9.0, 0.0, -9.0, -3e6])
    with pytest.raises(ValueError, match="unknown confidence mode"):
        tile_log_weights(c, "bogus")


class ConstantModel(torch.nn.Module):
    """Predicts disparity = 10 px everywhere; records the window sizes it sees."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, left, right):
        self.seen.append(tuple(left.shape[-2:]))
        b, _, h, w = left.shape
        return ms.StereoOutput(torch.full((b, 1, h, w), 10.0), torch.zeros(b, 1, h, w))


def test_small_images_upscaled_by_the_larger_ratio():
    # 60 x 200 image, 64 x 128 window: the height is the binding side, factor 64/60 (CroCo would use 64/200
    # and then fail to fit the window)
    model = ConstantModel()
    left = torch.zeros(1, 3, 60, 200)
    disp, conf = ms.tiled_predict(model, left, left, crop=(64, 128), overlap=0.5)
    assert disp.shape == (1, 1, 60, 200) and conf.shape == (1, 60, 200)
    assert set(model.seen) == {(64, 128)}
    upscaled_w = round(200 * 64 / 60)
    assert torch.allclose(disp, torch.full_like(disp, 10.0 * 200 / upscaled_w), atol=1e-4)


def test_blending_prefers_confident_tiles():
    class TwoTiles(torch.nn.Module):
        def forward(self, left, right):  # tile content tells which window we are in
            b, _, h, w = left.shape
            first = left[:, 0, 0, 0] < 0.5
            disp = torch.where(first.view(b, 1, 1, 1), 1.0, 2.0).expand(b, 1, h, w)
            # channel 1 is a log-scale of the error: lower = surer; the first window is the surer one
            conf = torch.where(first.view(b, 1, 1, 1), -5.0, 5.0).expand(b, 1, h, w)
            return ms.StereoOutput(disp, conf)

    left = torch.zeros(1, 3, 32, 96)
    left[:, 0, 0, 32] = 1.0  # marks the second window (x = 32..96) through its first pixel
    disp, _ = ms.tiled_predict(TwoTiles(), left, left, crop=(32, 64), overlap=0.5)
    overlap = disp[0, 0, :, 32:64]
    assert torch.allclose(overlap, torch.ones_like(overlap), atol=1e-3)  # the sure tile's 1.0 wins
    assert torch.allclose(disp[0, 0, :, :32], torch.ones(32, 32))
    assert torch.allclose(disp[0, 0, :, 64:], torch.full((32, 32), 2.0))


def test_predict_on_uint8_arrays_any_size():
    model = ms.StereoModel(ms.ModelConfig.preset("tiny", crop=(64, 128))).eval()
    rng = np.random.default_rng(0)
    left = rng.integers(0, 255, (70, 150, 3), dtype=np.uint8)
    right = rng.integers(0, 255, (70, 150, 3), dtype=np.uint8)
    pred = ms.predict(model, left, right)
    assert pred.disparity.shape == (70, 150) and pred.disparity.dtype == np.float32
    assert pred.confidence.shape == (70, 150)
    gray = ms.predict(model, left.mean(2).astype(np.uint8), right.mean(2).astype(np.uint8))
    assert gray.disparity.shape == (70, 150)
    bf16 = ms.Predictor(model, precision="bf16")(left, right)
    assert np.isfinite(bf16.disparity).all()
    with pytest.raises(ms.InputError, match="differ in size"):
        ms.predict(model, left, right[:, :140])
    with pytest.raises(ms.InputError, match="precision"):
        ms.Predictor(model, precision="fp8")


def test_tiled_predict_input_errors():
    model = ConstantModel()
    x = torch.zeros(1, 3, 64, 128)
    with pytest.raises(ms.InputError, match="differ in size"):
        ms.tiled_predict(model, x, x[..., :100], crop=(64, 128))
    with pytest.raises(ms.InputError, match="multiple of 32"):
        ms.tiled_predict(model, x, x, crop=(60, 128))


@pytest.mark.slow
def test_compiled_predictor_matches_eager():
    model = ms.StereoModel(ms.ModelConfig.preset("tiny", crop=(64, 128))).eval()
    rng = np.random.default_rng(1)
    left = rng.integers(0, 255, (64, 128, 3), dtype=np.uint8)
    right = rng.integers(0, 255, (64, 128, 3), dtype=np.uint8)
    eager = ms.Predictor(model)(left, right)
    compiled = ms.Predictor(model, compile=True)(left, right)
    assert np.abs(eager.disparity - compiled.disparity).max() < 1e-3


@pytest.mark.parametrize("mode", ["inference", "no_grad", "bf16"])
def test_the_forward_is_one_graph_for_torch_compile(mode):
    """A graph break splits --compile's model into pieces (one recompilation per block, no CUDA graph): the
    predictor's oneDNN switch (a ContextVar), the RoPE cache key and the bf16 CPU attention's checks on the
    scores must stay out of the traced code."""
    model = ms.StereoModel(ms.ModelConfig.preset("tiny", crop=(64, 128))).eval()
    x = torch.zeros(1, 3, 64, 128)
    amp = torch.autocast("cpu", torch.bfloat16) if mode == "bf16" else contextlib.nullcontext()
    with torch.no_grad() if mode == "no_grad" else torch.inference_mode(), amp:
        explained = torch._dynamo.explain(model)(x, x)
    assert explained.graph_break_count == 0, [str(b.reason)[:200] for b in explained.break_reasons]
    assert explained.graph_count == 1


def test_predict_batch_equals_one_pair_at_a_time():
    model = ms.StereoModel(ms.ModelConfig.preset("tiny", crop=(64, 128))).eval()
    rng = np.random.default_rng(2)
    pairs = [tuple(rng.integers(0, 255, (70, 150, 3), dtype=np.uint8) for _ in range(2)) for _ in range(3)]
    predictor = ms.Predictor(model, tile_batch=2)
    batched = predictor.predict_batch(pairs)
    assert len(batched) == 3
    for pair, got in zip(pairs, batched):
        one = predictor(*pair)
        assert np.abs(one.disparity - got.disparity).max() < 1e-4
        assert np.abs(one.confidence - got.confidence).max() < 1e-4
    assert predictor.predict_batch([]) == []
    small = tuple(rng.integers(0, 255, (64, 128, 3), dtype=np.uint8) for _ in range(2))
    with pytest.raises(ms.InputError, match="one size, got 128x64, 150x70"):
        predictor.predict_batch([pairs[0], small])
