"""Datasets of a training run, built from the ``data`` config section through ``madis_stereo.data``.

Training items (``TrainingDataset``): ``{"left", "right": uint8 [3, H, W], "disparity": float32 [1, H, W]
(+inf = invalid), "name": str}`` at the training crop, deterministic from (seed, epoch, index).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from torch.utils.data import Dataset

from madis_stereo.config import ConfigError, from_dict
from madis_stereo.training.config import DataConfig

__all__ = ["augment_config", "build_train_dataset", "build_val_dataset", "worker_init"]


def _data_module() -> ModuleType:
    module = importlib.import_module("madis_stereo.data")
    if not hasattr(module, "build_dataset"):
        raise ConfigError("this installation has no dataset support (madis_stereo.data.build_dataset is missing)")
    return module


def augment_config(cls: type, fields: dict[str, Any], crop: Sequence[int]) -> Any:
    """``cls`` (the data package's AugmentConfig) from ``data.augment``; its crop defaults to ``model.crop``."""
    fields = dict(fields)
    names = {f.name for f in dataclasses.fields(cls)}
    if "crop" in names:
        given = fields.setdefault("crop", list(crop))
        if [int(c) for c in given] != [int(c) for c in crop]:
            raise ConfigError(f"data.augment.crop {list(given)} differs from model.crop {list(crop)}; set model.crop")
    return from_dict(cls, fields, prefix="data.augment.")


def build_train_dataset(cfg: DataConfig, crop: Sequence[int], seed: int) -> Dataset:
    """The training mixture wrapped in ``TrainingDataset`` (augmentation, crop, per-epoch determinism)."""
    if not cfg.train:
        raise ConfigError("data.train is empty: list at least one dataset spec")
    data = _data_module()
    mixture = data.build_mixture([dict(spec) for spec in cfg.train])
    augment = None if cfg.augment is None else augment_config(data.AugmentConfig, cfg.augment, crop)
    return data.TrainingDataset(mixture, augment, seed)


def build_val_dataset(cfg: DataConfig) -> Dataset | None:
    """The validation dataset (full-size items, tiled prediction), or None."""
    if cfg.val is None:
        return None
    return _data_module().build_dataset(dict(cfg.val))


def worker_init() -> Callable[[int], None] | None:
    """The data package's DataLoader ``worker_init_fn`` (OpenCV threading in workers), where it has one."""
    return getattr(importlib.import_module("madis_stereo.data"), "worker_init_fn", None)
