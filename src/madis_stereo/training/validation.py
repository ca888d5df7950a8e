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

from madis_stereo.evaluation.metrics import stereo_metrics
from madis_stereo.inference.tiling import tiled_predict
from madis_stereo.model.network import StereoModel
from madis_stereo.model.preprocess import normalize
from madis_stereo.training.distributed import DistEnv, all_reduce_sum

__all__ = ["METRIC_KEYS", "validate"]

# Per-image metrics of madis_stereo.evaluation.metrics.stereo_metrics averaged over the validation images.
METRIC_KEYS = ("epe", "rmse", "bad_0.5", "bad_1", "bad_2", "bad_3", "bad_4", "d1", "invalid_pred")


def _image_tensor(image: Any) -> Tensor:
    """uint8 HxWx3 array or [3, H, W] tensor -> [1, 3, H, W]."""
    if not isinstance(image, Tensor):
        array = np.asarray(image)  # images read from files may be read-only: torch wants writable memory
        image = torch.from_numpy(array if array.flags.writeable else array.copy())
    t = image
    if t.dim() == 3 and t.shape[-1] == 3 and t.shape[0] != 3:
        t = t.permute(2, 0, 1)
    return t[None]


def _disparity_array(disparity: Any) -> np.ndarray:
    """HxW array or [1, H, W] tensor -> HxW float32 array."""
    if isinstance(disparity, Tensor):
        disparity = disparity.detach().cpu().numpy()
    array = np.asarray(disparity, dtype=np.float32)
    return array.reshape(array.shape[-2:])


def validate(model: StereoModel, dataset: Dataset, env: DistEnv, crop: Sequence[int], overlap: float,
             conf_mode: str, autocast: contextlib.AbstractContextManager | None = None) -> dict[str, float]:
    """Mean per-image ``stereo_metrics`` of ``model`` on ``dataset`` (items with left/right images and GT).

    Images without any valid GT pixel are left out of the mean, and a metric that is not finite for an image
    (the epe of an image without one finite prediction) is left out of that metric's mean: the image still
    counts in ``invalid_pred`` and the ``bad_*`` rates (as 100 %), so one blind image cannot make the mean NaN.
    """
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for index in range(env.rank, len(dataset), env.world_size):
        item = dataset[index]
        if item.get("disparity") is None:
            continue
        left = normalize(_image_tensor(item["left"]).to(env.device))
        right = normalize(_image_tensor(item["right"]).to(env.device))
        with autocast or contextlib.nullcontext():
            disp, _ = tiled_predict(model, left, right, crop=crop, overlap=overlap, conf_mode=conf_mode)
        metrics = stereo_metrics(disp[0, 0].float().cpu().numpy(), _disparity_array(item["disparity"]))
        if metrics["n_valid"] == 0:
            continue
        for key in METRIC_KEYS:
            if np.isfinite(metrics[key]):
                sums[key] = sums.get(key, 0.0) + metrics[key]
                counts[key] = counts.get(key, 0) + 1
    model.train(was_training)
    return _reduce(sums, counts, env)


def _reduce(sums: dict[str, float], counts: dict[str, int], env: DistEnv) -> dict[str, float]:
    """Per-metric means over every rank's images; metrics no image had a finite value for are left out."""
    values = [sums.get(k, 0.0) for k in METRIC_KEYS] + [float(counts.get(k, 0)) for k in METRIC_KEYS]
    packed = all_reduce_sum(torch.tensor(values, dtype=torch.float64).to(env.device), env).cpu()  # NCCL: device
    n = len(METRIC_KEYS)
    return {k: packed[i].item() / packed[n + i].item() for i, k in enumerate(METRIC_KEYS) if packed[n + i] > 0}
