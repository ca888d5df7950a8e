"""What a checkpoint holds: model config, provenance and training metrics, for ``madis-stereo info``.

Our ``.safetensors`` files are described from their header alone (no weights are loaded); CroCo ``.pth``
files are loaded (safely, see ``checkpoint.load_model``) and the architecture is read off the file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from madis_stereo.errors import CheckpointError
from madis_stereo.model.checkpoint import checkpoint_format, header_config, read_metadata
from madis_stereo.model.config import ModelConfig
from madis_stereo.model.registry import load_model, resolve_checkpoint

__all__ = ["checkpoint_info", "format_checkpoint_info"]


def _safetensors_params(path: Path) -> tuple[int, dict[str, int]]:
    """(number of parameters, tensor count per dtype) from a safetensors header."""
    from safetensors import safe_open

    total = 0
    dtypes: dict[str, int] = {}
    with safe_open(str(path), framework="pt") as fh:
        for key in fh.keys():
            piece = fh.get_slice(key)
            total += math.prod(piece.get_shape())
            dtype = str(piece.get_dtype())
            dtypes[dtype] = dtypes.get(dtype, 0) + 1
    return total, dtypes


def _architecture(config: ModelConfig) -> dict[str, Any]:
    return {
        "encoder": f"{config.enc_embed_dim} dim / {config.enc_depth} blocks / {config.enc_num_heads} heads",
        "decoder": f"{config.dec_embed_dim} dim / {config.dec_depth} blocks / {config.dec_num_heads} heads",
        "dpt_hooks": list(config.hooks),
        "crop": list(config.crop),
        "conf_mode": config.conf_mode,
    }


def checkpoint_info(path: str | Path) -> dict[str, Any]:
    """Describe a checkpoint (path, URL or registered name): ``{"path", "format", "parameters", "architecture",
    "config", "metadata", ...}``.

    ``format`` is "madis-stereo safetensors" or the CroCo kind; ``metadata`` holds provenance and training
    metrics as stored by ``save_model`` (ours) or the CroCo file's task/epoch.
    """
    path = resolve_checkpoint(path)
    kind = checkpoint_format(path)
    info: dict[str, Any] = {"path": str(path), "size_bytes": path.stat().st_size}
    if kind == "safetensors":
        header = read_metadata(path)
        config = header_config(path, header)
        try:
            params, dtypes = _safetensors_params(path)
        except Exception as err:  # safetensors raises its own error types
            raise CheckpointError(f"{path}: unreadable safetensors file ({err})") from None
        info.update(format="madis-stereo safetensors", format_version=header.get("format_version"),
                    parameters=params, dtypes=dtypes, metadata=header.get("metadata", {}))
    else:
        model, metadata = load_model(path, return_metadata=True)
        config = model.config
        kind = {"croco_stereo": "CroCo-Stereo .pth", "croco_pretrain": "CroCo v2 pretraining .pth",
                "madis_stereo": "MaDis-Stereo .pth"}
        info.update(format=kind.get(metadata.get("source"), "PyTorch .pth"),
                    parameters=sum(p.numel() for p in model.parameters()), metadata=metadata)
    info["architecture"] = _architecture(config)
    info["config"] = config.to_dict()
    return info


def _flatten(prefix: str, value: Any, out: list[tuple[str, str]]) -> None:
    if isinstance(value, Mapping) and value:
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    elif isinstance(value, float):
        out.append((prefix, f"{value:.6g}"))
    else:
        out.append((prefix, str(value)))


def format_checkpoint_info(info: Mapping[str, Any]) -> str:
    """Human-readable text of :func:`checkpoint_info`'s dict."""
    lines = [f"checkpoint   {info['path']}", f"format       {info['format']}",
             f"size         {info['size_bytes'] / 1e6:.1f} MB",
             f"parameters   {info['parameters'] / 1e6:.2f} M"]
    if info.get("dtypes"):
        lines.append("stored as    " + ", ".join(f"{k} ({v} tensors)" for k, v in info["dtypes"].items()))
    lines.append("architecture")
    lines += [f"  {k:<11}{v}" for k, v in info["architecture"].items()]
    lines.append("config")
    lines += [f"  {k:<17}{v}" for k, v in info["config"].items()]
    entries: list[tuple[str, str]] = []
    _flatten("", info.get("metadata") or {}, entries)
    lines.append("provenance and metrics" if entries else "provenance and metrics: none stored")
    width = max((len(k) for k, _ in entries), default=0) + 2
    lines += [f"  {k:<{width}}{v}" for k, v in entries]
    return "\n".join(lines)
