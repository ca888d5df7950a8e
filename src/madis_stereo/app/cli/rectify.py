"""``madis-stereo rectify CALIB LEFT RIGHT [LEFT RIGHT ...] -o DIR``: rectify raw pairs of a calibrated rig.

Writes ``<name>_left.png`` / ``<name>_right.png`` (rectified) per pair and ``rectification.yml`` (OpenCV
FileStorage: R1 R2 P1 P2 Q and the image size, per image size met), and reports the vertical disparity of
matched points before and after rectification: a median above 0.5 px means the calibration is off.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

log = logging.getLogger("madis_stereo")

CALIB_HELP = ("OpenCV FileStorage YAML/XML (K1 D1 K2 D2 R T, or M1 D1 M2 D2 R T as OpenCV's stereo_calib "
              "sample writes them; intrinsics.yml,extrinsics.yml also works), KITTI calib_cam_to_cam.txt "
              "(cameras 2 and 3), or LEFT.yaml,RIGHT.yaml (ROS camera_info)")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "rectify", help="rectify raw stereo pairs with a calibration and check the result",
        description="Rectify LEFT RIGHT pairs (files, folders or quoted glob patterns) of a calibrated rig with "
        "OpenCV, and report the vertical disparity of matched points before and after.")
    p.add_argument("calibration", metavar="CALIB", help=CALIB_HELP)
    p.add_argument("inputs", nargs="+", metavar="LEFT RIGHT", help="pairs of raw images, folders or patterns")
    p.add_argument("-o", "--out", required=True, type=Path, metavar="DIR", help="output folder")
    p.add_argument("--alpha", type=float, default=0.0,
                   help="0 keeps only valid pixels (default), 1 keeps every raw pixel (black borders)")
    p.set_defaults(func=run)


def _save_geometry(path: Path, views: list) -> None:
    import cv2
    import numpy as np

    from madis_stereo.utils.files import atomic_write_bytes

    fs = cv2.FileStorage(path.name, cv2.FILE_STORAGE_WRITE | cv2.FILE_STORAGE_MEMORY)
    for i, view in enumerate(views):
        suffix = "" if len(views) == 1 else f"_{view.size[0]}x{view.size[1]}"
        for key in ("R1", "R2", "P1", "P2", "Q"):
            fs.write(key + suffix, getattr(view, key))
        fs.write("image_size" + suffix, np.array([view.size], dtype=np.float64))
        if i == 0:
            fs.write("unit", view.unit)
    atomic_write_bytes(path, fs.releaseAndGetString().encode())


def run(args: argparse.Namespace) -> int:
    import time

    from madis_stereo.app.pairs import find_pairs
    from madis_stereo.app.visualize import save_png
    from madis_stereo.errors import first_line
    from madis_stereo.geometry.calibration import read_calibration
    from madis_stereo.geometry.rectify import Rectifier, vertical_disparity
    from madis_stereo.inference.predictor import rgb_pair
    from madis_stereo.utils.console import duration, summary

    rectifier = Rectifier(read_calibration(args.calibration), alpha=args.alpha)
    pairs = find_pairs(args.inputs)
    started = time.perf_counter()
    failures, medians, views = [], [], {}
    for pair in pairs:
        try:
            left, right = rgb_pair(pair.left, pair.right)
            rect = rectifier.rectify(left, right)
            views[left.shape[:2]] = rectifier.view(left.shape[1], left.shape[0])
            save_png(args.out / f"{pair.name}_left.png", rect[0])
            save_png(args.out / f"{pair.name}_right.png", rect[1])
            before, after = vertical_disparity(left, right), vertical_disparity(*rect)
            log.info("%s: vertical disparity %s (raw: %s)", pair.name, after, before)
            if after.matches:
                medians.append(after.median)
        except (ValueError, OSError) as err:
            failures.append(f"{pair.left} + {pair.right}: {first_line(err)}")
            print(f"madis-stereo rectify: error: {failures[-1]}", file=sys.stderr)
    if views:
        _save_geometry(args.out / "rectification.yml", list(views.values()))
    items = [("pairs", f"{len(pairs) - len(failures)} of {len(pairs)} rectified into {args.out}"),
             ("time", duration(time.perf_counter() - started))]
    if medians:
        worst = max(medians)
        items.append(("vertical disparity", f"median {sum(medians) / len(medians):.2f} px over pairs, worst pair "
                      f"{worst:.2f} px" + (" (above 0.5 px: check the calibration)" if worst > 0.5 else "")))
    log.info("%s", summary("rectify finished", items))
    return 1 if failures else 0
