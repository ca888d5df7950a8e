"""The texture atlas both synthetic stereo renderers draw surface textures from.

``count`` square tiles of ``size`` texels, each a random texture from ``textures.random_texture`` (natural
image crops, value noise, patterns), built once per process from a seed. A layer maps left-image pixels to
texels of one tile (``SceneBatch.texmap``); outside the tile the texture is mirrored (:func:`reflect`).
Weak and textureless surfaces come from lowering a tile's contrast around its mean colour.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from madis_stereo.data.synthetic.textures import random_texture

__all__ = ["Atlas", "build_atlas", "reflect"]


@dataclasses.dataclass(frozen=True)
class Atlas:
    """``tiles`` uint8 [count, size, size, 3] and their mean colours ``means`` float32 [count, 3]."""

    tiles: np.ndarray
    means: np.ndarray

    @property
    def count(self) -> int:
        return self.tiles.shape[0]

    @property
    def size(self) -> int:
        return self.tiles.shape[1]


@functools.lru_cache(maxsize=4)
def build_atlas(seed: int, count: int, size: int, generation: int = 0) -> Atlas:
    """The atlas of ``count`` tiles of ``size`` x ``size`` texels for ``seed`` (cached per process);
    ``generation`` > 0 gives fresh atlases of the same kind (the device renderer's ``atlas_refresh``)."""
    if count < 1 or size < 4:
        raise ValueError(f"a texture atlas needs at least 1 tile of at least 4 texels, got {count} x {size}")
    rng = np.random.default_rng([seed, 0x7E7, generation])
    tiles = np.stack([random_texture(rng, size, size, textureless_prob=0.0) for _ in range(count)])
    tiles.setflags(write=False)
    return Atlas(tiles, tiles.reshape(count, -1, 3).mean(1).astype(np.float32))


def reflect(t, size: int):
    """Mirror texel coordinates ``t`` (NumPy array or tensor) into [0, size - 1] (period 2 (size - 1))."""
    last = size - 1
    return last - abs(t % (2 * last) - last)
