"""``madis-stereo info``: config, provenance and training metrics stored in a checkpoint."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("info", help="what a checkpoint holds (config, provenance, metrics)",
                              description="Show the model config, provenance and training metrics of a checkpoint "
                              "(ours: from the file header; CroCo .pth: the architecture read from the file).")
    p.add_argument("checkpoint", metavar="CKPT", nargs="?", default="bundled",
                   help="a file, a registered name, a URL or bundled (default: the package's own model)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from madis_stereo.app.info import checkpoint_info, format_checkpoint_info

    info = checkpoint_info(args.checkpoint)
    print(json.dumps(info, indent=2, default=str) if args.json else format_checkpoint_info(info))
    return 0
