"""madis-stereo: MaDis-Stereo / CroCo-Stereo Transformer stereo matching."""

from madis_stereo.config import ModelConfig

__version__ = "0.1.0"

__all__ = ["ModelConfig", "__version__"]
