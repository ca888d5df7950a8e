"""``madis-stereo predict``: disparity (and depth, point clouds, certainty) for image pairs."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from madis_stereo.app.cli import common

if TYPE_CHECKING:  # the CLI imports torch only when a command runs
    from madis_stereo.geometry.camera import Camera
    from madis_stereo.inference.predictor import Predictor

log = logging.getLogger("madis_stereo")

FORMATS_HELP = (
    "comma-separated outputs: color (coloured disparity PNG), png16 (KITTI uint16 PNG, d*256), pfm, npy "
    "(float32 disparity), depth (Z = baseline*f/(d+doffs) in the baseline's unit: mm for Middlebury/ETH3D "
    "calib.txt; PFM or NPY, +inf invalid), ply (coloured binary point cloud, same unit), conf (certainty "
    "1 - sigmoid(c/3) as 8-bit PNG, white = sure). Default: color"
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict", help="predict disparity for image pairs",
        description="Predict the disparity of the left image for LEFT RIGHT pairs of files, folders (matched "
        "by file name, else by *_left/*_right, *_L/*_R or im0/im1 names, else by sorted order; DIR DIR splits one "
        "folder by those names) or quoted glob patterns.")
    p.add_argument("inputs", nargs="+", metavar="LEFT RIGHT", help="pairs of images, folders or patterns")
    p.add_argument("-o", "--out", required=True, type=Path, metavar="DIR", help="output folder")
    common.add_model_arguments(p)
    p.add_argument("--onnx", metavar="MODEL.onnx",
                   help="run an exported ONNX model with onnxruntime (CPU; --device cuda needs onnxruntime-gpu)")
    p.add_argument("--format", default="color", help=FORMATS_HELP)
    p.add_argument("--vmin", type=float, default=0.0, help="colour range start of the color PNG (default 0)")
    p.add_argument("--vmax", type=float, default=None,
                   help="colour range end of the color PNG (default: per image, 99th percentile); fix it for videos")
    p.add_argument("--legend", action="store_true",
                   help="append a labelled colour bar below each color PNG (its range is always in the PNG's "
                        "text chunk 'disparity_range')")
    geo = p.add_argument_group("geometry (depth, ply)")
    geo.add_argument("--calib", metavar="FILE",
                     help="Middlebury/ETH3D calib.txt (f and cx, cy from cam0, baseline in mm, doffs); 'auto' = "
                     "the calib.txt next to each left image")
    geo.add_argument("--focal", type=float, help="focal length in pixels (instead of --calib)")
    geo.add_argument("--baseline", type=float, help="baseline; depth is written in its unit (with --focal)")
    geo.add_argument("--cx", type=float, help="principal point x in pixels (with --focal; default: image centre)")
    geo.add_argument("--cy", type=float, help="principal point y in pixels (with --focal; default: image centre)")
    geo.add_argument("--fy", type=float, help="vertical focal length in pixels (with --focal; default: = --focal)")
    geo.add_argument("--doffs", type=float, default=0.0, help="x-offset of the principal points (default 0)")
    geo.add_argument("--depth-format", choices=("pfm", "npy"), default="pfm", help="file type of depth (default pfm)")
    geo.add_argument("--max-depth", type=float, help="point cloud: drop points farther than this (baseline unit)")
    geo.add_argument("--min-certainty", type=float,
                     help="point cloud: drop points whose certainty 1 - sigmoid(c/3) is below this (0..1)")
    p.set_defaults(func=run)


def _camera_for(args: argparse.Namespace, left: Path, cache: dict[Path, Camera]) -> Camera:
    """The camera of a pair: --focal/--baseline, the --calib file, or (auto) the calib.txt beside ``left``."""
    from madis_stereo.data.formats import read_calib
    from madis_stereo.geometry.camera import Camera, camera_from_calib

    if args.calib is None:
        return Camera(fx=args.focal, baseline=args.baseline, doffs=args.doffs, cx=args.cx, cy=args.cy, fy=args.fy,
                      unit="baseline units")
    path = left.parent / "calib.txt" if args.calib == "auto" else Path(args.calib)
    if path not in cache:
        cache[path] = camera_from_calib(read_calib(path), str(path))
    return cache[path]


def _predictor(args: argparse.Namespace) -> Predictor:
    from madis_stereo.inference.predictor import Predictor

    if args.onnx:
        from madis_stereo.inference.export import OnnxStereoModel, onnx_providers

        if args.checkpoint:
            raise ValueError("give either --checkpoint or --onnx, not both")
        common.check_tiling_args(args)
        model = OnnxStereoModel(args.onnx, providers=onnx_providers(args.device))
        return Predictor(model, crop=args.crop, overlap=args.overlap, device="cpu", tile_batch=args.tile_batch,
                         blend=args.blend)
    return Predictor(common.load_cli_model(args), **common.predictor_kwargs(args))


def run(args: argparse.Namespace) -> int:
    from madis_stereo.app.outputs import OutputOptions, write_outputs
    from madis_stereo.app.pairs import find_pairs
    from madis_stereo.errors import first_line
    from madis_stereo.inference.predictor import rgb_pair

    formats = tuple(f.strip() for f in args.format.split(",") if f.strip())
    options = OutputOptions(formats=formats, vmin=args.vmin, vmax=args.vmax, legend=args.legend,
                            depth_format=args.depth_format,
                            max_depth=args.max_depth, min_certainty=args.min_certainty)
    if options.needs_camera and args.calib is None and (args.focal is None or args.baseline is None):
        raise ValueError("formats depth and ply need --calib calib.txt (or 'auto'), or --focal F --baseline B")
    if args.calib is not None and any(v is not None for v in (args.focal, args.cx, args.cy, args.fy)):
        raise ValueError("give either --calib or --focal/--baseline (with --cx/--cy/--fy), not both")
    if args.focal is None and any(v is not None for v in (args.cx, args.cy, args.fy)):
        raise ValueError("--cx, --cy and --fy go with --focal F --baseline B")
    pairs = find_pairs(args.inputs)
    cameras: dict[Path, Camera] = {}
    if options.needs_camera and args.calib not in (None, "auto"):
        _camera_for(args, Path(args.calib), cameras)  # a missing or bad file stops before any work
    predictor = _predictor(args)
    log.info("%d pair(s) -> %s (formats %s; crop %dx%d, overlap %.2f, %s)", len(pairs), args.out, ",".join(formats),
             *predictor.crop, predictor.overlap, predictor.device)
    if "color" in formats:
        top = f"{args.vmax:g}" if args.vmax is not None else "the image's 99th percentile"
        log.info("color PNGs: disparity %g px (dark blue) to %s (dark red); each PNG states its range in its "
                 "text chunk 'disparity_range'%s", args.vmin, top, "" if args.legend else " (--legend draws a bar)")
    if options.needs_camera:
        unit = "mm (calib.txt)" if args.calib else "the unit of --baseline"
        log.info("depth and point coordinates are in %s", unit)
    failures: list[str] = []
    bar = common.progress(pairs, len(pairs), "predict", "pair", disable=args.quiet)
    for pair in bar:
        try:
            left, right = rgb_pair(pair.left, pair.right)
            camera = _camera_for(args, pair.left, cameras) if options.needs_camera else None
            pred = predictor(left, right)
            write_outputs(args.out, pair.name, pred.disparity, pred.confidence, left, options, camera)
        except (ValueError, OSError) as err:
            message = first_line(err)
            line = f"{pair.left} + {pair.right}: {message}"
            failures.append(line)
            bar.write(f"madis-stereo predict: error: {line}", file=sys.stderr)
    done = len(pairs) - len(failures)
    log.info("%d of %d pair(s) written to %s", done, len(pairs), args.out)
    if failures:
        summary = [f"madis-stereo predict: {len(failures)} of {len(pairs)} pair(s) failed:"]
        print("\n".join(summary + [f"  {line}" for line in failures]), file=sys.stderr)
        return 1
    return 0
