"""The network: RoPE, Transformer blocks, DPT head, StereoModel, masks; its config, checkpoints and input
normalisation. Names are imported on first use, so ``madis_stereo.model.config`` loads without torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from madis_stereo.utils.lazy import lazy_exports

if TYPE_CHECKING:
    from madis_stereo.model.masking import random_masks, visible_index
    from madis_stereo.model.network import MaskedStereoOutput, PairEncoding, StereoModel, StereoOutput

__all__ = ["MaskedStereoOutput", "PairEncoding", "StereoModel", "StereoOutput", "random_masks", "visible_index"]

__getattr__, __dir__ = lazy_exports(__name__, globals(), {
    "MaskedStereoOutput": "madis_stereo.model.network",
    "PairEncoding": "madis_stereo.model.network",
    "StereoModel": "madis_stereo.model.network",
    "StereoOutput": "madis_stereo.model.network",
    "random_masks": "madis_stereo.model.masking",
    "visible_index": "madis_stereo.model.masking",
})
