"""Periodic validation: tiled prediction of the student on a validation set, metrics averaged over images.

Each rank predicts every world_size-th image; per-image metrics are summed over ranks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from madis_stereo.inference import normalize, tiled_predict
from madis_stereo.model.network import StereoModel
from madis_stereo.training.distributed import DistEnv, all_reduce_sum

__all__ = ["basic_metrics", "validate"]


def basic_metrics(pred: Tensor, gt: Tensor) -> dict[str, float]:
    """EPE (mean |d - gt|) and bad-2 (% of pixels with error > 2 px) over finite-GT pixels.

    TODO-merge: replace with ``madis_stereo.metrics.stereo_metrics`` once the metrics branch is merged.
    """
    valid = torch.isfinite(gt)
    if not bool(valid.any()):
        return {}
    err = torch.nan_to_num((pred.float() - gt.float()).abs()[valid], nan=float("inf"))  # NaN counts as an error
    return {"epe": float(err.mean()), "bad_2": 100.0 * float((err > 2.0).float().mean())}


def _image_tensor(image: Any) -> Tensor:
    """uint8 HxWx3 array or [3, H, W] tensor -> [1, 3, H, W]."""
    t = torch.as_tensor(np.asarray(image)) if not isinstance(image, Tensor) else image
    if t.dim() == 3 and t.shape[-1] == 3 and t.shape[0] != 3:
        t = t.permute(2, 0, 1)
    return t[None]


def _disparity_tensor(disparity: Any) -> Tensor:
    """HxW array or [1, H, W] tensor -> [1, 1, H, W] float32."""
    t = torch.as_tensor(np.asarray(disparity, dtype=np.float32)) if not isinstance(disparity, Tensor) else disparity
    return t.float().reshape(1, 1, *t.shape[-2:])


def validate(model: StereoModel, dataset: Dataset, env: DistEnv, crop: Sequence[int], overlap: float,
             conf_mode: str, autocast: contextlib.AbstractContextManager | None = None) -> dict[str, float]:
    """Mean per-image metrics of ``model`` on ``dataset`` (items with left/right images and disparity GT)."""
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    count = 0
    for index in range(env.rank, len(dataset), env.world_size):
        item = dataset[index]
        if item.get("disparity") is None:
            continue
        left = normalize(_image_tensor(item["left"]).to(env.device))
        right = normalize(_image_tensor(item["right"]).to(env.device))
        with autocast or contextlib.nullcontext():
            disp, _ = tiled_predict(model, left, right, crop=crop, overlap=overlap, conf_mode=conf_mode)
        metrics = basic_metrics(disp.cpu(), _disparity_tensor(item["disparity"]))
        for key, value in metrics.items():
            sums[key] = sums.get(key, 0.0) + value
        count += bool(metrics)
    model.train(was_training)
    return _reduce(sums, count, env)


def _reduce(sums: dict[str, float], count: int, env: DistEnv) -> dict[str, float]:
    keys = ("epe", "bad_2")
    packed = torch.tensor([sums.get(k, 0.0) for k in keys] + [float(count)], dtype=torch.float64)
    packed = all_reduce_sum(packed.to(env.device), env).cpu()  # NCCL reduces device tensors only
    total = packed[-1].item()
    if total == 0:
        return {}
    return {k: packed[i].item() / total for i, k in enumerate(keys)}
