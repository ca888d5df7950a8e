"""``madis-stereo data check``: what a dataset folder holds, and a picture of a few samples."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

_PANEL_WIDTH = 320


_NAMES = "sceneflow, kitti2012, kitti2015, eth3d, middlebury, folder, synthetic"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="inspect stereo datasets",
                                   description="Inspect stereo datasets (see docs/DATA.md for the layouts).")
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION")
    sub.required = True
    check = sub.add_parser(
        "check", help="list what a dataset folder holds and draw a sheet of samples",
        description="List what was found under --root (per split/subset), load a few samples and write a PNG "
                    "sheet (left, right, ground truth). Exits non-zero on a missing or invalid layout.")
    check.add_argument("--dataset", required=True, help=f"dataset name: {_NAMES}")
    check.add_argument("--root", help="dataset folder (not needed for 'synthetic')")
    check.add_argument("--split", choices=("train", "test"), help="split (default: the dataset's default, train)")
    check.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="another dataset key, value parsed as YAML (e.g. resolution=Q, left='l/*.png')")
    check.add_argument("--samples", type=int, default=4, help="samples drawn on the sheet (default 4; 0 = none)")
    check.add_argument("--out", type=Path, help="sheet PNG path (default: no sheet)")
    check.add_argument("--verify", action="store_true", help="load every sample and report unreadable ones")
    check.set_defaults(func=run_check)


def dataset_spec(args: argparse.Namespace) -> dict:
    """The ``build_dataset`` spec from the command line options."""
    from madis_stereo.utils.config import apply_overrides

    spec: dict = {"name": args.dataset}
    if args.root is not None:
        spec["root"] = str(args.root)
    if args.split is not None:
        spec["split"] = args.split
    return apply_overrides(spec, args.overrides)


def _panel(image: np.ndarray, label: str) -> np.ndarray:
    import cv2

    height = max(1, round(image.shape[0] * _PANEL_WIDTH / image.shape[1]))
    panel = cv2.resize(image, (_PANEL_WIDTH, height), interpolation=cv2.INTER_AREA)
    cv2.putText(panel, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return panel


def sample_sheet(samples: list[dict]) -> np.ndarray:
    """One row per sample: left, right, colourised ground truth (gray when there is none)."""
    import numpy as np

    from madis_stereo.app.visualize import colorize_disparity

    rows = []
    for sample in samples:
        left, right, disparity = sample["left"], sample["right"], sample.get("disparity")
        if disparity is not None:
            gt = colorize_disparity(disparity)
            gt_label = f"GT {np.isfinite(disparity).mean():.0%} valid"
        else:
            gt, gt_label = np.full_like(left, 64), "no GT"
        panels = [_panel(left, sample["name"][-40:]), _panel(right, "right"), _panel(gt, gt_label)]
        rows.append(np.concatenate(panels, axis=1))
    gap = np.zeros((4, 3 * _PANEL_WIDTH, 3), np.uint8)
    return np.concatenate([part for row in rows for part in (row, gap)][:-1], axis=0)


def run_check(args: argparse.Namespace) -> int:
    import numpy as np

    from madis_stereo.data import build_dataset, write_image
    from madis_stereo.errors import DataError

    dataset = build_dataset(dataset_spec(args))
    print(dataset.describe())
    if args.verify:
        bad = []
        for index in range(len(dataset)):
            try:
                dataset[index]
            except DataError as err:
                bad.append(str(err))
        for message in bad:
            print(f"  unreadable: {message}")
        if bad:
            raise DataError(f"{len(bad)} of {len(dataset)} samples could not be read (first: {bad[0]})")
        print(f"verified: all {len(dataset)} samples load")
    count = min(max(args.samples, 0), len(dataset))
    if count:
        indices = sorted({int(i) for i in np.linspace(0, len(dataset) - 1, count)})
        samples = [dataset[i] for i in indices]
        for sample in samples:
            disparity = sample.get("disparity")
            valid = np.isfinite(disparity) if disparity is not None else None
            rng = f", disparity {disparity[valid].min():.2f}..{disparity[valid].max():.2f}" \
                if valid is not None and valid.any() else ""
            print(f"  {sample['name']}: {sample['left'].shape[1]}x{sample['left'].shape[0]}{rng}")
        if args.out is not None:
            write_image(args.out, sample_sheet(samples))
            print(f"wrote {args.out}")
    return 0
