"""Mean attention distance of every head in every attention layer (docs/METHOD.md section 7, paper Fig. 3).

For a head with softmax attention A [Nq, Nk] (rows sum to 1) on a token grid of ``rows x cols`` patches:

    MAD = (1 / Nq) * sum_q sum_j A[q, j] * ||pos(q) - pos(j)|| * patch_size      (pixels)

with pos = (row, col) of the token on the real grid (row-major token order). Cross-attention queries
(left view) and keys (right view) share the grid. Each layer's weights are reduced to one number per
head inside the capture callback, so no attention map is kept.

Input handling: every image pair is scaled (bilinear, aspect ratio kept) so that it covers the analysis
crop, then centre-cropped to it; the token grid is therefore ``crop / patch_size`` for every pair. Encoder
layers encode both views in one batch; by default only the left view's heads are used (the view the
decoder queries come from and the disparity is predicted for); ``encoder_views="both"`` averages both.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from madis_stereo.errors import InputError
from madis_stereo.inference.precision import autocast, check_precision
from madis_stereo.inference.predictor import rgb_pair
from madis_stereo.model.borrow import eval_mode, model_device, on_device
from madis_stereo.model.preprocess import normalize

__all__ = ["ATTENTION_KINDS", "attention_distance", "fit_to_crop", "head_distances", "token_distances"]

ATTENTION_KINDS = ("encoder", "decoder_self", "decoder_cross")
_LAYER = re.compile(r"(enc_blocks|dec_blocks)\.(\d+)\.(attn|cross_attn)")


def token_distances(rows: int, cols: int, patch_size: int = 1, device: torch.device | None = None) -> Tensor:
    """[N, N] Euclidean distances between the (row, col) grid positions of N = rows * cols tokens, times
    ``patch_size`` (float64)."""
    r, c = torch.meshgrid(torch.arange(rows, dtype=torch.float64, device=device),
                          torch.arange(cols, dtype=torch.float64, device=device), indexing="ij")
    pos = torch.stack((r.flatten(), c.flatten()), dim=1)
    return torch.cdist(pos, pos) * float(patch_size)


def head_distances(weights: Tensor, distances: Tensor) -> Tensor:
    """Mean attention distance per image and head: weights [B, heads, Nq, Nk], distances [Nq, Nk] -> [B, heads].

    MAD[b, h] = mean_q sum_j A[b, h, q, j] * D[q, j].
    """
    if weights.dim() != 4 or tuple(weights.shape[-2:]) != tuple(distances.shape):
        raise InputError(f"attention weights {list(weights.shape)} do not match the distances {list(distances.shape)}")
    per_query = torch.einsum("bhqk,qk->bhq", weights.to(torch.float64), distances.to(weights.device, torch.float64))
    return per_query.mean(dim=-1)


def fit_to_crop(image: np.ndarray, crop: Sequence[int]) -> Tensor:
    """uint8 HxWx3 -> normalised [1, 3, h, w] of size ``crop``: scaled to cover it (aspect kept), centre-cropped."""
    h, w = image.shape[:2]
    ch, cw = int(crop[0]), int(crop[1])
    scale = max(ch / h, cw / w)
    size = (max(ch, math.ceil(h * scale - 1e-6)), max(cw, math.ceil(w * scale - 1e-6)))
    x = torch.tensor(np.asarray(image)).permute(2, 0, 1)[None].float()  # a copy: readers may give read-only arrays
    if size != (h, w):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=scale < 1)
    top, left = (size[0] - ch) // 2, (size[1] - cw) // 2
    return normalize(x[:, :, top : top + ch, left : left + cw].clamp(0, 255))


def _layer_key(name: str) -> tuple[str, int]:
    m = _LAYER.fullmatch(name)
    if m is None:
        raise InputError(f"unexpected attention layer name {name!r}")
    stack, index, kind = m.groups()
    if stack == "enc_blocks":
        return "encoder", int(index)
    return ("decoder_self" if kind == "attn" else "decoder_cross"), int(index)


@torch.inference_mode()
def attention_distance(model: torch.nn.Module, pairs: Iterable[tuple[Any, Any]], crop: Sequence[int] | None = None,
                       device: str | torch.device | None = None, encoder_views: str = "left",
                       precision: str = "fp32") -> dict[str, list[list[float]]]:
    """Mean attention distance (pixels) of every head of every layer, averaged over image pairs.

    Args:
        model: a :class:`~madis_stereo.StereoModel` (anything with ``capture_attention`` and ``config``).
        pairs: (left, right) images: uint8 HxWx3 arrays or paths; resized and centre-cropped to ``crop``.
        crop: (height, width), multiples of 32; default the model's training crop.
        encoder_views: "left" (default) or "both" (average the encoder heads over both views).

    Returns:
        ``{"encoder": [[mad per head] per layer], "decoder_self": ..., "decoder_cross": ...}``.
    """
    if encoder_views not in ("left", "both"):
        raise InputError(f"encoder_views must be 'left' or 'both', got {encoder_views!r}")
    check_precision(precision, ("fp32", "bf16", "fp16"))
    config = model.config
    crop = tuple(int(c) for c in (crop or config.crop))
    if len(crop) != 2 or any(c <= 0 or c % 32 for c in crop):
        raise InputError(f"crop {list(crop)} must be two positive multiples of 32")
    device = torch.device(device) if device is not None else model_device(model)
    model = on_device(model, device)  # the caller's model stays where it is, and in its train/eval mode
    with eval_mode(model):
        return _attention_distance(model, pairs, crop, device, encoder_views, precision)


def _attention_distance(model: torch.nn.Module, pairs: Iterable[tuple[Any, Any]], crop: tuple[int, ...],
                        device: torch.device, encoder_views: str, precision: str) -> dict[str, list[list[float]]]:
    patch = model.config.patch_size
    distances = token_distances(crop[0] // patch, crop[1] // patch, patch, device)
    sums: dict[tuple[str, int], Tensor] = {}
    counts: dict[tuple[str, int], int] = {}
    batch = 1

    def record(name: str, weights: Tensor) -> None:
        key = _layer_key(name)
        if key[0] == "encoder" and encoder_views == "left":
            weights = weights[:batch]
        mad = head_distances(weights, distances).sum(dim=0)
        sums[key] = sums[key] + mad if key in sums else mad
        counts[key] = counts.get(key, 0) + weights.shape[0]

    n_pairs = 0
    for left, right in pairs:
        left_np, right_np = rgb_pair(left, right)
        lt, rt = fit_to_crop(left_np, crop).to(device), fit_to_crop(right_np, crop).to(device)
        with model.capture_attention(record), autocast(precision, device):
            model(lt, rt)
        n_pairs += 1
    if not n_pairs:
        raise InputError("attention_distance needs at least one image pair")
    result: dict[str, list[list[float]]] = {kind: [] for kind in ATTENTION_KINDS}
    for (kind, index) in sorted(sums, key=lambda k: (ATTENTION_KINDS.index(k[0]), k[1])):
        layers = result[kind]
        if index != len(layers):
            raise InputError(f"attention layers of {kind} are not contiguous (missing layer {len(layers)})")
        layers.append([float(v) for v in (sums[(kind, index)] / counts[(kind, index)]).cpu()])
    return result
