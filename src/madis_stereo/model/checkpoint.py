"""Checkpoints: our safetensors format, and import/export of CroCo-Stereo and CroCo v2 pretraining ``.pth``.

Our file: a ``.safetensors`` with the weights; its metadata header holds ``madis_stereo`` = JSON
``{"format_version", "config", "metadata"}`` (model config incl. training crop and tile confidence mode,
and provenance such as dataset, steps and metrics). No pickle is involved.

CroCo files are pickles: they are read with ``torch.load(weights_only=True)`` allowing only
``argparse.Namespace``, so a file whose pickle would run code is refused without running it.
"""

from __future__ import annotations

import argparse
import json
import logging
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Literal, overload

import torch
from torch import Tensor

from madis_stereo.errors import CheckpointError, ConfigError, first_line
from madis_stereo.model.config import ModelConfig
from madis_stereo.model.network import StereoModel
from madis_stereo.utils.files import atomic_path

__all__ = [
    "CROCO_KEY_TABLE",
    "bundled_model_file",
    "checkpoint_format",
    "default_model_path",
    "load_default_model",
    "from_croco_state_dict",
    "header_config",
    "load_model",
    "croco_checkpoint_config",
    "load_weights",
    "read_metadata",
    "read_torch_file",
    "read_weights",
    "save_model",
    "to_croco_state_dict",
]

log = logging.getLogger(__name__)

FORMAT_KEY = "madis_stereo"
FORMAT_VERSION = 1

# Our parameter names -> CroCo's. Each rule: a regex on our key and the CroCo key template(s); templates
# use the regex groups plus ``i1`` = group ``i`` + 1. The first CroCo name is the primary one; further names
# are the aliases CroCo's DPT module stores twice (act_N_postprocess / scratch.layerN_rn).
CROCO_KEY_TABLE: list[tuple[str, tuple[str, ...]]] = [
    (r"head\.project\.(?P<i>\d)\.(?P<rest>.+)",
     ("head.dpt.act_postprocess.{i}.{rest}", "head.dpt.act_{i1}_postprocess.{rest}")),
    (r"head\.layer_rn\.(?P<i>\d)\.(?P<rest>.+)",
     ("head.dpt.scratch.layer_rn.{i}.{rest}", "head.dpt.scratch.layer{i1}_rn.{rest}")),
    (r"head\.fusion\.(?P<i>\d)\.rcu(?P<m>[12])\.(?P<rest>.+)",
     ("head.dpt.scratch.refinenet{i1}.resConfUnit{m}.{rest}",)),
    (r"head\.fusion\.(?P<i>\d)\.out_conv\.(?P<rest>.+)", ("head.dpt.scratch.refinenet{i1}.out_conv.{rest}",)),
    (r"head\.out\.(?P<rest>.+)", ("head.dpt.head.{rest}",)),
    (r"recon_head\.(?P<rest>.+)", ("prediction_head.{rest}",)),
    (r"(?P<same>(patch_embed|enc_blocks|enc_norm|decoder_embed|dec_blocks|dec_norm|mask_token)\b.*)", ("{same}",)),
]

# Parameters each CroCo file kind holds (the rest of our model is absent from it).
_STEREO_EXCLUDE = ("mask_token", "recon_head.")
_PRETRAIN_EXCLUDE = ("head.",)


def croco_names(our_key: str) -> tuple[str, ...]:
    """CroCo key(s) of one of our parameter names (primary first, then aliases)."""
    for pattern, templates in CROCO_KEY_TABLE:
        m = re.fullmatch(pattern, our_key)
        if m:
            groups = m.groupdict()
            if "i" in groups:
                groups["i1"] = str(int(groups["i"]) + 1)
            return tuple(t.format(**groups) for t in templates)
    raise KeyError(f"no CroCo name for parameter '{our_key}'")


def to_croco_state_dict(model: StereoModel, kind: str = "stereo") -> dict[str, Tensor]:
    """Our state dict under CroCo's names: ``stereo`` (CroCo-Stereo, with alias keys) or ``pretrain``."""
    exclude = {"stereo": _STEREO_EXCLUDE, "pretrain": _PRETRAIN_EXCLUDE}[kind]
    out: dict[str, Tensor] = {}
    for key, value in model.state_dict().items():
        if key.startswith(exclude):
            continue
        for name in croco_names(key):
            out[name] = value
    return out


def from_croco_state_dict(model: StereoModel, state: dict[str, Tensor], source: str, kind: str) -> list[str]:
    """Load a CroCo state dict into ``model``; return our parameter names the file did not provide.

    Alias keys must agree with their primary key; unknown keys, shape mismatches and missing parameters
    that the file kind should hold raise CheckpointError.
    """
    ours = model.state_dict()
    wanted = {}
    for key in ours:
        for name in croco_names(key):
            wanted[name] = key
    unknown = sorted(k for k in state if k not in wanted and not k.endswith("pos_embed"))
    if unknown:
        raise CheckpointError(f"{source}: unexpected CroCo keys {unknown[:5]} (is this a {kind} checkpoint?)")
    loaded: dict[str, Tensor] = {}
    for name, value in state.items():
        key = wanted.get(name)
        if key is None:
            continue
        if tuple(value.shape) != tuple(ours[key].shape):
            raise CheckpointError(
                f"{source}: '{name}' has shape {list(value.shape)}, the model expects {list(ours[key].shape)}"
            )
        if key in loaded and not value.is_meta and not torch.equal(loaded[key], value):
            raise CheckpointError(f"{source}: alias key '{name}' disagrees with its primary key")
        loaded[key] = value
    exclude = _STEREO_EXCLUDE if kind == "stereo" else _PRETRAIN_EXCLUDE
    missing = sorted(k for k in ours if k not in loaded)
    required = [k for k in missing if not k.startswith(exclude)]
    if required:
        raise CheckpointError(f"{source}: missing parameters {required[:5]} ({len(required)} in all)")
    model.load_state_dict(loaded, strict=False)
    return missing


# --------------------------------------------------------------------------------------------------
# our format
# --------------------------------------------------------------------------------------------------


def save_model(model: StereoModel, path: str | Path, dtype: torch.dtype | None = None, **metadata: Any) -> Path:
    """Write ``model`` to a safetensors file (atomically) with its config and ``metadata`` in the header.

    ``dtype`` (e.g. torch.float16) stores floating weights at reduced precision; loading restores float32.
    """
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {}
    for key, value in model.state_dict().items():
        value = value.detach().to("cpu")
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        tensors[key] = value.contiguous()
    header = {"format_version": FORMAT_VERSION, "config": model.config.to_dict(), "metadata": metadata}
    try:
        text = json.dumps(header, default=_json_default)
    except (TypeError, ValueError, RuntimeError) as err:  # .item() of a multi-element tensor: RuntimeError
        raise CheckpointError(f"metadata for {path} is not JSON-serialisable: {first_line(err)}") from None
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={FORMAT_KEY: text})
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, (Path, torch.dtype)):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _checkpoints_in(folder: Path) -> str:
    """``; it holds ...`` naming a run folder's best and latest checkpoints ('' when it holds none)."""
    steps = sorted((int(p.stem[len("ckpt_step"):]), p) for p in folder.glob("ckpt_step*.safetensors")
                   if p.stem[len("ckpt_step"):].isdigit())
    found = []
    if (folder / "best.safetensors").is_file():
        found.append(f"{folder / 'best.safetensors'} (best validation)")
    if steps:
        found.append(f"{steps[-1][1]} (the latest)")
    others = sorted(p.name for p in folder.glob("*.safetensors") if p.name != "best.safetensors"
                    and not p.name.startswith("ckpt_step")) + sorted(p.name for p in folder.glob("*.pth"))
    found += [str(folder / name) for name in others[:3]]
    return f"; it holds {', '.join(found)}" if found else ""


def checkpoint_format(path: Path) -> str:
    """'safetensors', 'torch' (zip or legacy pickle) or raise CheckpointError (missing, folder, other)."""
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file{_checkpoints_in(path)}")
    with open(path, "rb") as fh:
        head = fh.read(16)
    if len(head) >= 9:
        header_len = int.from_bytes(head[:8], "little")
        if head[8:9] == b"{" and 2 <= header_len <= 100_000_000:
            return "safetensors"
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        return "torch"
    raise CheckpointError(f"{path} is not a checkpoint (neither safetensors nor a PyTorch .pth file)")


def read_metadata(path: str | Path) -> dict[str, Any]:
    """Header of one of our checkpoints: {"format_version", "config", "metadata"}."""
    from safetensors import safe_open

    path = Path(path)
    if checkpoint_format(path) != "safetensors":
        raise CheckpointError(f"{path} is a PyTorch pickle, not a madis-stereo safetensors checkpoint")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except Exception as err:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: unreadable safetensors file ({first_line(err)})") from None
    if FORMAT_KEY not in meta:
        raise CheckpointError(f"{path}: safetensors file without a madis-stereo header (no model config)")
    try:
        header = json.loads(meta[FORMAT_KEY])
    except json.JSONDecodeError:
        raise CheckpointError(f"{path}: corrupt madis-stereo header") from None
    if not isinstance(header, dict) or not isinstance(header.get("config"), dict):
        raise CheckpointError(f"{path}: corrupt madis-stereo header (no model config mapping)")
    if not isinstance(header.setdefault("metadata", {}), dict):
        raise CheckpointError(f"{path}: corrupt madis-stereo header (metadata is not a mapping)")
    return header


def header_config(path: Path, header: dict[str, Any], overrides: dict[str, Any] | None = None) -> ModelConfig:
    """The model config stored in one of our headers (``read_metadata``), with ``overrides`` applied."""
    try:
        return ModelConfig.from_dict({**header["config"], **(overrides or {})})
    except (ConfigError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: invalid model config in header ({err})") from None


def _load_ours(path: Path, overrides: dict[str, Any]) -> tuple[StereoModel, dict[str, Any]]:
    header = read_metadata(path)
    config = header_config(path, header, overrides)
    state = read_weights(path)
    _check_fits(config, state, str(path))
    model = StereoModel(config)
    load_weights(model, state, str(path))
    return model, header["metadata"]


def _check_fits(config: ModelConfig, state: dict[str, Tensor], source: str) -> None:
    """Check the weights against the config before allocating the model: a header may claim any size.

    The block counts come first (a model with millions of blocks would take long even to describe), then
    every shape, on a model built on the ``meta`` device (no memory).
    """
    for name, depth in (("enc_blocks", config.enc_depth), ("dec_blocks", config.dec_depth)):
        stored = {key.split(".")[1] for key in state if key.startswith(f"{name}.")}
        if len(stored) != depth:
            raise CheckpointError(f"{source}: the config says {depth} {name}, the weights hold {len(stored)}")
    with torch.device("meta"):
        shell = StereoModel(config)
    load_weights(shell, state, source, check_only=True)


def read_weights(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a safetensors file; a truncated or corrupt file raises CheckpointError."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as err:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: truncated or corrupt weights ({first_line(err)})") from None


def load_weights(model: StereoModel, state: dict[str, Tensor], source: str = "state dict",
                 check_only: bool = False) -> None:
    """Strictly load our state dict (any float dtype) into ``model``; mismatches raise CheckpointError.

    ``check_only``: compare the keys and shapes without loading.
    """
    ours = model.state_dict()
    missing = sorted(set(ours) - set(state))
    unexpected = sorted(set(state) - set(ours))
    if missing or unexpected:
        raise CheckpointError(
            f"{source}: weights do not match the architecture (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    for key, value in state.items():
        if tuple(value.shape) != tuple(ours[key].shape):
            raise CheckpointError(
                f"{source}: '{key}' has shape {list(value.shape)}, the model expects {list(ours[key].shape)}"
            )
    if check_only:
        return
    model.load_state_dict({k: v.to(ours[k].dtype) for k, v in state.items()})


# --------------------------------------------------------------------------------------------------
# CroCo files
# --------------------------------------------------------------------------------------------------


def read_torch_file(path: Path) -> Any:
    """A ``.pth`` file's contents, unpickled with ``weights_only`` (tensors, plain data, argparse.Namespace).

    A pickle that would build any other object (i.e. could run code) is refused without running it.
    """
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        what = f" ({found.group(1)})" if found else ""
        raise CheckpointError(
            f"refusing to load {path}: its pickle holds Python objects other than tensors and plain data{what}, "
            "which could run code when loaded; load it only in code you trust and save its state_dict "
            "(or use a madis-stereo .safetensors checkpoint)"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as err:
        raise CheckpointError(f"{path}: truncated or corrupt PyTorch file ({first_line(err)[:160]})") from None


def _croco_config(kwargs: dict[str, Any], state: dict[str, Tensor], source: str, **extra: Any) -> ModelConfig:
    kwargs = dict(kwargs)
    pos = kwargs.pop("pos_embed", "RoPE100")
    if not (isinstance(pos, str) and pos.startswith("RoPE")):
        raise CheckpointError(f"{source}: position embedding '{pos}' is not supported (only RoPE models)")
    kwargs.pop("img_size", None)
    names = ("enc_embed_dim", "enc_depth", "enc_num_heads", "dec_embed_dim", "dec_depth", "dec_num_heads",
             "mlp_ratio", "patch_size")
    fields: dict[str, Any] = {k: kwargs.pop(k) for k in names if k in kwargs}
    norm_mem = kwargs.pop("norm_im2_in_dec", True)
    ignored = {k: v for k, v in kwargs.items() if k not in ("mask_ratio",)}
    if ignored:
        log.warning("%s: ignoring CroCo arguments %s", source, sorted(ignored))
    fields.update(rope_freq=float(pos[4:] or 100), norm_mem=bool(norm_mem))
    base = ModelConfig.preset("vitb_basedec").to_dict()
    base.update(fields)
    if "head.dpt.act_postprocess.0.0.weight" in state:
        base.update(_dpt_dims(state))
    base.update(extra)
    try:
        return ModelConfig.from_dict(base)
    except (ConfigError, ValueError) as err:
        raise CheckpointError(f"{source}: unsupported architecture ({err})") from None


def _dpt_dims(state: dict[str, Tensor]) -> dict[str, Any]:
    """DPT widths read off the weight shapes (CroCo does not store them in its args)."""
    layer_dims = [int(state[f"head.dpt.act_postprocess.{i}.0.weight"].shape[0]) for i in range(4)]
    return {
        "dpt_layer_dims": layer_dims,
        "dpt_feature_dim": int(state["head.dpt.scratch.layer_rn.0.weight"].shape[0]),
        "dpt_last_dim": int(state["head.dpt.head.2.weight"].shape[0]),
        "num_channels": int(state["head.dpt.head.4.weight"].shape[0]),
    }


def _check_hooks(config: ModelConfig, state: dict[str, Tensor], source: str) -> None:
    """The tapped layers' widths must match the file's DPT input convolutions."""
    for i, hook in enumerate(config.hooks):
        expected = config.enc_embed_dim if hook < config.enc_depth else config.dec_embed_dim
        got = int(state[f"head.dpt.act_postprocess.{i}.0.weight"].shape[1])
        if got != expected:
            raise CheckpointError(
                f"{source}: DPT input {i} has width {got} but hook {hook} gives {expected}; "
                "pass the checkpoint's dpt_hooks as a config override"
            )


# MaDis-Stereo's DPT head taps these layers whatever the architecture (its public code sets them
# unconditionally): decoder outputs only, since the encoder outputs are masked-length in training.
MADIS_HOOKS = (13, 16, 19, 23)


def croco_checkpoint_config(ckpt: Any, source: str, overrides: dict[str, Any] | None = None
                            ) -> tuple[ModelConfig, str, dict[str, Any]]:
    """(config, kind, metadata) of an unpickled CroCo v2 pretraining, CroCo-Stereo or MaDis-Stereo ``.pth``.

    ``kind`` is "pretrain" or "stereo" (the CroCo key set the file holds). The architecture comes from the
    file's ``croco_kwargs`` / ``args.croco_args`` and its DPT weight shapes; no weights are copied, so the
    state dict may hold meta tensors. MaDis-Stereo files (an ``encoder`` EMA teacher next to ``model``, or
    ``mask_ratio`` among the CroCo arguments) get MaDis' DPT hooks unless ``overrides`` set ``dpt_hooks``.
    """
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise CheckpointError(f"{source}: not a CroCo checkpoint (expected a dict with a 'model' state dict)")
    state = ckpt["model"]
    name = Path(source).name
    overrides = dict(overrides or {})
    if "croco_kwargs" in ckpt:  # CroCo v2 pretraining
        config = _croco_config(ckpt["croco_kwargs"], state, source, **overrides)
        return config, "pretrain", {"source": "croco_pretrain", "file": name}
    args = ckpt.get("args")
    croco_args = getattr(args, "croco_args", None)
    if not isinstance(croco_args, dict):
        raise CheckpointError(f"{source}: no croco_args / croco_kwargs found; not a CroCo(-Stereo) checkpoint")
    madis = "encoder" in ckpt or "mask_ratio" in croco_args
    extra: dict[str, Any] = {"dpt_hooks": list(MADIS_HOOKS)} if madis else {}
    crop = getattr(args, "crop", None)
    if isinstance(crop, (list, tuple)) and len(crop) == 2:
        extra["crop"] = [int(c) for c in crop]
    mode = getattr(args, "tile_conf_mode", None)
    if isinstance(mode, str):
        extra["conf_mode"] = mode
    extra.update(overrides)
    config = _croco_config(croco_args, state, source, **extra)
    _check_hooks(config, state, source)
    metadata = {"source": "madis_stereo" if madis else "croco_stereo", "file": name,
                "task": getattr(args, "task", None), "epoch": ckpt.get("epoch")}
    if madis:
        metadata["mask_ratio"] = croco_args.get("mask_ratio")
    return config, "stereo", metadata


def _load_croco(path: Path, overrides: dict[str, Any]) -> tuple[StereoModel, dict[str, Any]]:
    ckpt = read_torch_file(path)
    config, kind, metadata = croco_checkpoint_config(ckpt, str(path), overrides)
    model = StereoModel(config)
    fresh = from_croco_state_dict(model, ckpt["model"], str(path), kind)
    if kind == "pretrain":
        log.info("%s: CroCo v2 pretraining weights loaded; the DPT stereo head is freshly initialised "
                 "(%d tensors)", path.name, len(fresh))
    elif metadata["source"] == "madis_stereo":
        log.info("%s: MaDis-Stereo checkpoint (epoch %s): the student's weights, DPT hooks %s; its EMA teacher "
                 "is not used for inference", path.name, metadata["epoch"], list(config.hooks))
    return model, metadata


def load_model(path: str | Path, map_location: str | torch.device = "cpu",
               config_overrides: dict[str, Any] | None = None,
               return_metadata: bool = False) -> StereoModel | tuple[StereoModel, dict[str, Any]]:
    """Load the file ``path``: our ``.safetensors``, a CroCo-Stereo, MaDis-Stereo or CroCo v2 pretraining ``.pth``.

    ``config_overrides`` replace config fields (e.g. ``{"dpt_hooks": [13, 16, 19, 23]}`` for a checkpoint
    trained with other hooks). Returns the model in eval mode (and its metadata with ``return_metadata``).
    ``ms.load_model`` (``registry.load_model``) also takes registered names and URLs.
    """
    path = Path(path)
    overrides = dict(config_overrides or {})
    kind = checkpoint_format(path)
    model, metadata = _load_ours(path, overrides) if kind == "safetensors" else _load_croco(path, overrides)
    model = model.to(map_location).eval()
    return (model, metadata) if return_metadata else model


DEFAULT_WEIGHTS = "default.safetensors"


def default_model_path() -> Path:
    """Path of the bundled default checkpoint inside the installed package."""
    from importlib import resources

    return Path(str(resources.files("madis_stereo") / "weights" / DEFAULT_WEIGHTS))


def bundled_model_file() -> Path:
    """:func:`default_model_path`, or CheckpointError when this installation has no bundled model."""
    path = default_model_path()
    if not path.is_file():
        raise CheckpointError(f"no bundled model in this installation ({path} is missing); pass --checkpoint")
    return path


@overload
def load_default_model(map_location: str | torch.device = ...,
                       return_metadata: Literal[False] = ...) -> StereoModel: ...
@overload
def load_default_model(map_location: str | torch.device = ..., *,
                       return_metadata: Literal[True]) -> tuple[StereoModel, dict[str, Any]]: ...
@overload
def load_default_model(map_location: str | torch.device = ...,
                       return_metadata: bool = ...) -> StereoModel | tuple[StereoModel, dict[str, Any]]: ...
def load_default_model(map_location: str | torch.device = "cpu",
                       return_metadata: bool = False) -> StereoModel | tuple[StereoModel, dict[str, Any]]:
    """The bundled model (offline, from package data); see README for how it was trained."""
    return load_model(bundled_model_file(), map_location=map_location, return_metadata=return_metadata)
