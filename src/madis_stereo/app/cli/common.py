"""Arguments and helpers shared by the subcommands that run a model."""

from __future__ import annotations

import argparse
import logging
from typing import Any

log = logging.getLogger("madis_stereo.app.cli")

CHECKPOINT_HELP = ("a .safetensors or CroCo(-Stereo)/MaDis .pth file, a registered name (madis-stereo models), a URL, "
                   "or bundled (the package's own model)")


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """--checkpoint, --device, --precision (--bf16), --crop, --overlap, --tile-batch, --blend, --compile."""
    p.add_argument("--checkpoint", help=CHECKPOINT_HELP + " (default: the bundled model)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps ... (default: cuda if available)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default=None,
                   help="arithmetic precision (default auto: bf16 on GPUs that have it; on a CPU the faster of "
                   "fp32 and bf16, measured once per machine and cached)")
    p.add_argument("--bf16", action="store_true", help="same as --precision bf16")
    p.add_argument("--crop", type=int, nargs=2, metavar=("H", "W"), help="tile size (default: training crop)")
    p.add_argument("--overlap", type=float, default=0.7, help="tile overlap in [0, 1) (default 0.7)")
    p.add_argument("--tile-batch", type=int, default=1, help="tiles per forward pass (default 1)")
    p.add_argument("--blend", choices=("taper", "croco"), default="taper",
                   help="tile blend: taper (default; windows fade out at their edges, no seams) or croco "
                        "(CroCo-Stereo's confidence-only blend)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the model (on a GPU, over many pairs; on the CPUs measured it was slower)")


def cli_device(args: argparse.Namespace) -> Any:
    """The torch device of --device (default: CUDA when available, else the CPU); one-line error when absent."""
    from madis_stereo.training.distributed import pick_device

    return pick_device(args.device)


def check_tiling_args(args: argparse.Namespace) -> None:
    """--crop, --overlap and --tile-batch, checked before any model or image is loaded."""
    from madis_stereo.inference.tiling import check_tiling

    check_tiling(args.crop or (32, 32), args.overlap, args.tile_batch)


_FROM_ARGS = object()


def load_cli_model(args: argparse.Namespace, checkpoint: str | None | object = _FROM_ARGS) -> Any:
    """The model named by ``checkpoint`` (default: --checkpoint), or the bundled default (None), on --device."""
    from madis_stereo.model.checkpoint import load_default_model
    from madis_stereo.model.registry import load_model

    if checkpoint is _FROM_ARGS:
        checkpoint = args.checkpoint
    check_tiling_args(args)
    device = cli_device(args)
    if checkpoint:
        model = load_model(checkpoint, map_location=device)
    else:
        model = load_default_model(map_location=device)
    log.info("model: %s (%s) on %s", checkpoint or "bundled default", model.config.enc_embed_dim, device)
    return model


def model_label(checkpoint: str | None) -> str:
    """A short name for --checkpoint: "bundled model", a registered name, or the file name's stem."""
    if not checkpoint:
        return "bundled model"
    from pathlib import PurePosixPath

    return PurePosixPath(checkpoint.split("?")[0]).stem or checkpoint


def dataset_spec(name: str, root: Any, split: str | None, overrides: list[str]) -> dict[str, Any]:
    """The ``build_dataset`` spec of --dataset/--root/--split/--set KEY=VALUE, checked against the dataset's keys.

    --root and --split go in only for datasets that have them (``synthetic`` reads no folder, ``folder``
    has no splits), with a one-line error naming the flag when one is given to a dataset without it.
    """
    from madis_stereo.data import DATASETS, dataset_keys
    from madis_stereo.errors import ConfigError
    from madis_stereo.utils.config import apply_overrides

    if name not in DATASETS:
        raise ConfigError(f"unknown dataset '{name}'; choose from {', '.join(DATASETS)}")
    keys = dataset_keys(name)
    options = apply_overrides({}, overrides)
    for key in ("name", "root", "split"):
        if key in options:
            raise ConfigError(f"use --dataset/--root/--split instead of --set {key}=...")
    spec: dict[str, Any] = {"name": name}
    if root is not None:
        if "root" not in keys:
            raise ConfigError(f"dataset '{name}' is generated and reads no folder: drop --root (a synthetic set "
                              "written by 'madis-stereo data make-synthetic' is read with --dataset folder)")
        spec["root"] = str(root)
    elif "root" in keys:
        raise ConfigError(f"dataset '{name}' needs --root DIR (its folder)")
    if split is not None:
        if "split" not in keys:
            raise ConfigError(f"dataset '{name}' has no splits: drop --split")
        spec["split"] = split
    return {**spec, **options}


def precision_arg(args: argparse.Namespace) -> str:
    """--precision, with --bf16 as its alias (ConfigError when the two disagree); default "auto"."""
    from madis_stereo.errors import ConfigError

    if args.bf16 and args.precision not in (None, "bf16"):
        raise ConfigError(f"--bf16 contradicts --precision {args.precision}; give one of them")
    return "bf16" if args.bf16 else (args.precision or "auto")


def predictor_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {"crop": args.crop, "overlap": args.overlap, "device": cli_device(args),
            "precision": precision_arg(args), "tile_batch": args.tile_batch,
            "compile": getattr(args, "compile", False), "blend": args.blend}


def progress(iterable: Any, total: int | None, desc: str, unit: str, disable: bool = False) -> Any:
    """A tqdm progress bar on stderr (``disable`` e.g. with --quiet)."""
    import sys

    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, file=sys.stderr, dynamic_ncols=True)
