"""Settings of the synthetic stereo generator (shared by the scene sampler and the renderer)."""

from __future__ import annotations

import dataclasses

__all__ = ["SyntheticConfig"]


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """Synthetic scene generator settings (YAML keys of ``{"name": "synthetic", ...}``).

    ``size`` is (height, width); disparities lie in [min_disparity, max_disparity] pixels. ``curved_prob``:
    share of objects with a curved (quadratic) surface; ``weak_texture_prob``: share of floors and walls
    (half that for the background) with weak, low-contrast texture; ``shading``: strength of the shading by
    surface orientation (0 = none). ``lighting`` scales the photometric differences between the views
    (0 = identical photometry); ``noise_std`` is the largest per-view Gaussian noise std (fraction of the
    0-255 range). Textures come from an atlas of ``atlas_tiles`` tiles of ``atlas_tile_size`` texels built
    from the seed. ``occlusion_mask: false`` skips the exact ``nonocc`` mask (None in the samples; training
    does not use it).
    """

    size: tuple[int, int] = (352, 704)
    min_disparity: float = 0.0
    max_disparity: float = 192.0
    seed: int = 0
    length: int = 10000
    min_objects: int = 6
    max_objects: int = 24
    thin_prob: float = 0.2
    slant_prob: float = 0.5
    max_extra_planes: int = 2
    textureless_prob: float = 0.08
    lighting: float = 1.0
    specular_prob: float = 0.2
    noise_std: float = 0.02
    blur_prob: float = 0.3
    curved_prob: float = 0.3
    weak_texture_prob: float = 0.35
    shading: float = 1.0
    atlas_tiles: int = 48
    atlas_tile_size: int = 256
    occlusion_mask: bool = True

    def __post_init__(self) -> None:
        if len(self.size) != 2 or min(self.size) < 8:
            raise ValueError(f"size {list(self.size)} must be (height, width), each at least 8")
        if not 0 <= self.min_disparity < self.max_disparity:
            raise ValueError(f"need 0 <= min_disparity < max_disparity, got {self.min_disparity}, {self.max_disparity}")
        if not 0 <= self.min_objects <= self.max_objects:
            raise ValueError(f"need 0 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}")
        if self.length < 1 or self.max_extra_planes < 0 or self.lighting < 0 or self.noise_std < 0:
            raise ValueError("length must be >= 1; max_extra_planes, lighting and noise_std >= 0")
        if self.atlas_tiles < 1 or self.atlas_tile_size < 4:
            raise ValueError(f"atlas_tiles must be >= 1 and atlas_tile_size >= 4, got {self.atlas_tiles}, "
                             f"{self.atlas_tile_size}")
        for name in ("thin_prob", "slant_prob", "textureless_prob", "specular_prob", "blur_prob", "curved_prob",
                     "weak_texture_prob", "shading"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
