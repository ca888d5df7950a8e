"""The network: RoPE, Transformer blocks, DPT head, StereoModel, masks."""

from madis_stereo.model.masking import random_masks, visible_index
from madis_stereo.model.network import MaskedStereoOutput, PairEncoding, StereoModel, StereoOutput

__all__ = ["MaskedStereoOutput", "PairEncoding", "StereoModel", "StereoOutput", "random_masks", "visible_index"]
