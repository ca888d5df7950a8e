"""Options and helpers shared by the inference subcommands (predict, evaluate, analyze, export)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from madis_stereo.errors import CheckpointError

if TYPE_CHECKING:  # torch is imported when a command runs, not for --help
    import torch

log = logging.getLogger("madis_stereo")


def add_model_options(parser: argparse.ArgumentParser, checkpoint_required: bool = False) -> None:
    parser.add_argument("--checkpoint", required=checkpoint_required, metavar="CKPT",
                        help="model file: ours (.safetensors), CroCo-Stereo or CroCo v2 pretraining (.pth)"
                        + ("" if checkpoint_required else "; default: the bundled model"))
    parser.add_argument("--set-model", dest="model_overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a model config field when loading (e.g. dpt_hooks=[13,16,19,23])")


def add_inference_options(parser: argparse.ArgumentParser, overlap: float = 0.7) -> None:
    parser.add_argument("--crop", nargs=2, type=int, metavar=("H", "W"),
                        help="tile size (multiples of 32); default: the model's training crop")
    parser.add_argument("--overlap", type=float, default=overlap,
                        help=f"tile overlap in [0, 1) (default {overlap}; CroCo-Stereo used 0.9 for benchmarks)")
    parser.add_argument("--device", default="auto", help="torch device: auto (CUDA when available), cpu, cuda:0 ...")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    parser.add_argument("--tile-batch", type=int, default=1, metavar="N", help="tiles per forward pass (default 1)")


def resolve_device(name: str) -> torch.device:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"invalid device {name!r} ({err})") from None


def model_overrides(items: Iterable[str]) -> dict[str, Any]:
    from madis_stereo.config import apply_overrides

    return apply_overrides({}, list(items))


def default_model() -> torch.nn.Module:
    """The bundled model, or a clear error when this installation has none."""
    from madis_stereo import checkpoint

    loader = getattr(checkpoint, "load_default_model", None)
    if loader is None:
        raise CheckpointError("no bundled model in this installation; pass --checkpoint CKPT")
    return loader()


def load_model(checkpoint: str | None, overrides: Iterable[str] = (), device: torch.device | None = None) -> Any:
    """``--checkpoint`` (or the bundled model) on ``device``."""
    from madis_stereo.checkpoint import load_model as load

    if checkpoint is None:
        model = default_model()
    else:
        model = load(checkpoint, map_location="cpu", config_overrides=model_overrides(overrides))
    return model.to(device or "cpu").eval()


def progress(iterable: Iterable[Any], total: int | None, desc: str, unit: str, disable: bool = False) -> Any:
    """A tqdm bar on stderr (hidden when stderr is not a terminal unless forced by the caller)."""
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, file=sys.stderr, dynamic_ncols=True)
