"""Arguments and helpers shared by the subcommands that run a model."""

from __future__ import annotations

import argparse
import logging
from typing import Any

log = logging.getLogger("madis_stereo.app.cli")


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """--checkpoint, --device, --bf16, --crop, --overlap, --tile-batch, --compile."""
    p.add_argument("--checkpoint", help="our .safetensors, a CroCo-Stereo .pth (default: the bundled model)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps ... (default: cuda if available)")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast (fast on GPUs and AMX CPUs)")
    p.add_argument("--crop", type=int, nargs=2, metavar=("H", "W"), help="tile size (default: training crop)")
    p.add_argument("--overlap", type=float, default=0.7, help="tile overlap in [0, 1) (default 0.7)")
    p.add_argument("--tile-batch", type=int, default=1, help="tiles per forward pass (default 1)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (pays off on many pairs)")


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_cli_model(args: argparse.Namespace) -> Any:
    """The model named by --checkpoint, or the bundled default, on --device."""
    from madis_stereo.model.checkpoint import load_default_model, load_model

    device = args.device or default_device()
    if args.checkpoint:
        model = load_model(args.checkpoint, map_location=device)
    else:
        model = load_default_model(map_location=device)
    log.info("model: %s (%s) on %s", args.checkpoint or "bundled default", model.config.enc_embed_dim, device)
    return model


def predictor_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {"crop": args.crop, "overlap": args.overlap, "device": args.device or default_device(),
            "precision": "bf16" if args.bf16 else "fp32", "tile_batch": args.tile_batch,
            "compile": getattr(args, "compile", False)}


def progress(iterable: Any, total: int | None, desc: str, unit: str, disable: bool = False) -> Any:
    """A tqdm progress bar on stderr (``disable`` e.g. with --quiet)."""
    import sys

    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, file=sys.stderr, dynamic_ncols=True)
