"""Packed bf16 Linear weights on a CPU (model/packed.py): used by bf16 prediction, exact elsewhere, never stale."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import madis_stereo as ms
from madis_stereo.inference.precision import autocast
from madis_stereo.model.packed import PackedLinears, activate, linear

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.skipif(not PackedLinears.supported("cpu", "bf16"), reason="this CPU's oneDNN has no bf16 kernels"),
]

PACKED_OP = "mkldnn._linear_pointwise"


class OpNames(TorchDispatchMode):
    """Records the name of every operator dispatched inside the block."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(str(func.overloadpacket.__qualname__) if hasattr(func, "overloadpacket") else str(func))
        self.names.add(str(func))
        return func(*args, **(kwargs or {}))


def _close_in_bf16(got: torch.Tensor, want: torch.Tensor) -> None:
    """Within a few bf16 roundings of the output's scale (bf16 keeps 8 significant bits)."""
    scale = want.abs().max().item() + 1e-6
    assert (got.float() - want.float()).abs().max().item() <= 0.03 * scale


def test_linear_and_gelu_through_packed_weights_match_the_module():
    lin = torch.nn.Linear(48, 96)
    x = torch.randn(2, 7, 48)
    packs = PackedLinears()
    with torch.inference_mode(), packs.active(lin), OpNames() as ops:
        plain = linear(lin, x.bfloat16())
        fused = linear(lin, x.bfloat16(), gelu=True)
    assert any(PACKED_OP in name for name in ops.names)
    assert plain.shape == (2, 7, 96) and plain.dtype == torch.bfloat16
    _close_in_bf16(plain, F.linear(x, lin.weight, lin.bias))
    _close_in_bf16(fused, F.gelu(F.linear(x, lin.weight, lin.bias)))


def test_fp32_through_onednn_matches_the_module_without_copies():
    lin = torch.nn.Linear(48, 96)
    x = torch.randn(2, 7, 48)
    packs = PackedLinears.for_inference("cpu", "fp32", fp32_onednn=True)
    assert PackedLinears.for_inference("cpu", "fp32") is None  # only when the caller measured it faster
    with torch.inference_mode(), packs.active(lin), OpNames() as ops:
        plain, fused = linear(lin, x), linear(lin, x, gelu=True)
    assert any(PACKED_OP in name for name in ops.names) and plain.dtype == torch.float32
    torch.testing.assert_close(plain, F.linear(x, lin.weight, lin.bias), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fused, F.gelu(F.linear(x, lin.weight, lin.bias)), rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # fp32 keeps no copy: an in-place change shows at once
        lin.weight.mul_(-1.0)
    with torch.inference_mode(), packs.active(lin):
        torch.testing.assert_close(linear(lin, x), F.linear(x, lin.weight, lin.bias), rtol=1e-5, atol=1e-5)


def test_a_model_made_under_inference_mode_packs_too():
    x = torch.randn(3, 16)
    with torch.inference_mode():
        lin = torch.nn.Linear(16, 8)  # inference tensors: no version counter
        with PackedLinears().active(lin):
            got = linear(lin, x.bfloat16())
        _close_in_bf16(got, lin(x))


def test_packed_weights_follow_in_place_updates_and_loads():
    lin = torch.nn.Linear(32, 16)
    x = torch.randn(5, 32)
    packs = PackedLinears()

    def run():
        with torch.inference_mode(), packs.active(lin):
            return linear(lin, x.bfloat16())

    run()
    with torch.no_grad():  # what an optimizer step does: in place
        lin.weight.mul_(-2.0)
        lin.bias.fill_(3.0)
    _close_in_bf16(run(), F.linear(x, lin.weight, lin.bias))
    other = torch.nn.Linear(32, 16)
    lin.load_state_dict(other.state_dict())
    _close_in_bf16(run(), F.linear(x, other.weight, other.bias))


def test_without_an_active_block_or_with_gradients_the_module_runs_unchanged():
    lin = torch.nn.Linear(8, 4)
    x = torch.randn(3, 8, requires_grad=True)
    assert torch.equal(linear(lin, x), lin(x))
    with PackedLinears().active(lin), OpNames() as ops:
        y = linear(lin, x, gelu=True)  # gradients on: the autograd path, bit for bit
    assert not any(PACKED_OP in name for name in ops.names)
    assert torch.equal(y, F.gelu(lin(x))) and y.grad_fn is not None
    y.sum().backward()
    assert x.grad is not None


def test_only_bf16_on_a_cpu_packs():
    assert PackedLinears.for_inference("cpu", "bf16") is not None
    assert PackedLinears.for_inference("cpu", "fp32") is None
    assert PackedLinears.for_inference("cpu", "fp16") is None
    assert PackedLinears.for_inference("meta", "bf16") is None
    assert activate(None, torch.nn.Linear(2, 2)).__enter__() is None


def test_model_forward_packed_agrees_with_autocast():
    torch.manual_seed(0)
    model = ms.StereoModel(ms.ModelConfig.preset("tiny")).eval()
    left, right = torch.randn(2, 1, 3, 64, 128).unbind(0)
    with torch.inference_mode(), autocast("bf16", torch.device("cpu")):
        want = model(left, right)
        with PackedLinears().active(model), OpNames() as ops:
            got = model(left, right)
    assert any(PACKED_OP in name for name in ops.names)
    assert not any("aten.gelu" in name for name in ops.names)  # GELU fused into fc1
    with torch.inference_mode():
        fp32 = model(left, right)
    # the packed path is as close to fp32 as plain bf16 autocast is (both round the same products to bf16)
    err_packed = (got.disparity.float() - fp32.disparity).abs().mean()
    err_plain = (want.disparity.float() - fp32.disparity).abs().mean()
    assert err_packed <= 2 * err_plain + 1e-4


def test_bf16_predictor_packs_and_leaves_the_model_untouched():
    model = ms.load_default_model()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = np.random.default_rng(0)
    left = rng.integers(0, 255, (96, 160, 3), dtype=np.uint8)
    right = np.roll(left, -6, axis=1)
    packed = ms.Predictor(model, crop=(64, 128), precision="bf16", device="cpu")
    plain = ms.Predictor(model, crop=(64, 128), precision="bf16", device="cpu")
    plain.packed = None
    assert packed.packed is not None
    with OpNames() as ops:
        a = packed(left, right).disparity
    assert any(PACKED_OP in name for name in ops.names)
    b = plain(left, right).disparity
    f = ms.Predictor(model, crop=(64, 128), precision="fp32", device="cpu")(left, right).disparity
    # as close to fp32 as plain bf16 autocast (Motorcycle pair, RESULTS.md: 0.072 px packed, 0.086 plain when
    # measured; 0.082 packed since the split bf16 softmax)
    assert np.isfinite(a).all() and np.abs(a - f).mean() <= 2 * np.abs(b - f).mean() + 0.02
    after = model.state_dict()
    assert state.keys() == after.keys() and all(torch.equal(state[k], after[k]) for k in state)
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_fp32_attention_through_onednn_matches_sdpa_and_runs_only_inside_fp32_packs():
    from madis_stereo.model.blocks import attention
    from madis_stereo.model.packed import fp32_attention

    q, k, v = torch.randn(3, 2, 5, 40, 16).unbind(0)
    k = torch.cat([k, k[:, :, :7]], 2)  # cross attention: more keys than queries
    v = torch.cat([v, v[:, :, :7]], 2)
    with torch.inference_mode():
        torch.testing.assert_close(fp32_attention(q, k, v), F.scaled_dot_product_attention(q, k, v),
                                   rtol=1e-5, atol=1e-5)
        with OpNames() as outside:
            attention(q, k, v)
        with PackedLinears.for_inference("cpu", "fp32", fp32_onednn=True).active(torch.nn.Linear(1, 1)), \
                OpNames() as inside:
            attention(q, k, v)
        with PackedLinears().active(torch.nn.Linear(1, 1)), OpNames() as bf16_packs:
            attention(q, k, v)  # fp32 inputs under bf16 packs: SDPA as before
    assert any(PACKED_OP in name for name in inside.names)
    assert not any(PACKED_OP in name for name in outside.names | bf16_packs.names)


def test_fp32_predictor_through_onednn_agrees_with_the_module_path(monkeypatch):
    import madis_stereo.inference.predictor as predictor_module

    # as on a machine where the probe measured oneDNN's fp32 products faster than the BLAS
    monkeypatch.setattr(predictor_module, "cpu_linears", lambda precision, device, **_: PackedLinears.for_inference(
        device, precision, fp32_onednn=True))
    torch.manual_seed(0)
    model = ms.StereoModel(ms.ModelConfig.preset("tiny", crop=(64, 128))).eval()
    rng = np.random.default_rng(1)
    left = rng.integers(0, 255, (64, 128, 3), dtype=np.uint8)
    right = np.roll(left, -5, axis=1)
    fast = ms.Predictor(model, precision="fp32", device="cpu")
    assert fast.packed is not None and fast.packed.dtype == torch.float32
    with OpNames() as ops:
        a = fast(left, right)
    assert any(PACKED_OP in name for name in ops.names)
    fast.packed = None
    b = fast(left, right)
    np.testing.assert_allclose(a.disparity, b.disparity, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(a.confidence, b.confidence, rtol=1e-4, atol=1e-4)
