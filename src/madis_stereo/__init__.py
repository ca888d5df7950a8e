"""madis-stereo: MaDis-Stereo / CroCo-Stereo Transformer stereo matching.

    import madis_stereo as ms
    model = ms.StereoModel(ms.ModelConfig.preset("vitb_basedec"))
    out = model(left, right)          # out.disparity, out.confidence: [B, 1, H, W]
"""

from madis_stereo.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    InputError,
    MadisStereoError,
    TrainingError,
)
from madis_stereo.evaluation.metrics import stereo_metrics
from madis_stereo.inference.predictor import Prediction, Predictor, predict
from madis_stereo.inference.tiling import tiled_predict
from madis_stereo.model.checkpoint import load_default_model, load_model, save_model
from madis_stereo.model.config import ModelConfig
from madis_stereo.model.network import MaskedStereoOutput, StereoModel, StereoOutput
from madis_stereo.model.preprocess import normalize

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "InputError",
    "MadisStereoError",
    "MaskedStereoOutput",
    "ModelConfig",
    "Prediction",
    "Predictor",
    "StereoModel",
    "StereoOutput",
    "TrainingError",
    "__version__",
    "load_default_model",
    "load_model",
    "normalize",
    "predict",
    "save_model",
    "stereo_metrics",
    "tiled_predict",
]
