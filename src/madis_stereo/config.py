"""Typed configuration: model presets, strict YAML loading and ``key=value`` overrides.

Unknown keys are errors (named in the message), values are parsed as YAML scalars, and nothing is ever
evaluated as code.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

__all__ = [
    "ConfigError",
    "ModelConfig",
    "apply_overrides",
    "from_dict",
    "load_yaml",
    "to_dict",
]

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value or key is invalid (the message names it)."""


# --------------------------------------------------------------------------------------------------
# generic dataclass <-> dict
# --------------------------------------------------------------------------------------------------


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-Python dict of a (nested) config dataclass; tuples become lists (YAML/JSON friendly)."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(cfg)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert ``value`` to the annotated type ``tp``; raise ConfigError naming ``where``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if dataclasses.is_dataclass(tp):
        if dataclasses.is_dataclass(value):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, prefix=f"{where}.")
    if origin in (tuple, list, Sequence) or tp in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        items = [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin is tuple or tp is tuple) else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-5" (no dot) as a string; it is a number to any reader
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise ConfigError by name."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        names = ", ".join(f"'{prefix}{k}'" for k in unknown)
        raise ConfigError(f"unknown config key(s) {names}; valid keys: {', '.join(sorted(fields))}")
    kwargs = {name: _coerce(value, hints[name], f"{prefix}{name}") for name, value in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: {err}") from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing or malformed file raises ConfigError naming it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict:
    """Apply ``a.b.c=value`` strings to a nested dict (value parsed as YAML); return a new dict.

    Keys are validated strictly when the dict is turned into dataclasses with :func:`from_dict`.
    """
    out = _deep_copy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"unknown config key '{key}' in override {item!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            child = _child(node, part, item)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, (dict, list)):
                raise ConfigError(f"override {item!r}: '{part}' is not a section")
            node = child
        if isinstance(node, list):
            _list_index(node, parts[-1], item)
            node[int(parts[-1])] = value
        else:
            node[parts[-1]] = value
    return out


def _list_index(node: list, part: str, item: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"override {item!r}: '{part}' is not an index of a list of {len(node)}")
    return int(part)


def _child(node: dict | list, part: str, item: str) -> Any:
    """``node[part]``; in a list ``part`` is an index (``data.train.0.root=...``)."""
    if isinstance(node, list):
        return node[_list_index(node, part, item)]
    return node.get(part)


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data


# --------------------------------------------------------------------------------------------------
# model configuration
# --------------------------------------------------------------------------------------------------

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
    # CroCo v2 architectures (docs/METHOD.md, "Architecture").
    "vitb_smalldec": ModelConfig(enc_embed_dim=768, enc_depth=12, enc_num_heads=12,
                                 dec_embed_dim=512, dec_depth=8, dec_num_heads=16),
    "vitb_basedec": ModelConfig(enc_embed_dim=768, enc_depth=12, enc_num_heads=12,
                                dec_embed_dim=768, dec_depth=12, dec_num_heads=12),
    "vitl_basedec": ModelConfig(enc_embed_dim=1024, enc_depth=24, enc_num_heads=16,
                                dec_embed_dim=768, dec_depth=12, dec_num_heads=12),
}
