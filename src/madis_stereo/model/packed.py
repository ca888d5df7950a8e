"""Linear layers through oneDNN for CPU inference: packed bf16 weights, bias and GELU fused into the product.

Under bf16 autocast on a CPU each ``nn.Linear`` call casts its fp32 weight to bf16, lets oneDNN reorder it
into its blocked layout, fills the output with the bias before the product, and the MLP then runs GELU as a
separate pass over a 4x-wide activation. :class:`PackedLinears` casts and reorders each weight once and
hands oneDNN the bias and the GELU as part of the product (``torch.ops.mkldnn._linear_pointwise``, the
kernel that inductor's CPU backend emits for the same pattern). In fp32 the same kernel (on the weight as it
is) replaces the BLAS call of ``torch.nn.functional.linear`` where oneDNN is the faster of the two: on an AMD
EPYC (Zen 5) MKL ran fp32 products at 110 GFLOP/s per core and oneDNN at 244 (who decides:
:func:`madis_stereo.inference.precision.cpu_linears`, from a measured probe). The blocks ask :func:`linear`
for each of their products: while ``PackedLinears.active(model)`` is open it uses oneDNN, otherwise (and
always when gradients are enabled, or off the CPU) the module itself, so training and the CroCo parity paths
are untouched.

A packed weight is remade when its tensor changes (storage, dtype or in-place version: an optimizer step,
``load_state_dict``), so a long-lived :class:`~madis_stereo.inference.predictor.Predictor` follows a model
that keeps training. Writes through ``tensor.data`` bypass the version counter and are not seen.

Measured on one core of an AMD EPYC (AVX512-BF16), vitb_basedec at 352x704: the bf16 forward from 2.51 to
2.35 s of CPU time, the fp32 forward from 7.5 to 4.9 s (benchmarks/RESULTS.md); the GELU is the exact (erf)
one, as in the unfused path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["PackedLinears", "activate", "fp32_attention", "fp32_onednn_active", "linear"]

# While a PackedLinears block is open: its dtype (float32: attention goes through oneDNN as well) and
# module -> (weight for oneDNN, bias or None).
_ACTIVE: ContextVar[tuple[torch.dtype, dict[nn.Module, tuple[Tensor, Tensor | None]]] | None] = ContextVar(
    "madis_packed_linears", default=None)


def _onednn_linear(x: Tensor, weight: Tensor, bias: Tensor | None, gelu: bool = False) -> Tensor:
    """``x @ weight^T + bias`` (then exact GELU) in one oneDNN call; ``weight`` plain or reordered."""
    if gelu:  # algorithm "none" = exact (erf) GELU, as F.gelu's default
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "gelu", [], "none")
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def linear(module: nn.Linear, x: Tensor, gelu: bool = False) -> Tensor:
    """``module(x)``, followed by exact GELU when ``gelu``; through the packed weight when one is active."""
    # torch.compile / torch.export cannot trace a ContextVar; compiled models keep the module's own product
    active = None if torch.compiler.is_compiling() else _ACTIVE.get()
    entry = active[1].get(module) if active else None
    if entry is None or x.device.type != "cpu" or torch.is_grad_enabled():
        y = module(x)
        return F.gelu(y) if gelu else y
    weight, bias = entry
    return _onednn_linear(x.to(weight.dtype), weight, bias, gelu)


def fp32_onednn_active() -> bool:
    """Whether an fp32 :class:`PackedLinears` block is open (the probe found oneDNN faster than the BLAS)."""
    active = None if torch.compiler.is_compiling() else _ACTIVE.get()
    return active is not None and active[0] == torch.float32


def fp32_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Softmax attention of [B, heads, N, d] fp32 tensors, one head at a time through oneDNN products.

    ``q k^T`` is a Linear product with ``k`` as the weight, ``p v`` one with ``v^T``: on an AMD EPYC (Zen 5)
    a layer's 12 heads took 22 ms where ``scaled_dot_product_attention``'s fp32 CPU kernel took 33 ms. For
    inference only (no autograd), and used only while fp32 :class:`PackedLinears` are active.
    """
    b, h, n, d = q.shape
    q = (q * d**-0.5).reshape(b * h, n, d)
    k = k.reshape(b * h, k.shape[-2], d)
    vt = v.reshape(b * h, v.shape[-2], d).transpose(1, 2).contiguous()
    out = torch.empty_like(q)
    for i in range(b * h):
        out[i] = _onednn_linear(torch.softmax(_onednn_linear(q[i], k[i], None), dim=-1), vt[i], None)
    return out.view(b, h, n, d)


def _key(tensor: Tensor | None) -> tuple | None:
    if tensor is None:
        return None
    # inference tensors (made under torch.inference_mode) have no version counter; nothing trains them
    version = None if tensor.is_inference() else tensor._version
    return tensor.data_ptr(), version, tensor.dtype, tensor.device


class PackedLinears:
    """A model's ``nn.Linear`` weights for oneDNN (bf16: cast and reordered once; fp32: the weights themselves),
    remade when a weight changes.

    ``PackedLinears.for_inference(device, precision, fp32_onednn)`` gives one where it helps (bf16 on a CPU
    whose oneDNN has bf16 kernels; fp32 when ``fp32_onednn``) and ``None`` elsewhere; :func:`activate` opens it
    around a forward. The model itself is not modified: bf16 copies live here (half the size of the fp32
    Linear weights); fp32 holds no copy.
    """

    def __init__(self, dtype: torch.dtype = torch.bfloat16) -> None:
        self.dtype = dtype
        self._packs: dict[nn.Module, tuple[tuple, Tensor, Tensor | None]] = {}

    @staticmethod
    def supported(device: torch.device | str, precision: str) -> bool:
        if torch.device(device).type != "cpu" or not torch.backends.mkldnn.is_available():
            return False
        return precision == "fp32" or (precision == "bf16" and torch.ops.mkldnn._is_mkldnn_bf16_supported())

    @classmethod
    def for_inference(cls, device: torch.device | str, precision: str,
                      fp32_onednn: bool = False) -> PackedLinears | None:
        if precision == "fp32" and not fp32_onednn or not cls.supported(device, precision):
            return None
        return cls(torch.float32 if precision == "fp32" else torch.bfloat16)

    def _entry(self, module: nn.Linear) -> tuple[Tensor, Tensor | None]:
        if self.dtype == torch.float32 and module.weight.dtype == torch.float32:
            return module.weight.detach(), None if module.bias is None else module.bias.detach()
        key = (_key(module.weight), _key(module.bias))
        cached = self._packs.get(module)
        if cached is None or cached[0] != key:
            with torch.no_grad():
                weight = torch.ops.mkldnn._reorder_linear_weight(module.weight.detach().to(self.dtype), 1)
                bias = None if module.bias is None else module.bias.detach().to(self.dtype)
            cached = self._packs[module] = (key, weight, bias)
        return cached[1], cached[2]

    @contextlib.contextmanager
    def active(self, model: nn.Module) -> Iterator[None]:
        """Within the block, :func:`linear` calls on ``model``'s CPU Linear layers use the packed weights."""
        table = {module: self._entry(module) for module in model.modules()
                 if type(module) is nn.Linear and module.weight.device.type == "cpu"
                 and module.weight.dtype in (torch.float32, torch.bfloat16)}
        for stale in set(self._packs) - set(table):
            self._packs.pop(stale, None)
        token = _ACTIVE.set((self.dtype, table))
        try:
            yield
        finally:
            _ACTIVE.reset(token)


def activate(packs: PackedLinears | None, model: nn.Module) -> contextlib.AbstractContextManager:
    """``packs.active(model)``, or a no-op when ``packs`` is None."""
    return packs.active(model) if packs is not None else contextlib.nullcontext()
