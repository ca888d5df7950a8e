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
    make = sub.add_parser(
        "make-synthetic", help="write scenes of the synthetic world to disk in a dataset layout",
        description="Render scenes 0..COUNT-1 of the seeded synthetic stereo world (exact dense GT, occlusion "
                    "masks) and write them in one of the layouts our readers take: folder (left/, right/, "
                    "disparity/*.pfm), pairs (NNNN_left.png / NNNN_right.png in one folder, no GT), kitti2015, "
                    "kitti2012, middlebury (MiddEval3 trainingF) or eth3d. Prints the commands that read it.")
    make.add_argument("--layout", required=True, choices=("folder", "pairs", "kitti2015", "kitti2012", "middlebury",
                                                          "eth3d"), help="folder layout to write")
    make.add_argument("--out", required=True, type=Path, metavar="DIR", help="a new (or empty) folder")
    make.add_argument("--count", type=int, default=16, help="number of scenes (default 16)")
    make.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="image size (default 352 704)")
    make.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="a synthetic-world key (docs/DATA.md), e.g. seed=3, max_disparity=64, lighting=0")
    make.set_defaults(func=run_make_synthetic)


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

    from madis_stereo.app.cli.common import dataset_spec
    from madis_stereo.data import build_dataset, write_image
    from madis_stereo.errors import DataError

    dataset = build_dataset(dataset_spec(args.dataset, args.root, args.split, args.overrides))
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
            print(f"  {sample['name']}: {sample['left'].shape[0]}x{sample['left'].shape[1]} (HxW, like --crop){rng}")
        if args.out is not None:
            write_image(args.out, sample_sheet(samples))
            print(f"wrote {args.out}")
    return 0


def run_make_synthetic(args: argparse.Namespace) -> int:
    from madis_stereo.app.cli.common import dataset_spec, progress
    from madis_stereo.data import build_dataset
    from madis_stereo.data.synthetic.disk import read_spec, write_synthetic

    spec = dataset_spec("synthetic", None, None, args.overrides)
    if args.size is not None:
        spec["size"] = list(args.size)
    config = build_dataset(spec).config  # checks every key and value
    names = write_synthetic(args.out, args.layout, args.count, config,
                            progress=lambda it: progress(it, args.count, "render", "scene", disable=args.quiet))
    height, width = config.size
    print(f"wrote {len(names)} {height}x{width} scene(s) (seed {config.seed}), {args.layout} layout, to {args.out}")
    read = read_spec(args.layout, args.out)
    name = read.pop("name")
    root = read.pop("root")
    options = "".join(f" --set {key}='{value}'" for key, value in read.items())
    print(f"check it:    madis-stereo data check --dataset {name} --root {root}{options}")
    if args.layout == "pairs":
        print(f"predict:     madis-stereo predict {root} {root} -o {root}_predictions")
    else:
        print(f"evaluate:    madis-stereo evaluate --dataset {name} --root {root}{options}")
    return 0
