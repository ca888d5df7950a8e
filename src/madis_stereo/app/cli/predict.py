"""``madis-stereo predict``: disparity (and depth, point clouds, certainty) for image pairs."""

from __future__ import annotations

import argparse
import itertools
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from madis_stereo.app.cli import common
from madis_stereo.errors import ConfigError, MadisStereoError

if TYPE_CHECKING:  # the CLI imports torch only when a command runs
    import numpy as np

    from madis_stereo.app.outputs import OutputOptions
    from madis_stereo.app.pairs import StereoPair
    from madis_stereo.geometry.camera import Camera
    from madis_stereo.geometry.rectify import Rectifier
    from madis_stereo.inference.predictor import Predictor

log = logging.getLogger("madis_stereo")

FORMATS_HELP = (
    "comma-separated outputs: color (coloured disparity PNG), png16 (KITTI uint16 PNG, d*256), pfm, npy "
    "(float32 disparity), depth (Z = baseline*f/(d+doffs) in the baseline's unit: mm for Middlebury/ETH3D "
    "calib.txt; PFM or NPY, +inf invalid), ply (coloured binary point cloud, same unit), conf (certainty "
    "1 - sigmoid(c/b), b the model's laplace_b, as 8-bit PNG, white = sure). Default: color, or color,depth,ply "
    "when --calib or --focal/--baseline give the camera"
)
CAMERA_FORMATS = "color,depth,ply"  # the default outputs when the camera is given


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
    p.add_argument("--batch", type=int, default=1, metavar="N",
                   help="pairs per forward pass: consecutive pairs of one size are predicted together (default 1; "
                   "use 8 or more on a GPU)")
    p.add_argument("--format", default=None, help=FORMATS_HELP)
    p.add_argument("--vmin", type=float, default=0.0, help="colour range start of the color PNG (default 0)")
    p.add_argument("--vmax", type=float, default=None,
                   help="colour range end of the color PNG and video (default: the 99th percentile of the first "
                   "pair's disparity, kept for every pair of a sequence)")
    seq = p.add_argument_group("sequences")
    seq.add_argument("--video", type=Path, metavar="FILE.mp4",
                     help="also write an MP4 of each left image next to its coloured disparity, in input order "
                     "(needs the 'video' extra: imageio-ffmpeg, which ships its own ffmpeg)")
    seq.add_argument("--fps", type=float, default=10.0, help="frames per second of --video (default 10)")
    p.add_argument("--legend", action="store_true",
                   help="append a labelled colour bar below each color PNG (its range is always in the PNG's "
                        "text chunk 'disparity_range')")
    geo = p.add_argument_group("geometry (depth, ply)")
    geo.add_argument("--calib", metavar="FILE",
                     help="Middlebury/ETH3D calib.txt (f and cx, cy from cam0, baseline in mm, doffs); 'auto' = "
                     "the calib.txt next to each left image")
    geo.add_argument("--rectify", metavar="CALIB",
                     help="the pairs are RAW images of a calibrated rig: rectify them with this calibration "
                     "(OpenCV FileStorage YAML/XML with K1 D1 K2 D2 R T or M1 D1 M2 D2 R T; KITTI "
                     "calib_cam_to_cam.txt; LEFT.yaml,RIGHT.yaml ROS camera_info files) before predicting. "
                     "Disparity files then belong to the rectified left image; depth and ply lie in the "
                     "ORIGINAL left camera (its pixel grid and frame) in the unit of the calibration's T")
    geo.add_argument("--focal", type=float, help="focal length in pixels (instead of --calib)")
    geo.add_argument("--baseline", type=float, help="baseline; depth is written in its unit (with --focal)")
    geo.add_argument("--cx", type=float, help="principal point x in pixels (with --focal; default: image centre)")
    geo.add_argument("--cy", type=float, help="principal point y in pixels (with --focal; default: image centre)")
    geo.add_argument("--fy", type=float, help="vertical focal length in pixels (with --focal; default: = --focal)")
    geo.add_argument("--doffs", type=float, default=0.0, help="x-offset of the principal points (default 0)")
    geo.add_argument("--depth-format", choices=("pfm", "npy"), default="pfm", help="file type of depth (default pfm)")
    geo.add_argument("--max-depth", type=float, help="point cloud: drop points farther than this (baseline unit)")
    geo.add_argument("--min-certainty", type=float,
                     help="point cloud: drop points whose certainty 1 - sigmoid(c/b) is below this (0..1; "
                          "b: the model's laplace_b, 3 by default)")
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
            raise ConfigError("give either --checkpoint or --onnx, not both")
        common.check_tiling_args(args)
        if common.precision_arg(args) not in ("auto", "fp32"):
            raise ConfigError("--onnx runs the exported model in fp32; drop --precision/--bf16")
        model = OnnxStereoModel(args.onnx, providers=onnx_providers(args.device))
        return Predictor(model, crop=args.crop, overlap=args.overlap, device="cpu", precision="fp32",
                         tile_batch=args.tile_batch, blend=args.blend)
    return Predictor(common.load_cli_model(args), **common.predictor_kwargs(args))


def _geometry_source(args: argparse.Namespace, options: OutputOptions) -> Rectifier | None:
    """Check the geometry arguments; the Rectifier of --rectify (read now: a bad file stops before any work)."""
    from madis_stereo.geometry.calibration import read_calibration
    from madis_stereo.geometry.rectify import Rectifier

    if args.rectify is not None:
        others = [name for name, value in (("--calib", args.calib), ("--focal", args.focal),
                                           ("--baseline", args.baseline), ("--cx", args.cx), ("--cy", args.cy),
                                           ("--fy", args.fy)) if value is not None]
        if others:
            raise ConfigError(f"--rectify takes the cameras from the calibration; drop {', '.join(others)}")
        return Rectifier(read_calibration(args.rectify))
    if args.calib is not None and any(v is not None for v in (args.focal, args.baseline, args.cx, args.cy, args.fy)):
        raise ConfigError("give either --calib or --focal/--baseline (with --cx/--cy/--fy), not both")
    if args.focal is None and any(v is not None for v in (args.cx, args.cy, args.fy)):
        raise ConfigError("--cx, --cy and --fy go with --focal F --baseline B")
    if (args.focal is None) != (args.baseline is None):
        given = "--focal" if args.baseline is None else "--baseline"
        raise ConfigError(f"--focal F and --baseline B go together (only {given} was given)")
    if options.needs_camera and args.calib is None and args.focal is None:  # --baseline comes with --focal
        raise ConfigError("formats depth and ply need --rectify CALIB, --calib calib.txt (or 'auto'), or "
                         "--focal F --baseline B")
    if not options.needs_camera and (args.calib is not None or args.focal is not None):
        log.warning("the camera (%s) is unused: --format %s writes neither depth nor ply",
                    "--calib" if args.calib is not None else "--focal/--baseline", ",".join(options.formats))
    return None


def _formats(args: argparse.Namespace) -> tuple[str, ...]:
    """--format as a tuple; by default color, and depth and a point cloud too when the camera is given."""
    chosen = args.format
    if chosen is None:
        camera = args.rectify is None and (args.calib is not None or args.focal is not None)
        chosen = CAMERA_FORMATS if camera else "color"
    return tuple(f.strip() for f in chosen.split(",") if f.strip())


class _Sequence:
    """What a run over several pairs shares: one colour range, the video, the rectification check."""

    def __init__(self, args: argparse.Namespace, options: OutputOptions, count: int) -> None:
        from madis_stereo.app.video import VideoWriter

        self.options, self.count = options, count
        self.video = VideoWriter(args.video, args.fps) if args.video is not None else None
        self.vertical: tuple[Any, Any] | None = None

    def fix_range(self, disparity: np.ndarray) -> None:
        """The first pair fixes the colour range end (unless --vmax did) so a sequence does not flicker."""
        import dataclasses

        import numpy as np

        if self.options.vmax is not None:
            return
        finite = disparity[np.isfinite(disparity)]
        vmax = float(np.percentile(finite, 99)) if finite.size else 1.0
        self.options = dataclasses.replace(self.options, vmax=max(vmax, (self.options.vmin or 0.0) + 1e-3))
        if self.count > 1:
            log.info("colour range %g..%.4g px for all %d pairs (the first pair's 99th percentile; --vmax sets it)",
                     self.options.vmin or 0.0, self.options.vmax, self.count)

    def add_frame(self, left: np.ndarray, disparity: np.ndarray) -> None:
        if self.video is None:
            return
        from madis_stereo.app.video import side_by_side_frame
        from madis_stereo.app.visualize import colorize_disparity

        colored = colorize_disparity(disparity, vmin=self.options.vmin, vmax=self.options.vmax)
        self.video.write(side_by_side_frame(left, colored))

    def check_rectification(self, raw: tuple[np.ndarray, np.ndarray], rectified: tuple[np.ndarray, np.ndarray]) -> None:
        """Vertical disparity of matched points before and after rectification (first pair only)."""
        from madis_stereo.geometry.rectify import vertical_disparity

        if self.vertical is not None:
            return
        self.vertical = (vertical_disparity(*raw), vertical_disparity(*rectified))
        before, after = self.vertical
        log.info("vertical disparity of matched points: %s before rectification, %s after", before, after)
        if after.matches and after.median > 0.5:
            log.warning("rows still differ by %.2f px (median) after rectification: the calibration does not fit "
                        "these images (another rig, resolution or left/right order?)", after.median)


def run(args: argparse.Namespace) -> int:
    import time

    from madis_stereo.app.outputs import OutputOptions, write_outputs
    from madis_stereo.app.pairs import find_pairs
    from madis_stereo.errors import first_line
    from madis_stereo.inference.predictor import rgb_pair
    from madis_stereo.utils.console import duration, summary

    formats = _formats(args)
    options = OutputOptions(formats=formats, vmin=args.vmin, vmax=args.vmax, legend=args.legend,
                            depth_format=args.depth_format, max_depth=args.max_depth,
                            min_certainty=args.min_certainty)
    rectifier = _geometry_source(args, options)
    pairs = find_pairs(args.inputs)
    sequence = _Sequence(args, options, len(pairs))
    cameras: dict[Path, Camera] = {}
    if options.needs_camera and args.calib not in (None, "auto"):
        _camera_for(args, Path(args.calib), cameras)  # a missing or bad file stops before any work
    predictor = _predictor(args)
    log.info("%d pair(s) -> %s (formats %s; crop %dx%d, overlap %.2f, %s, %s)", len(pairs), args.out,
             ",".join(formats), *predictor.crop, predictor.overlap, predictor.device, predictor.precision)
    if "color" in formats:
        top = f"{args.vmax:g}" if args.vmax is not None else "the first pair's 99th percentile"
        log.info("color PNGs: disparity %g px (dark blue) to %s (dark red); each PNG states its range in its "
                 "text chunk 'disparity_range'%s", args.vmin, top, "" if args.legend else " (--legend draws a bar)")
    if options.needs_camera:
        unit = (f"{rectifier.calibration.unit} (the calibration's T), original left camera" if rectifier
                else "mm (calib.txt)" if args.calib else "the unit of --baseline")
        log.info("depth and point coordinates are in %s", unit)
    if args.batch < 1:
        raise ConfigError(f"--batch must be at least 1, got {args.batch}")
    failures: list[str] = []
    started = time.perf_counter()
    bar = common.progress(None, len(pairs), "predict", "pair", disable=args.quiet)

    def fail(pair: StereoPair, err: Exception) -> None:
        line = f"{pair.left} + {pair.right}: {first_line(err)}"
        failures.append(line)
        bar.write(f"madis-stereo predict: error: {line}", file=sys.stderr)

    try:
        for start in range(0, len(pairs), args.batch):
            loaded = []  # (pair, raw left, rectified pair, camera) of the pairs that could be read
            for pair in pairs[start : start + args.batch]:
                try:
                    left, right = rgb_pair(pair.left, pair.right)
                    if rectifier is not None:
                        rect = rectifier.rectify(left, right)
                        camera = rectifier.view(left.shape[1], left.shape[0])
                        sequence.check_rectification((left, right), rect)
                    else:
                        rect = (left, right)
                        camera = _camera_for(args, pair.left, cameras) if options.needs_camera else None
                    loaded.append((pair, left, rect, camera))
                except (MadisStereoError, OSError) as err:  # ours or the file system; a bug keeps its traceback
                    fail(pair, err)
                    bar.update(1)
            # consecutive pairs of one size share the forward passes (--batch); frames stay in order
            for _, group in itertools.groupby(loaded, key=lambda item: item[2][0].shape):
                group = list(group)
                try:
                    predictions = predictor.predict_batch([rect for _, _, rect, _ in group])
                except (MadisStereoError, OSError) as err:  # ours or the file system; a bug keeps its traceback
                    for pair, *_ in group:
                        fail(pair, err)
                    bar.update(len(group))
                    continue
                for (pair, left, rect, camera), pred in zip(group, predictions):
                    try:
                        sequence.fix_range(pred.disparity)
                        write_outputs(args.out, pair.name, pred.disparity, pred.confidence, left, sequence.options,
                                      camera, laplace_b=pred.laplace_b)
                        sequence.add_frame(rect[0], pred.disparity)
                    except (MadisStereoError, OSError) as err:  # ours or the file system; a bug keeps its traceback
                        fail(pair, err)
                    bar.update(1)
    except BaseException:
        if sequence.video is not None:
            sequence.video.abort()
        raise
    bar.close()
    video = sequence.video.close() if sequence.video is not None else None
    seconds = time.perf_counter() - started
    done = len(pairs) - len(failures)
    items: list[tuple[str, Any]] = [("pairs", f"{done} of {len(pairs)} written to {args.out}"),
                                    ("time", f"{duration(seconds)} ({seconds / max(len(pairs), 1):.3g} s per pair)")]
    if sequence.options.vmax is not None:
        items.append(("colour range", f"{sequence.options.vmin or 0:g}..{sequence.options.vmax:.4g} px"))
    if sequence.vertical is not None:
        items.append(("vertical disparity", f"{sequence.vertical[1]} (raw: {sequence.vertical[0]})"))
    if video is not None:
        items.append(("video", f"{video} ({sequence.video.frames} frames)"))
    log.info("%s", summary("predict finished", items))
    if failures:
        lines = [f"madis-stereo predict: {len(failures)} of {len(pairs)} pair(s) failed:"]
        print("\n".join(lines + [f"  {line}" for line in failures]), file=sys.stderr)
        return 1
    return 0
