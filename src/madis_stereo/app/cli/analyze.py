"""``madis-stereo analyze``: model analyses (attention distance, paper Fig. 3)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from madis_stereo.app.cli import common
from madis_stereo.errors import ConfigError

log = logging.getLogger("madis_stereo")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("analyze", help="model analyses (attention distance)")
    sub = p.add_subparsers(dest="analysis", metavar="ANALYSIS")
    sub.required = True
    a = sub.add_parser(
        "attention-distance", help="mean attention distance of every head and layer",
        description="Mean attention distance (pixels) of every head of every encoder, decoder self- and "
        "cross-attention layer, averaged over the given pairs. Each image is scaled to cover the crop "
        "(aspect ratio kept) and centre-cropped to it; encoder numbers use the left view.")
    a.add_argument("inputs", nargs="+", metavar="LEFT RIGHT", help="pairs of images, folders or patterns")
    a.add_argument("--checkpoint", required=True, metavar="CKPT", help=common.CHECKPOINT_HELP)
    a.add_argument("--compare", metavar="CKPT2", help="a second checkpoint to overlay")
    a.add_argument("--crop", nargs=2, type=int, metavar=("H", "W"),
                   help="analysis size (multiples of 32); default: the first model's training crop")
    a.add_argument("--encoder-views", choices=("left", "both"), default="left",
                   help="encoder heads from the left view only (default) or averaged over both views")
    a.add_argument("--plot", type=Path, metavar="out.png", help="write the plot")
    a.add_argument("--json", type=Path, metavar="out.json", help="write the numbers")
    a.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    a.set_defaults(func=run_attention_distance)


def _summary(name: str, result: dict) -> str:
    parts = []
    for kind, layers in result.items():
        if layers:
            means = [sum(h) / len(h) for h in layers]
            parts.append(f"{kind} {means[0]:.1f} -> {means[-1]:.1f} px")
    return f"{name}: mean over heads, first -> last layer: " + ", ".join(parts)


def run_attention_distance(args: argparse.Namespace) -> int:
    from madis_stereo.app.pairs import find_pairs
    from madis_stereo.app.visualize import plot_attention_distance
    from madis_stereo.inference.attention import attention_distance
    from madis_stereo.utils.files import atomic_write_bytes

    if args.plot is None and args.json is None:
        raise ConfigError("nothing to write: give --plot and/or --json")
    device = common.cli_device(args)
    pairs = [(p.left, p.right) for p in find_pairs(args.inputs)]
    from madis_stereo.model.registry import load_model

    checkpoints = [args.checkpoint] + ([args.compare] if args.compare else [])
    results: dict[str, dict] = {}
    crop = tuple(args.crop) if args.crop else None
    for ckpt in checkpoints:
        model = load_model(ckpt, map_location=device)
        crop = crop or tuple(model.config.crop)
        label = Path(ckpt).stem if Path(ckpt).stem not in results else str(ckpt)
        log.info("%s: attention distance over %d pair(s) at %dx%d", label, len(pairs), *crop)
        results[label] = attention_distance(model, pairs, crop=crop, device=device, encoder_views=args.encoder_views)
        print(_summary(label, results[label]))
        del model
    if args.json is not None:
        report = {"unit": "pixels", "crop": list(crop), "pairs": [[str(a), str(b)] for a, b in pairs],
                  "encoder_views": args.encoder_views, "checkpoints": [str(c) for c in checkpoints],
                  "models": results}
        atomic_write_bytes(args.json, (json.dumps(report, indent=1) + "\n").encode())
    if args.plot is not None:
        plot_attention_distance(results, args.plot, title=f"mean attention distance ({len(pairs)} pair(s))")
    return 0
