"""Transformer building blocks: self/cross attention with 2D RoPE, MLP, encoder and decoder blocks.

Attention runs through ``F.scaled_dot_product_attention``, except bf16/fp16 inference on a CPU, which takes
a few heads at a time through batched matrix products (``_blocked_attention``), and fp32 inference on a CPU
where a predictor runs its Linear layers through oneDNN (``model.packed.fp32_attention``); under
``torch.compile`` always SDPA. Linear layers go through ``model.packed.linear`` (the module itself unless a
predictor opened ``PackedLinears``). When a module's ``hook`` is set (see ``StereoModel.capture_attention``)
it takes the explicit reference path instead, which also yields the softmax attention weights
``A = softmax(q k^T / sqrt(d))`` [B, heads, Nq, Nk] and hands them to the hook.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from madis_stereo.model.packed import fp32_attention, fp32_onednn_active, linear
from madis_stereo.model.rope import apply_rope

__all__ = ["Attention", "CrossAttention", "DecoderBlock", "EncoderBlock", "Mlp", "Rope", "attention"]

# (cos, sin) tables broadcastable to [B, heads, N, head_dim].
Rope = tuple[Tensor, Tensor]
AttentionHook = Callable[[Tensor], None]

LAYER_NORM_EPS = 1e-6


# Query rows per block of the CPU half-precision path (bounds its score matrix to QUERY_BLOCK x Nk per head).
QUERY_BLOCK = 1024


def attention(q: Tensor, k: Tensor, v: Tensor, hook: AttentionHook | None = None) -> Tensor:
    """Softmax attention on [B, heads, N, d] tensors; the explicit path reports weights to ``hook``."""
    if hook is not None:
        weights = torch.softmax((q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1), dim=-1)
        hook(weights)
        return weights @ v
    # torch.compile traces SDPA: the blocked loop asks torch for its thread count and checks the scores'
    # values, each of which would break the graph
    if q.device.type == "cpu" and not torch.is_grad_enabled() and not torch.compiler.is_compiling():
        if q.dtype in (torch.bfloat16, torch.float16):
            return _blocked_attention(q, k, v)
        if q.dtype == torch.float32 and fp32_onednn_active():  # a CPU predictor on which oneDNN won the probe
            return fp32_attention(q, k, v)
    return F.scaled_dot_product_attention(q, k, v)


# bf16 scores in base 2 up to this value (as the int16 view of a bf16 number: positive bf16 values sort like
# their bits) have finite powers of two with room for a sum over any row, so the softmax may skip the max.
_EXP2_SAFE_BF16 = int(torch.tensor(86.0, dtype=torch.bfloat16).view(torch.int16))
_LOG2_E = 1.4426950408889634
# A row whose powers sum below this lost its largest terms to underflow: it takes the softmax instead.
_MIN_ROW_SUM = 1e-30


def _blocked_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Attention a few heads (and at most QUERY_BLOCK queries) at a time with batched matrix products.

    On CPUs, ``scaled_dot_product_attention``'s bf16 kernel ran at 83 GFLOP/s on one core where the bf16
    matrix products run at 400 (AMD EPYC, AVX512-BF16, torch 2.13): this path does the two products of each
    head with the matrix library and keeps the head's score matrix (N x N, 1.9 MB at 352x704) in cache, which
    took the attention to 190 GFLOP/s and the vitb_basedec forward from 3.9 s to 2.8 s of CPU time. It takes
    as many heads per step as torch has threads, so that each thread works on one head's scores.

    In bf16 the softmax is split (:func:`_exp2_weights`): the scores' exponentials in place (as powers of two,
    the factor log2(e) folded into the query scale), the product with ``v``, then the division by the row sums
    on the small [N, d] result. ``torch.softmax`` makes three passes over the N x N scores into a new matrix (a
    row max that alone costs most of an ``exp``, the exponentials, the scaling); this makes one in place and a
    cheap sum. A vitb encoder layer's attention (2 images, 12 heads, 968 tokens) went from 26.1 to 22.5 ms on
    one core of an AMD EPYC (13.3 -> 11.4 on two), the vitb_basedec forward at 352x704 from 2.39 to 2.30 s.
    fp16 (whose ``exp`` overflows at 11) keeps ``torch.softmax``.
    Only for inference (no autograd graph of N x N matrices); the same result as SDPA up to rounding.
    """
    b, h, n, d = q.shape
    split = q.dtype == torch.bfloat16
    # split: scores in base 2 (exp(s) = 2^(s log2 e)), the factor folded into the query scale
    q = (q * (d**-0.5 * (_LOG2_E if split else 1.0))).reshape(b * h, n, d)
    k = k.reshape(b * h, k.shape[-2], d).transpose(1, 2)
    v = v.reshape(b * h, v.shape[-2], d)
    out = torch.empty_like(q)
    step = max(1, torch.get_num_threads())
    for i in range(0, b * h, step):
        heads = slice(i, i + step)
        for start in range(0, n, QUERY_BLOCK):
            rows = slice(start, start + QUERY_BLOCK)
            scores = torch.bmm(q[heads, rows], k[heads])
            if split:
                weights = _exp2_weights(scores)
                if weights is not None:
                    torch.div(torch.bmm(weights[0], v[heads]), weights[1], out=out[heads, rows])
                    continue
                # _exp2_weights declined: back to natural units (the scores may have been overwritten)
                scores = torch.bmm(q[heads, rows], k[heads]).mul_(1 / _LOG2_E)
            torch.bmm(torch.softmax(scores, dim=-1), v[heads], out=out[heads, rows])
    return out.view(b, h, n, d)


def _exp2_weights(scores: Tensor) -> tuple[Tensor, Tensor] | None:
    """``(2^scores, row sums)`` with the power taken in place, or None where the softmax must subtract the max.

    ``softmax(s) = 2^(s - m) / sum(2^(s - m))`` for any ``m`` (scores in base 2); the max is only there to keep
    the powers finite. For bf16 scores <= 86 (2^86 ~ 8e25, bf16 and fp32 reach 3e38) ``m = 0`` is safe and
    exact up to the same rounding. None when a score exceeds 86 (or is NaN / inf; the scores are then
    untouched), and when a row's powers sum below 1e-30 (all its scores below about -100: overwritten).
    ``exp2_`` rather than ``exp_``: 0.21 against 0.25 ms on a 968 x 968 bf16 matrix (AMD EPYC, torch 2.13).
    """
    if scores.view(torch.int16).amax() > _EXP2_SAFE_BF16:  # negative values have negative int16 views
        return None
    weights = scores.exp2_()
    total = weights.sum(-1, keepdim=True)
    return (weights, total) if total.amin() >= _MIN_ROW_SUM else None


def _split_heads(x: Tensor, heads: int) -> Tensor:
    """[B, N, C] -> [B, heads, N, C // heads]."""
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)


def _merge_heads(x: Tensor) -> Tensor:
    """[B, heads, N, d] -> [B, N, heads * d]."""
    return x.transpose(1, 2).flatten(2)


class Attention(nn.Module):
    """Multi-head self-attention with 2D RoPE on queries and keys."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.hook: AttentionHook | None = None

    def forward(self, x: Tensor, rope: Rope) -> Tensor:
        """x: [B, N, C] -> [B, N, C]."""
        qkv = linear(self.qkv, x).unflatten(-1, (3, self.num_heads, -1)).permute(2, 0, 3, 1, 4)
        q, k = apply_rope(qkv[:2], *rope).unbind(0)  # one rotation for queries and keys together
        v = qkv[2]
        return linear(self.proj, _merge_heads(attention(q, k, v, self.hook)))


class CrossAttention(nn.Module):
    """Multi-head attention from query tokens to memory tokens, RoPE on both sides."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.projq = nn.Linear(dim, dim, bias=qkv_bias)
        self.projk = nn.Linear(dim, dim, bias=qkv_bias)
        self.projv = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.hook: AttentionHook | None = None

    def forward(self, x: Tensor, memory: Tensor, rope_x: Rope, rope_mem: Rope) -> Tensor:
        """x: [B, Nq, C], memory: [B, Nk, C] -> [B, Nq, C]."""
        q = apply_rope(_split_heads(linear(self.projq, x), self.num_heads), *rope_x)
        k = apply_rope(_split_heads(linear(self.projk, memory), self.num_heads), *rope_mem)
        v = _split_heads(linear(self.projv, memory), self.num_heads)
        return linear(self.proj, _merge_heads(attention(q, k, v, self.hook)))


class Mlp(nn.Module):
    """Linear -> GELU (exact) -> Linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return linear(self.fc2, linear(self.fc1, x, gelu=True))


class EncoderBlock(nn.Module):
    """Pre-norm ViT block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, rope: Rope) -> Tensor:
        x = x + self.attn(self.norm1(x), rope)
        return x + self.mlp(self.norm2(x))


class DecoderBlock(nn.Module):
    """Pre-norm decoder block: self-attention, cross-attention to the (normalised) memory, MLP."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, norm_mem: bool = True) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.cross_attn = CrossAttention(dim, num_heads)
        self.norm3 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm_y = nn.LayerNorm(dim, eps=LAYER_NORM_EPS) if norm_mem else nn.Identity()

    def forward(self, x: Tensor, memory: Tensor, rope_x: Rope, rope_mem: Rope) -> Tensor:
        """x: query tokens [B, Nq, C]; memory: the other view's tokens [B, Nk, C] (not modified)."""
        x = x + self.attn(self.norm1(x), rope_x)
        x = x + self.cross_attn(self.norm2(x), self.norm_y(memory), rope_x, rope_mem)
        return x + self.mlp(self.norm3(x))
