"""Datasets of a training run, built from the ``data`` config section through ``madis_stereo.data``.

Training items (``TrainingDataset``): ``{"left", "right": uint8 [3, H, W], "disparity": float32 [1, H, W]
(+inf = invalid), "name": str}`` at the training crop, deterministic from (seed, epoch, index).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch.utils.data import Dataset

from madis_stereo.config import ConfigError, from_dict
from madis_stereo.data import AugmentConfig, TrainingDataset, build_dataset, build_mixture
from madis_stereo.training.config import DataConfig

__all__ = ["augment_config", "build_train_dataset", "build_val_dataset"]


def augment_config(fields: dict[str, Any], crop: Sequence[int]) -> AugmentConfig:
    """AugmentConfig from ``data.augment``; its crop defaults to ``model.crop`` and must equal it."""
    fields = dict(fields)
    given = fields.setdefault("crop", list(crop))
    if [int(c) for c in given] != [int(c) for c in crop]:
        raise ConfigError(f"data.augment.crop {list(given)} differs from model.crop {list(crop)}; set model.crop")
    return from_dict(AugmentConfig, fields, prefix="data.augment.")


def build_train_dataset(cfg: DataConfig, crop: Sequence[int], seed: int) -> Dataset:
    """The training mixture wrapped in ``TrainingDataset`` (augmentation, crop, per-epoch determinism)."""
    if not cfg.train:
        raise ConfigError("data.train is empty: list at least one dataset spec")
    mixture = build_mixture([dict(spec) for spec in cfg.train])
    augment = None if cfg.augment is None else augment_config(cfg.augment, crop)
    return TrainingDataset(mixture, augment, seed, skip_bad=cfg.skip_bad_samples)


def build_val_dataset(cfg: DataConfig) -> Dataset | None:
    """The validation dataset (full-size items, tiled prediction), or None."""
    if cfg.val is None:
        return None
    return build_dataset(dict(cfg.val))
