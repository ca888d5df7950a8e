"""Named checkpoints: the official CroCo v2 and CroCo-Stereo weights, where they live, and the local cache.

``resolve_checkpoint(x)`` turns what a user passes as a checkpoint (a registered name, an http(s) URL or a
path) into a local file; names and URLs are downloaded once (``download.download_file``: progress bar,
resume, size/checksum and architecture check) and then read from the cache without touching the network.

Environment (documented in the README):

- ``MADIS_STEREO_HOME``: the cache (default ``$XDG_CACHE_HOME/madis-stereo``, else ``~/.cache/madis-stereo``);
  named models go to ``checkpoints/``, URLs to ``url/<hash>/``.
- ``MADIS_STEREO_OFFLINE=1``: never use the network; a checkpoint that is not cached is an error saying so.
- ``MADIS_STEREO_MIRROR``: a base URL that replaces the official host of the named models (it must hold
  the same paths, e.g. ``$MADIS_STEREO_MIRROR/StereoFlow_models/crocostereo.pth``).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import logging
import os
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal, overload
from urllib.parse import unquote, urlsplit

from madis_stereo.errors import CheckpointError, DownloadError
from madis_stereo.model import checkpoint

if TYPE_CHECKING:
    import torch

    from madis_stereo.model.network import StereoModel

__all__ = [
    "BUNDLED_NAMES",
    "MODELS",
    "RegisteredModel",
    "cache_dir",
    "check_architecture",
    "expected_croco_shapes",
    "fetch",
    "get_model",
    "inspect_checkpoint",
    "is_cached",
    "load_model",
    "register",
    "resolve_checkpoint",
]

log = logging.getLogger(__name__)

BUNDLED_NAMES = ("bundled", "default")  # names of the package's own model (an existing file of that name wins)

HOME_ENV = "MADIS_STEREO_HOME"
OFFLINE_ENV = "MADIS_STEREO_OFFLINE"
MIRROR_ENV = "MADIS_STEREO_MIRROR"

# Where naver/croco's README and stereoflow/README publish their weights (stereoflow/download_model.sh
# fetches StereoFlow_models/<name>.pth below the same base).
NAVER_BASE = "https://download.europe.naverlabs.com/ComputerVision/CroCo"
NAVER_LICENCE = "CC BY-NC-SA 4.0 (Naver; non-commercial use only)"
_STEREO_MIX = "CREStereo, SceneFlow, ETH3D, Middlebury 2005/2006/2014/2021/v3, Booster"


@dataclasses.dataclass(frozen=True)
class RegisteredModel:
    """A checkpoint known by name: where it is published and what it is.

    ``path`` is relative to ``base`` (the mirror replaces ``base``); ``kind`` is "stereo" (a disparity +
    confidence model) or "pretrain" (CroCo v2 cross-view completion weights without a stereo head, to
    start training from). ``size`` (bytes) and ``sha256`` are checked after a download when known.
    """

    name: str
    path: str
    preset: str
    kind: str
    description: str
    data: str
    licence: str = NAVER_LICENCE
    size: int | None = None
    sha256: str | None = None
    base: str = NAVER_BASE

    @property
    def filename(self) -> str:
        return PurePosixPath(self.path).name

    def url(self) -> str:
        """The download URL: ``$MADIS_STEREO_MIRROR`` (when set) or the official base, then ``path``."""
        base = os.environ.get(MIRROR_ENV, "").strip() or self.base
        return f"{base.rstrip('/')}/{self.path}"


MODELS: dict[str, RegisteredModel] = {}


def register(entry: RegisteredModel) -> RegisteredModel:
    """Add a named checkpoint (its preset must exist; a name can be registered once)."""
    from madis_stereo.model.config import ModelConfig

    if entry.name in MODELS:
        raise ValueError(f"model name '{entry.name}' is already registered")
    if entry.kind not in ("stereo", "pretrain"):
        raise ValueError(f"{entry.name}: kind must be 'stereo' or 'pretrain', not '{entry.kind}'")
    ModelConfig.preset(entry.preset)
    MODELS[entry.name] = entry
    return entry


def _croco(name: str, preset: str, what: str) -> None:
    register(RegisteredModel(
        name, f"{name}.pth", preset, "pretrain", f"CroCo v2 pretraining, {what} (no stereo head; to fine-tune)",
        "Habitat renders + real image pairs (ARKitScenes, MegaDepth, 3DStreetView, IndoorVL)"))


def _stereo(name: str, preset: str, description: str, data: str) -> None:
    register(RegisteredModel(name, f"StereoFlow_models/{name}.pth", preset, "stereo", description, data))


_croco("CroCo_V2_ViTBase_SmallDecoder", "vitb_smalldec", "ViT-B encoder + small decoder")
_croco("CroCo_V2_ViTBase_BaseDecoder", "vitb_basedec", "ViT-B encoder + base decoder (MaDis-Stereo's start)")
_croco("CroCo_V2_ViTLarge_BaseDecoder", "vitl_basedec", "ViT-L encoder + base decoder (CroCo-Stereo's start)")
_stereo("crocostereo", "vitl_basedec", "CroCo-Stereo main model (its Middlebury v3 submission); best quality",
        f"{_STEREO_MIX} (train splits)")
_stereo("crocostereo_subtrain", "vitl_basedec", "CroCo-Stereo trained without the validation splits "
        "(for evaluating on them)", f"{_STEREO_MIX} (subtrain splits)")
_stereo("crocostereo_eth3d", "vitl_basedec", "CroCo-Stereo, unbounded Laplacian loss (its ETH3D submission; "
        "tiles weighted conf_expbeta3)", f"{_STEREO_MIX} (train splits)")
_stereo("crocostereo_finetune_kitti", "vitl_basedec", "crocostereo fine-tuned on KITTI at crop 352x1216 "
        "(its KITTI 2015 submission)", "the crocostereo mix, then KITTI 2012 + 2015 train")
_stereo("crocostereo_subtrain_vitb_smalldecoder", "vitb_smalldec", "smaller CroCo-Stereo: ViT-B encoder + "
        "small decoder", f"{_STEREO_MIX} (subtrain splits, as its name says)")
_stereo("crocostereo_subtrain_vitb_basedecoder", "vitb_basedec", "smaller CroCo-Stereo: ViT-B encoder + "
        "base decoder (the MaDis-Stereo architecture)", f"{_STEREO_MIX} (subtrain splits, as its name says)")


def get_model(name: str) -> RegisteredModel:
    if name not in MODELS:
        raise CheckpointError(f"unknown model name '{name}'{_did_you_mean(name)} (madis-stereo models lists them)")
    return MODELS[name]


def _did_you_mean(name: str) -> str:
    close = difflib.get_close_matches(name, MODELS, n=1)
    return f"; did you mean {close[0]}?" if close else ""


# --------------------------------------------------------------------------------------------------
# cache
# --------------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """``$MADIS_STEREO_HOME``, else ``$XDG_CACHE_HOME/madis-stereo``, else ``~/.cache/madis-stereo``."""
    home = os.environ.get(HOME_ENV, "").strip()
    if home:
        return Path(home).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "madis-stereo"


def offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def cached_path(entry: RegisteredModel) -> Path:
    return cache_dir() / "checkpoints" / entry.filename


def is_cached(name: str) -> bool:
    return cached_path(get_model(name)).is_file()


def _url_path(url: str) -> Path:
    """Cache file of a URL: ``url/<first 16 hex of its SHA-256>/<its file name>``."""
    name = PurePosixPath(unquote(urlsplit(url).path)).name or "checkpoint"
    return cache_dir() / "url" / hashlib.sha256(url.encode()).hexdigest()[:16] / name


# --------------------------------------------------------------------------------------------------
# resolution and download
# --------------------------------------------------------------------------------------------------


def is_url(text: str) -> bool:
    return text.lower().startswith(("http://", "https://"))


def resolve_checkpoint(spec: str | os.PathLike, progress: bool | None = None) -> Path:
    """A local checkpoint file for ``spec``: a path (returned as is), an http(s) URL, a registered name, or
    ``bundled`` / ``default`` (the package's own model, offline).

    An existing file wins over a registered name of the same spelling. URLs and names are downloaded on
    first use (``progress``: see ``download_file``) and read from the cache afterwards.
    """
    if isinstance(spec, os.PathLike):
        return Path(spec)
    text = str(spec)
    if text in BUNDLED_NAMES and not Path(text).exists():
        return checkpoint.bundled_model_file()
    if is_url(text):
        return _fetch_to(text, _url_path(text), f"URL {text}", progress, check=inspect_checkpoint)
    path = Path(text).expanduser()
    if text in MODELS and not path.is_file():
        return fetch(text, progress)
    if not path.exists() and os.sep not in text:
        if path.stem in MODELS:
            raise CheckpointError(f"checkpoint not found: {text} (to download the registered model, pass its "
                                  f"name: {path.stem})")
        if not path.suffix:
            raise CheckpointError(f"checkpoint not found: {text} is neither a file nor a registered name"
                                  f"{_did_you_mean(text)} (madis-stereo models lists them)")
    return path


@overload
def load_model(spec: str | os.PathLike, map_location: str | torch.device = ...,
               config_overrides: dict[str, Any] | None = ..., return_metadata: Literal[False] = ...) -> StereoModel: ...
@overload
def load_model(spec: str | os.PathLike, map_location: str | torch.device = ...,
               config_overrides: dict[str, Any] | None = ..., *,
               return_metadata: Literal[True]) -> tuple[StereoModel, dict[str, Any]]: ...
@overload
def load_model(spec: str | os.PathLike, map_location: str | torch.device = ...,
               config_overrides: dict[str, Any] | None = ...,
               return_metadata: bool = ...) -> StereoModel | tuple[StereoModel, dict[str, Any]]: ...
def load_model(spec: str | os.PathLike, map_location: str | torch.device = "cpu",
               config_overrides: dict[str, Any] | None = None,
               return_metadata: bool = False) -> StereoModel | tuple[StereoModel, dict[str, Any]]:
    """``ms.load_model``: a checkpoint given as a file, an http(s) URL or a registered name (``MODELS``).

    Names and URLs are downloaded once into the cache and read from there afterwards; the file formats
    and the arguments are those of ``checkpoint.load_model``.
    """
    path = resolve_checkpoint(spec)
    return checkpoint.load_model(path, map_location, config_overrides, return_metadata)


def fetch(name: str, progress: bool | None = None) -> Path:
    """The cached file of a registered model, downloaded (and checked against its entry) when missing."""
    entry = get_model(name)
    return _fetch_to(entry.url(), cached_path(entry), name, progress, size=entry.size, sha256=entry.sha256,
                     check=lambda path: check_architecture(path, entry))


def _fetch_to(url: str, dest: Path, what: str, progress: bool | None, **checks: Any) -> Path:
    from madis_stereo.utils.download import download_file

    if dest.is_file():
        return dest
    if offline():
        raise DownloadError(f"{what} is not in the cache ({dest}) and {OFFLINE_ENV}=1 forbids downloading it "
                            f"from {url}; download it with network access (madis-stereo download) or unset "
                            f"{OFFLINE_ENV}")
    log.info("downloading %s from %s to %s", what, url, dest)
    return download_file(url, dest, progress=progress, **checks)


# --------------------------------------------------------------------------------------------------
# checks of a downloaded file
# --------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _croco_meta_state(preset: str, kind: str) -> dict[str, Any]:
    """The CroCo state dict of a ``kind`` checkpoint of ``preset``, as meta tensors (no memory even for ViT-L);
    CroCo's DPT alias names map to the same tensor as their primary name."""
    import torch

    from madis_stereo.model.config import ModelConfig
    from madis_stereo.model.network import StereoModel

    with torch.device("meta"):
        model = StereoModel(ModelConfig.preset(preset))
    return checkpoint.to_croco_state_dict(model, kind)


def expected_croco_shapes(preset: str, kind: str) -> dict[str, tuple[int, ...]]:
    """CroCo key -> shape of a ``kind`` ("stereo" / "pretrain") checkpoint of ``preset`` (incl. alias keys)."""
    return {key: tuple(value.shape) for key, value in _croco_meta_state(preset, kind).items()}


def parameter_count(preset: str, kind: str) -> int:
    """Parameters a ``kind`` checkpoint of ``preset`` holds (alias keys counted once)."""
    unique = {id(value): value for value in _croco_meta_state(preset, kind).values()}
    return sum(value.numel() for value in unique.values())


def check_architecture(path: Path, entry: RegisteredModel) -> None:
    """Refuse ``path`` unless it is a ``entry.kind`` CroCo checkpoint of ``entry.preset``: the same key names
    and shapes and the same depths and head counts (read safely, no pickled code runs)."""
    from madis_stereo.model.config import ModelConfig

    if checkpoint.checkpoint_format(path) != "torch":
        raise CheckpointError(f"{path}: not a PyTorch .pth file, which {entry.name} is")
    ckpt = checkpoint.read_torch_file(path)
    config, kind, _ = checkpoint.croco_checkpoint_config(ckpt, str(path))
    want = f"the {entry.name} checkpoint ({entry.preset}, {entry.kind})"
    if kind != entry.kind:
        raise CheckpointError(f"{path}: a {kind} checkpoint, not {want}")
    preset = ModelConfig.preset(entry.preset)
    arch = ("enc_embed_dim", "enc_depth", "enc_num_heads", "dec_embed_dim", "dec_depth", "dec_num_heads")
    differ = [f"{f} {getattr(config, f)} (expected {getattr(preset, f)})" for f in arch
              if getattr(config, f) != getattr(preset, f)]
    if differ:
        raise CheckpointError(f"{path}: not {want}: {', '.join(differ)}")
    expected = expected_croco_shapes(entry.preset, entry.kind)
    state = {k: v for k, v in ckpt["model"].items() if not k.endswith("pos_embed")}
    extra_ok = ("mask_token", "prediction_head.")  # MaDis-Stereo files keep the reconstruction parts
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(k for k in set(state) - set(expected) if not k.startswith(extra_ok))
    shapes = sorted(f"{k} {list(state[k].shape)} (expected {list(s)})" for k, s in expected.items()
                    if k in state and tuple(state[k].shape) != s)
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shapes", shapes)):
        if items:
            raise CheckpointError(f"{path}: not {want}: {label} {items[:3]} ({len(items)} in all)")


def inspect_checkpoint(path: Path) -> None:
    """Refuse ``path`` unless it is a complete, readable checkpoint of a layout ``load_model`` knows."""
    if checkpoint.checkpoint_format(path) == "safetensors":
        checkpoint.header_config(path, checkpoint.read_metadata(path))
        checkpoint.read_weights(path)
    else:
        checkpoint.croco_checkpoint_config(checkpoint.read_torch_file(path), str(path))
