"""madis-stereo: MaDis-Stereo / CroCo-Stereo Transformer stereo matching.

    import madis_stereo as ms
    model = ms.StereoModel(ms.ModelConfig.preset("vitb_basedec"))
    out = model(left, right)          # out.disparity, out.confidence: [B, 1, H, W]
"""

from madis_stereo.checkpoint import load_default_model, load_model, save_model
from madis_stereo.config import ModelConfig
from madis_stereo.errors import CheckpointError, DataError, InputError
from madis_stereo.inference import Prediction, Predictor, normalize, predict, tiled_predict
from madis_stereo.metrics import stereo_metrics
from madis_stereo.model.masking import random_masks
from madis_stereo.model.network import MaskedStereoOutput, StereoModel, StereoOutput

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "DataError",
    "InputError",
    "MaskedStereoOutput",
    "ModelConfig",
    "Prediction",
    "Predictor",
    "StereoModel",
    "StereoOutput",
    "__version__",
    "load_default_model",
    "load_model",
    "normalize",
    "predict",
    "random_masks",
    "save_model",
    "stereo_metrics",
    "tiled_predict",
]
