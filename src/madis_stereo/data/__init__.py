"""Stereo data: file formats, benchmark datasets, a synthetic generator and augmentation (numpy, no torch).

See docs/DATA.md for the folder layout each dataset expects. The torch wrapper for training,
``TrainingDataset``, lives in :mod:`madis_stereo.training.data`.
"""

from madis_stereo.data.augment import JITTERS, AugmentConfig, Augmentor, ColorStep, adjust, draw_color_plan
from madis_stereo.data.base import Frame, StereoDataset, load_frame
from madis_stereo.data.benchmarks import ETH3D, Kitti2012, Kitti2015, Middlebury, SceneFlow
from madis_stereo.data.datasets import DATASETS, MixtureDataset, build_dataset, build_mixture, dataset_keys
from madis_stereo.data.folder import FolderStereo
from madis_stereo.data.formats import (
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
    "write_image",
    "write_kitti_disparity",
    "write_pfm",
]

