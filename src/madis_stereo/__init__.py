"""madis-stereo: MaDis-Stereo / CroCo-Stereo Transformer stereo matching."""

from madis_stereo.config import ModelConfig
from madis_stereo.metrics import stereo_metrics

__version__ = "0.1.0"

__all__ = ["ModelConfig", "__version__", "stereo_metrics"]
