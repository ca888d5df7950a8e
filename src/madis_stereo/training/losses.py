"""MaDis-Stereo / CroCo-Stereo training losses (docs/METHOD.md section 3).

Notation: ``d`` predicted disparity, ``c`` confidence logit (channel 1 of the head), ``t`` a target
disparity. Disparity maps are [B, 1, H, W]; ground truth is invalid where it is not finite.
Every mean over an empty pixel set is 0 (with a gradient path, so backward still works), never NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from madis_stereo.model.network import patchify

__all__ = [
    "LaplaceParams",
    "bounded_log_scale",
    "distillation_loss",
    "distillation_terms",
    "gt_loss",
    "laplacian_nll",
    "masked_mean",
    "normalized_patches",
    "reconstruction_loss",
]


@dataclass(frozen=True)
class LaplaceParams:
    """Bounds of the log-scale: c' in (-a, a); b stretches the sigmoid."""

    a: float = 3.0
    b: float = 3.0


def bounded_log_scale(confidence: Tensor, params: LaplaceParams = LaplaceParams()) -> Tensor:
    """c' = 2a (sigmoid(c / b) - 0.5), the Laplacian log-scale bounded to (-a, a)."""
    return 2.0 * params.a * (torch.sigmoid(confidence / params.b) - 0.5)


def laplacian_nll(target: Tensor, disparity: Tensor, confidence: Tensor,
                  params: LaplaceParams = LaplaceParams()) -> Tensor:
    """Per-pixel lap(t) = |t - d| / exp(c') + c' (Laplacian negative log-likelihood up to a constant)."""
    log_scale = bounded_log_scale(confidence, params)
    return (target - disparity).abs() * torch.exp(-log_scale) + log_scale


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` where ``mask`` is True; 0 for an empty mask. ``values`` must be finite under the mask."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def _finite_gt(gt: Tensor) -> tuple[Tensor, Tensor]:
    """(valid mask, gt with invalid pixels zeroed so that no inf/NaN enters the graph)."""
    valid = torch.isfinite(gt)
    return valid, torch.where(valid, gt, torch.zeros_like(gt))


def gt_loss(disparity: Tensor, confidence: Tensor, gt: Tensor, params: LaplaceParams = LaplaceParams()) -> Tensor:
    """L_gt = mean over pixels with finite GT of lap(gt)."""
    valid, target = _finite_gt(gt)
    return masked_mean(laplacian_nll(target, disparity, confidence, params), valid)


def distillation_terms(disparity: Tensor, confidence: Tensor, gt: Tensor, pseudo: Tensor,
                       params: LaplaceParams = LaplaceParams()) -> tuple[Tensor, Tensor]:
    """(mean_{finite GT} lap(gt), mean_{non-finite GT} lap(pseudo)) from one per-pixel pass.

    The first term equals :func:`gt_loss`, so a MaDis step computes the Laplacian loss once for both.
    ``pseudo`` is the teacher's disparity; gradients flow into it where it has them (the public MaDis code:
    the student's decoder and head produced it), so detach it for constant labels.
    """
    valid = torch.isfinite(gt)
    nll = laplacian_nll(torch.where(valid, gt, pseudo), disparity, confidence, params)
    return masked_mean(nll, valid), masked_mean(nll, ~valid)


def distillation_loss(disparity: Tensor, confidence: Tensor, gt: Tensor, pseudo: Tensor,
                      params: LaplaceParams = LaplaceParams()) -> Tensor:
    """L_distill = mean_{finite GT} lap(gt) + mean_{non-finite GT} lap(pseudo).

    ``pseudo`` is the teacher's disparity (gradients flow into it, see :func:`distillation_terms`). As in the
    public MaDis code, GT pixels are counted here as well as in :func:`gt_loss`.
    """
    on_gt, on_pseudo = distillation_terms(disparity, confidence, gt, pseudo, params)
    return on_gt + on_pseudo


def normalized_patches(images: Tensor, patch: int = 16, eps: float = 1e-6) -> Tensor:
    """Reconstruction targets: [B, 3, H, W] -> [B, N, patch*patch*3], each patch (x - mean) / sqrt(var + eps).

    ``var`` is the unbiased per-patch variance (``Tensor.var`` default), as in MAE's and CroCo's
    ``norm_pix_loss``, so targets match what CroCo v2's pretrained reconstruction head learnt; with 768 values
    per patch the biased estimator would differ by a factor sqrt(768/767).
    """
    target = patchify(images, patch)
    mean = target.mean(dim=-1, keepdim=True)
    var = target.var(dim=-1, keepdim=True)
    return (target - mean) / torch.sqrt(var + eps)


def reconstruction_loss(recon: Tensor, images: Tensor, mask: Tensor, patch: int = 16) -> Tensor:
    """L_rec = mean over masked patches of mean_k (recon_k - target_k)^2.

    recon: [B, N, patch*patch*3] (layout py, px, rgb); images: the ImageNet-normalised model input
    [B, 3, H, W] (CroCo's pretraining target space); mask: [B, N] bool, True = masked.
    """
    target = normalized_patches(images.float(), patch)
    per_patch = (recon.float() - target).pow(2).mean(dim=-1)
    return masked_mean(per_patch, mask)
