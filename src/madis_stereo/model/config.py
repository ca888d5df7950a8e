"""Model configuration: ``ModelConfig``, the named presets, CroCo's default DPT hooks and tile-blend modes."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import yaml

from madis_stereo.errors import ConfigError
from madis_stereo.utils.config import from_dict, to_dict

__all__ = ["CONF_MODES_HELP", "PRESETS", "ModelConfig", "default_hooks", "parse_conf_mode"]

CONF_MODES_HELP = "conf_expsigmoid_B_S (e.g. conf_expsigmoid_15_3) or conf_expbetaB (e.g. conf_expbeta3)"


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture of a CroCo-Stereo / MaDis-Stereo network plus its inference defaults.

    ``dpt_hooks`` index the concatenated list [encoder block outputs..., decoder block outputs...];
    ``None`` means CroCo-Stereo's default (``default_hooks``). ``laplace_b`` is the scale ``b`` of the
    bounded log-scale the model was trained with (``madis.laplace_b``); :func:`madis_stereo.certainty`
    reads the confidence logit with it.
    """

    enc_embed_dim: int = 768
    enc_depth: int = 12
    enc_num_heads: int = 12
    dec_embed_dim: int = 768
    dec_depth: int = 12
    dec_num_heads: int = 12
    patch_size: int = 16
    mlp_ratio: float = 4.0
    rope_freq: float = 100.0
    norm_mem: bool = True
    dpt_hooks: tuple[int, ...] | None = None
    dpt_layer_dims: tuple[int, int, int, int] = (96, 192, 384, 768)
    dpt_feature_dim: int = 256
    dpt_last_dim: int = 32
    num_channels: int = 2
    crop: tuple[int, int] = (352, 704)
    conf_mode: str = "conf_expsigmoid_15_3"
    laplace_b: float = 3.0

    def __post_init__(self) -> None:
        for name in ("enc", "dec"):
            dim, heads = getattr(self, f"{name}_embed_dim"), getattr(self, f"{name}_num_heads")
            if heads <= 0 or dim % heads:
                raise ValueError(f"{name}_embed_dim ({dim}) must be divisible by {name}_num_heads ({heads})")
            if (dim // heads) % 4:
                raise ValueError(f"{name} head dim {dim // heads} must be a multiple of 4 for 2D RoPE")
        if self.enc_depth < 1 or self.dec_depth < 1:
            raise ValueError("enc_depth and dec_depth must be at least 1")
        if self.dpt_hooks is not None:
            if len(self.dpt_hooks) != 4:
                raise ValueError(f"dpt_hooks needs 4 layer indices, got {list(self.dpt_hooks)}")
            last = self.enc_depth + self.dec_depth - 1
            if any(h < 0 or h > last for h in self.dpt_hooks):
                raise ValueError(f"dpt_hooks {list(self.dpt_hooks)} out of range 0..{last}")
        if len(self.crop) != 2 or any(c <= 0 or c % 32 for c in self.crop):
            raise ValueError(f"crop {list(self.crop)} must be two positive multiples of 32")
        parse_conf_mode(self.conf_mode)
        if not self.laplace_b > 0 or not math.isfinite(self.laplace_b):
            raise ValueError(f"laplace_b must be a positive number, got {self.laplace_b}")

    @property
    def hooks(self) -> tuple[int, ...]:
        """The DPT hooks in effect (explicit or CroCo-Stereo's default)."""
        return tuple(self.dpt_hooks) if self.dpt_hooks is not None else default_hooks(self.enc_depth, self.dec_depth)

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def preset(cls, name: str, **changes: Any) -> ModelConfig:
        """A named architecture (see ``PRESETS``), optionally with fields changed."""
        if name not in PRESETS:
            raise ConfigError(f"unknown model preset '{name}'; choose from {', '.join(PRESETS)}")
        return dataclasses.replace(PRESETS[name], **changes)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Strict construction; ``{"preset": name, ...}`` starts from a preset."""
        data = dict(data)
        preset = data.pop("preset", None)
        if preset is not None:
            base = to_dict(cls.preset(preset))
            base.update(data)
            data = base
        return from_dict(cls, data)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> ModelConfig:
        data = yaml.safe_load(text) or {}
        return cls.from_dict(data)


def default_hooks(enc_depth: int, dec_depth: int) -> tuple[int, ...]:
    """CroCo-Stereo's default DPT hooks: the last layer and three more, ``step`` layers apart.

    CroCo uses step {8: 3, 12: 4, 24: 8}[dec_depth], i.e. ceil(dec_depth / 3); this is the formula that
    reproduces the public checkpoints' hooks ([10, 13, 16, 19] for ViT-B + small decoder).
    """
    step = max(1, math.ceil(dec_depth / 3))
    last = enc_depth + dec_depth - 1
    return tuple(max(0, last - i * step) for i in range(3, -1, -1))


def parse_conf_mode(mode: str) -> tuple[str, float, float]:
    """Parse a tile confidence mode into ("expsigmoid", beta, beta_s) or ("expbeta", beta, 1)."""
    try:
        if mode.startswith("conf_expsigmoid_"):
            beta, beta_s = (float(v) for v in mode[len("conf_expsigmoid_") :].split("_"))
            return "expsigmoid", beta, beta_s
        if mode.startswith("conf_expbeta"):
            return "expbeta", float(mode[len("conf_expbeta") :]), 1.0
    except ValueError:
        pass
    raise ConfigError(f"unknown confidence mode '{mode}'; expected {CONF_MODES_HELP}")


PRESETS: dict[str, ModelConfig] = {
    # CPU-sized models of our own (README lists them).
    "tiny": ModelConfig(
        enc_embed_dim=96, enc_depth=4, enc_num_heads=4, dec_embed_dim=96, dec_depth=4, dec_num_heads=4,
        dpt_layer_dims=(24, 48, 96, 192), dpt_feature_dim=64, dpt_last_dim=32, crop=(128, 256),
    ),
    # ~12M parameters: the bundled model's size (24 MB in fp16).
    "small": ModelConfig(
        enc_embed_dim=256, enc_depth=6, enc_num_heads=4, dec_embed_dim=256, dec_depth=4, dec_num_heads=4,
        dpt_layer_dims=(32, 64, 128, 256), dpt_feature_dim=96, dpt_last_dim=32, crop=(256, 512),
    ),
    # CroCo v2 architectures (docs/METHOD.md section 1).
    "vitb_smalldec": ModelConfig(enc_embed_dim=768, enc_depth=12, enc_num_heads=12,
                                 dec_embed_dim=512, dec_depth=8, dec_num_heads=16),
    "vitb_basedec": ModelConfig(enc_embed_dim=768, enc_depth=12, enc_num_heads=12,
                                dec_embed_dim=768, dec_depth=12, dec_num_heads=12),
    "vitl_basedec": ModelConfig(enc_embed_dim=1024, enc_depth=24, enc_num_heads=16,
                                dec_embed_dim=768, dec_depth=12, dec_num_heads=12),
}
