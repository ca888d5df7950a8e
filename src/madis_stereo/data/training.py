"""A torch Dataset for training: augmentation seeded by (seed, epoch, index), tensors out."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch

from madis_stereo.data.augment import AugmentConfig, Augmentor
from madis_stereo.data.base import sample_at

__all__ = ["TrainingDataset", "worker_init_fn"]


class TrainingDataset(torch.utils.data.Dataset):
    """Wrap a stereo dataset for training.

    ``ds[i]`` -> ``{"left": uint8 [3,H,W], "right": uint8 [3,H,W], "disparity": float32 [1,H,W] (+inf =
    invalid; all +inf when the dataset has no ground truth), "name": str}``. With an ``AugmentConfig`` all
    samples have its crop size (default collation works); with None they are returned at their own size.
    The augmentation RNG is ``np.random.default_rng([seed, epoch, i])``: reproducible, and different
    every epoch. The epoch lives in shared memory, so :meth:`set_epoch` reaches persistent DataLoader
    workers too (call it before iterating). Datasets with ``get(i, epoch)`` (e.g. SyntheticStereo) give
    new samples each epoch. ImageNet normalisation is left to the model side.
    """

    def __init__(self, dataset: Any, augment: AugmentConfig | None = None, seed: int = 0) -> None:
        self.dataset = dataset
        self.augmentor = Augmentor(augment) if augment is not None else None
        self.seed = int(seed)
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()

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
        sample = sample_at(self.dataset, index, epoch)
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


def worker_init_fn(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: OpenCV runs sequentially inside each worker (the workers already run
    in parallel). ``setNumThreads(0)``, not 1: in a forked child, resizing the inherited thread pool to one
    thread can wait forever for threads that were not forked."""
    cv2.setNumThreads(0)
