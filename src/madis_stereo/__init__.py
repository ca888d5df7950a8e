"""madis-stereo: MaDis-Stereo / CroCo-Stereo Transformer stereo matching.

    import madis_stereo as ms
    model = ms.StereoModel(ms.ModelConfig.preset("vitb_basedec"))
    out = model(left, right)          # out.disparity, out.confidence: [B, 1, H, W]

The public names below are imported on first use (PEP 562), so ``import madis_stereo`` and the command
line's ``--help`` do not pay for importing torch. docs/ARCHITECTURE.md describes the package layout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from madis_stereo.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    DownloadError,
    InputError,
    MadisStereoError,
    TrainingError,
    TrainingInterrupted,
)
from madis_stereo.utils.lazy import lazy_exports

if TYPE_CHECKING:
    from madis_stereo.evaluation.metrics import stereo_metrics
    from madis_stereo.inference.predictor import Prediction, Predictor, predict
    from madis_stereo.inference.tiling import tiled_predict
    from madis_stereo.model.checkpoint import load_default_model, save_model
    from madis_stereo.model.config import ModelConfig
    from madis_stereo.model.network import MaskedStereoOutput, StereoModel, StereoOutput
    from madis_stereo.model.preprocess import normalize
    from madis_stereo.model.registry import load_model

# public name -> module that defines it
_LAZY = {
    "MaskedStereoOutput": "madis_stereo.model.network",
    "ModelConfig": "madis_stereo.model.config",
    "Prediction": "madis_stereo.inference.predictor",
    "Predictor": "madis_stereo.inference.predictor",
    "StereoModel": "madis_stereo.model.network",
    "StereoOutput": "madis_stereo.model.network",
    "load_default_model": "madis_stereo.model.checkpoint",
    "load_model": "madis_stereo.model.registry",
    "normalize": "madis_stereo.model.preprocess",
    "predict": "madis_stereo.inference.predictor",
    "save_model": "madis_stereo.model.checkpoint",
    "stereo_metrics": "madis_stereo.evaluation.metrics",
    "tiled_predict": "madis_stereo.inference.tiling",
}


def _version() -> str:
    """The installed distribution's version; in a source tree that is not installed, pyproject.toml's."""
    from importlib import metadata
    from pathlib import Path

    try:
        return metadata.version("madis-stereo")
    except metadata.PackageNotFoundError:
        pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
        if pyproject.is_file():
            import re

            found = re.search(r'^version\s*=\s*"([^"]+)"', pyproject.read_text(), re.M)
            if found:
                return found.group(1)
        return "0+unknown"


__version__ = _version()

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DownloadError",
    "InputError",
    "MadisStereoError",
    "MaskedStereoOutput",
    "ModelConfig",
    "Prediction",
    "Predictor",
    "StereoModel",
    "StereoOutput",
    "TrainingError",
    "TrainingInterrupted",
    "__version__",
    "load_default_model",
    "load_model",
    "normalize",
    "predict",
    "save_model",
    "stereo_metrics",
    "tiled_predict",
]


__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)
