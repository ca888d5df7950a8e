"""Prepacked bf16 Linear weights for CPU inference: oneDNN products with the bias and GELU fused in.

Under bf16 autocast on a CPU each ``nn.Linear`` call casts its fp32 weight to bf16, lets oneDNN reorder it
into its blocked layout, fills the output with the bias before the product, and the MLP then runs GELU as a
separate pass over a 4x-wide activation. :class:`PackedLinears` casts and reorders each weight once and
hands oneDNN the bias and the GELU as part of the product (``torch.ops.mkldnn._linear_pointwise``, the
kernel that inductor's CPU backend emits for the same pattern). The blocks ask :func:`linear` for each of
their products: while ``PackedLinears.active(model)`` is open it uses the packed weight, otherwise (and
always when gradients are enabled, or off the CPU) the module itself, so training, fp32 and the CroCo parity
paths are untouched.

A packed weight is remade when its tensor changes (storage, dtype or in-place version: an optimizer step,
``load_state_dict``), so a long-lived :class:`~madis_stereo.inference.predictor.Predictor` follows a model
that keeps training. Writes through ``tensor.data`` bypass the version counter and are not seen.

Measured on one core of an AMD EPYC (AVX512-BF16), vitb_basedec at 352x704: the bf16 forward from 2.51 to
2.35 s of CPU time (benchmarks/RESULTS.md); the GELU is the exact (erf) one, as in the unfused path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["PackedLinears", "activate", "linear"]

# module -> (packed bf16 weight, bf16 bias or None), set while a PackedLinears block is open.
_ACTIVE: ContextVar[dict[nn.Module, tuple[Tensor, Tensor | None]] | None] = ContextVar("madis_packed_linears",
                                                                                         default=None)


def linear(module: nn.Linear, x: Tensor, gelu: bool = False) -> Tensor:
    """``module(x)``, followed by exact GELU when ``gelu``; through the packed weight when one is active."""
    table = _ACTIVE.get()
    entry = table.get(module) if table else None
    if entry is None or x.device.type != "cpu" or torch.is_grad_enabled():
        y = module(x)
        return F.gelu(y) if gelu else y
    weight, bias = entry
    if gelu:  # algorithm "none" = exact (erf) GELU, as F.gelu's default
        return torch.ops.mkldnn._linear_pointwise(x.to(torch.bfloat16), weight, bias, "gelu", [], "none")
    return torch.ops.mkldnn._linear_pointwise(x.to(torch.bfloat16), weight, bias, "none", [], "")


def _key(tensor: Tensor | None) -> tuple | None:
    return None if tensor is None else (tensor.data_ptr(), tensor._version, tensor.dtype, tensor.device)


class PackedLinears:
    """bf16 oneDNN copies of a model's ``nn.Linear`` weights, made once and remade when a weight changes.

    ``PackedLinears.for_inference(device, precision)`` gives one where it helps (bf16 on a CPU whose oneDNN
    has bf16 kernels) and ``None`` elsewhere; :func:`activate` opens it around a forward. The model itself is
    not modified: the copies live here (half the size of the fp32 Linear weights).
    """

    def __init__(self) -> None:
        self._packs: dict[nn.Module, tuple[tuple, Tensor, Tensor | None]] = {}

    @staticmethod
    def supported(device: torch.device | str, precision: str) -> bool:
        return (torch.device(device).type == "cpu" and precision == "bf16" and torch.backends.mkldnn.is_available()
                and torch.ops.mkldnn._is_mkldnn_bf16_supported())

    @classmethod
    def for_inference(cls, device: torch.device | str, precision: str) -> PackedLinears | None:
        return cls() if cls.supported(device, precision) else None

    def _entry(self, module: nn.Linear) -> tuple[Tensor, Tensor | None]:
        key = (_key(module.weight), _key(module.bias))
        cached = self._packs.get(module)
        if cached is None or cached[0] != key:
            with torch.no_grad():
                weight = torch.ops.mkldnn._reorder_linear_weight(module.weight.detach().to(torch.bfloat16), 1)
                bias = None if module.bias is None else module.bias.detach().to(torch.bfloat16)
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
        token = _ACTIVE.set(table)
        try:
            yield
        finally:
            _ACTIVE.reset(token)


def activate(packs: PackedLinears | None, model: nn.Module) -> contextlib.AbstractContextManager:
    """``packs.active(model)``, or a no-op when ``packs`` is None."""
    return packs.active(model) if packs is not None else contextlib.nullcontext()
