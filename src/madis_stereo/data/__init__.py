"""Stereo data: file formats, benchmark datasets, a synthetic generator, augmentation, training wrapper.

See docs/DATA.md for the folder layout each dataset expects. ``TrainingDataset`` and ``worker_init_fn``
(torch) are imported on first use, so that reading files does not pay for importing torch.
"""

from typing import Any

from madis_stereo.data.augment import JITTERS, AugmentConfig, Augmentor, ColorStep, adjust, draw_color_plan
from madis_stereo.data.base import Frame, StereoDataset, load_frame
from madis_stereo.data.benchmarks import ETH3D, Kitti2012, Kitti2015, Middlebury, SceneFlow
from madis_stereo.data.datasets import DATASETS, MixtureDataset, build_dataset, build_mixture, dataset_keys
from madis_stereo.data.folder import FolderStereo
from madis_stereo.data.io import (
    read_calib,
    read_disparity,
    read_image,
    read_kitti_disparity,
    read_mask,
    read_pfm,
    write_image,
    write_kitti_disparity,
    write_pfm,
)
from madis_stereo.data.synthetic import SyntheticConfig, SyntheticRender, SyntheticStereo

__all__ = [
    "DATASETS",
    "ETH3D",
    "AugmentConfig",
    "Augmentor",
    "ColorStep",
    "JITTERS",
    "FolderStereo",
    "Frame",
    "Kitti2012",
    "Kitti2015",
    "Middlebury",
    "MixtureDataset",
    "SceneFlow",
    "StereoDataset",
    "SyntheticConfig",
    "SyntheticRender",
    "SyntheticStereo",
    "TrainingDataset",
    "adjust",
    "build_dataset",
    "build_mixture",
    "dataset_keys",
    "draw_color_plan",
    "load_frame",
    "read_calib",
    "read_disparity",
    "read_image",
    "read_kitti_disparity",
    "read_mask",
    "read_pfm",
    "worker_init_fn",
    "write_image",
    "write_kitti_disparity",
    "write_pfm",
]


def __getattr__(name: str) -> Any:
    if name in ("TrainingDataset", "worker_init_fn"):
        from madis_stereo.data import training

        return getattr(training, name)
    raise AttributeError(f"module 'madis_stereo.data' has no attribute '{name}'")
