"""``madis-stereo demo``: a model (default: the bundled one; e.g. --checkpoint crocostereo) next to OpenCV SGBM on
the real Motorcycle pair (or your pair)."""

from __future__ import annotations

import argparse
from pathlib import Path

from madis_stereo.app.cli.common import add_model_arguments, load_cli_model, model_label, predictor_kwargs
from madis_stereo.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run a model (default: the bundled one) and OpenCV SGBM on a real pair",
                       description=__doc__)
    p.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder (default: demo_output)")
    p.add_argument("--left", help="left image (default: Middlebury Motorcycle from scikit-image)")
    p.add_argument("--right", help="right image")
    p.add_argument("--gt", help="ground-truth disparity (PFM, KITTI PNG16 or NPY) for metrics")
    p.add_argument("--scale", type=float, default=1.0, help="resize the Motorcycle pair by this factor")
    p.add_argument("--max-disparity", type=float, default=None,
                   help="SGBM search range (default: Motorcycle's ndisp 67.5, else 128 levels)")
    add_model_arguments(p)
    p.add_argument("--compare", action="append", default=[], metavar="CKPT",
                   help="another model to show next to it (a file, registered name or URL; 'bundled' = the bundled "
                   "model); repeatable, e.g. --checkpoint crocostereo --compare bundled")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from madis_stereo.app.demo import METRIC_COLUMNS, MOTORCYCLE_MAX_DISPARITY, motorcycle, run_demo
    from madis_stereo.utils.tables import format_table

    if bool(args.left) != bool(args.right):
        raise ConfigError("--left and --right go together")
    if args.left:
        from madis_stereo.data import read_disparity, read_image

        left, right = read_image(args.left), read_image(args.right)
        gt = read_disparity(args.gt) if args.gt else None
        max_disp, name = args.max_disparity, f"{Path(args.left).name} / {Path(args.right).name}"
    else:
        left, right, gt = motorcycle(args.scale)
        max_disp = args.max_disparity or MOTORCYCLE_MAX_DISPARITY * args.scale
        name = f"Middlebury Motorcycle (scikit-image), {left.shape[1]}x{left.shape[0]}"
    model = load_cli_model(args)
    compare = {model_label(None if c == "bundled" else c): load_cli_model(args, None if c == "bundled" else c)
               for c in args.compare}
    result = run_demo(model, left, right, gt, args.out, max_disparity=max_disp, label=model_label(args.checkpoint),
                      compare=compare, **predictor_kwargs(args))
    print(f"{name}: {model_label(args.checkpoint)} ran in {result.seconds:.2f} s")
    if result.rows:
        print(format_table(result.rows, ["method", *METRIC_COLUMNS]))
        print("bad-x / d1 / invalid_pred in %; missing estimates count as errors; epe over estimated pixels")
    print(f"images written to {args.out}/ ({', '.join(sorted(p.name for p in result.files.values()))})")
    return 0
