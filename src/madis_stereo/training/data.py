"""Datasets of a training run: the torch ``TrainingDataset`` wrapper and the builders from the ``data``
config section (through ``madis_stereo.data``).

Training items (``TrainingDataset``): ``{"left", "right": uint8 [3, H, W], "disparity": float32 [1, H, W]
(+inf = invalid), "name": str}`` at the training crop, deterministic from (seed, epoch, index). With
``data.render_on_device`` the batches come from ``DeviceBatches`` instead, already on the device.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import signal
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from madis_stereo.data import AugmentConfig, Augmentor, build_dataset, build_mixture
from madis_stereo.data.base import sample_at
from madis_stereo.errors import ConfigError, DataError
from madis_stereo.training.config import DataConfig
from madis_stereo.utils.config import from_dict

__all__ = ["TrainingDataset", "augment_config", "build_device_batches", "build_train_dataset", "build_val_dataset",
           "worker_error_message", "worker_init_fn"]

log = logging.getLogger(__name__)

SKIP_HINT = "data.skip_bad_samples=true skips unreadable samples (counting them)"


class TrainingDataset(torch.utils.data.Dataset):
    """Wrap a stereo dataset for training.

    ``ds[i]`` -> ``{"left": uint8 [3,H,W], "right": uint8 [3,H,W], "disparity": float32 [1,H,W] (+inf =
    invalid; all +inf when the dataset has no ground truth), "name": str}``. With an ``AugmentConfig`` all
    samples have its crop size (default collation works); with None they are returned at their own size.
    The augmentation RNG is ``np.random.default_rng([seed, epoch, i])``: reproducible, and different
    every epoch. The epoch lives in shared memory, so :meth:`set_epoch` reaches persistent DataLoader
    workers too (call it before iterating). Datasets with ``get(i, epoch)`` (e.g. SyntheticStereo) give
    new samples each epoch. ImageNet normalisation is left to the model side.

    A sample whose files cannot be read (``DataError``, naming the file) stops training, or with
    ``skip_bad=True`` is replaced by the next readable one (index + 1, ...); :attr:`bad_samples` counts the
    skips of all workers (shared memory).
    """

    def __init__(self, dataset: Any, augment: AugmentConfig | None = None, seed: int = 0,
                 skip_bad: bool = False) -> None:
        self.dataset = dataset
        self.augmentor = Augmentor(augment) if augment is not None else None
        self.seed = int(seed)
        self.skip_bad = bool(skip_bad)
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()
        self._bad = torch.zeros(1, dtype=torch.int64).share_memory_()

    @property
    def bad_samples(self) -> int:
        """How many unreadable samples were skipped so far (all epochs and workers)."""
        return int(self._bad[0])

    def set_epoch(self, epoch: int) -> None:
        self._epoch[0] = int(epoch)

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a training set of {len(self)} samples")
        epoch = self.epoch
        index, sample = self._readable(index, epoch)
        if self.augmentor is not None:
            sample = self.augmentor(sample, np.random.default_rng([self.seed, epoch, index]))
        left, right, disparity = sample["left"], sample["right"], sample.get("disparity")
        if disparity is None:
            disparity = np.full(left.shape[:2], np.inf, dtype=np.float32)
        return {
            "left": torch.from_numpy(np.ascontiguousarray(left.transpose(2, 0, 1))),
            "right": torch.from_numpy(np.ascontiguousarray(right.transpose(2, 0, 1))),
            "disparity": torch.from_numpy(np.ascontiguousarray(disparity, dtype=np.float32)[None]),
            "name": sample["name"],
        }

    def _readable(self, index: int, epoch: int) -> tuple[int, Any]:
        """(index, sample) of the sample at ``index``, or with ``skip_bad`` of the next readable one."""
        for attempt in range(len(self)):
            i = (index + attempt) % len(self)
            try:
                return i, sample_at(self.dataset, i, epoch)
            except DataError as err:
                if not self.skip_bad:
                    raise DataError(f"{err} ({SKIP_HINT})") from None
                self._bad += 1
                log.warning("skipping training sample %d: %s", i, err)
        raise DataError(f"no training sample can be read (all {len(self)} skipped)")


def worker_error_message(err: BaseException) -> str:
    """The original message of an error a DataLoader worker raised (PyTorch re-raises it in the main process
    with the worker's traceback as its message); other errors' first line."""
    text = str(err).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        return re.sub(r"^[\w.]+: ", "", last, count=1)
    return text.splitlines()[0] if text else type(err).__name__


def worker_init_fn(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: OpenCV runs sequentially inside each worker (the workers already run
    in parallel). ``setNumThreads(0)``, not 1: in a forked child, resizing the inherited thread pool to one
    thread can wait forever for threads that were not forked. Ctrl-C (SIGINT, sent to the whole process
    group) and SIGUSR1 are left to the main process, which finishes its step, saves and then ends the
    workers; SIGTERM keeps its default (the DataLoader ends its workers with it)."""
    cv2.setNumThreads(0)
    for name in ("SIGINT", "SIGUSR1"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)


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


def build_device_batches(cfg: DataConfig, crop: Sequence[int], batch_size: int, device: torch.device,
                         stream: int = 0) -> Any:
    """``DeviceBatches`` of the one synthetic spec of ``data.train`` (``data.render_on_device``)."""
    from madis_stereo.training.rendering import DeviceBatches

    specs = [dict(spec) for spec in cfg.train]
    if len(specs) != 1 or specs[0].get("name") != "synthetic":
        raise ConfigError("data.render_on_device renders the synthetic world: data.train must be exactly one "
                          "{name: synthetic, ...} spec")
    augment = None if cfg.augment is None else augment_config(cfg.augment, crop)
    if augment is not None and augment.scale_prob > 0:
        raise ConfigError("data.render_on_device renders at model.crop, with no x-scale or crop: set "
                          "data.augment.scale_prob to 0 (or data.augment to null)")
    specs[0].pop("repeat", None)
    dataset = build_dataset(specs[0])
    size = [int(v) for v in dataset.config.size]
    if size != [int(c) for c in crop]:
        raise ConfigError(f"data.render_on_device: data.train.0.size {size} must equal model.crop {list(crop)}")
    return DeviceBatches(dataclasses.replace(dataset.config, occlusion_mask=False), batch_size, device, stream,
                         atlas_refresh=cfg.atlas_refresh, augment=augment)


def build_val_dataset(cfg: DataConfig) -> Dataset | None:
    """The validation dataset (full-size items, tiled prediction), or None."""
    if cfg.val is None:
        return None
    return build_dataset(dict(cfg.val))
