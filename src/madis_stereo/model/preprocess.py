"""Input preprocessing shared by inference and training: ImageNet normalisation of uint8 images."""

from __future__ import annotations

from torch import Tensor

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "normalize"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(images: Tensor) -> Tensor:
    """uint8 (or [0, 255] float) images [B, 3, H, W] -> ImageNet-normalised float32."""
    x = images.float() / 255.0
    mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std
