"""``madis-stereo evaluate``: a benchmark's metrics (and submission files) for a checkpoint."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from madis_stereo.app.cli import common

log = logging.getLogger("madis_stereo")

# Columns of the printed table per protocol (the JSON has every metric).
TABLE_COLUMNS = {
    "kitti2015": ["d1_all", "epe", "density"],
    "kitti2012": ["bad_2.0", "bad_3.0", "d1_all", "epe"],
    "eth3d": ["bad_0.5", "bad_1.0", "bad_2.0", "bad_4.0", "avgerr", "rms", "a90"],
    "middlebury": ["bad_0.5", "bad_1.0", "bad_2.0", "bad_4.0", "avgerr", "rms", "a90"],
    "sceneflow": ["epe", "bad_1.0"],
    "generic": ["epe", "bad_1.0", "bad_3.0", "d1_all"],
}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate", help="benchmark metrics of a checkpoint on a dataset",
        description="Tiled prediction over a dataset, scored with the benchmark's protocol (KITTI: D1-all, "
        "EPE on occ/noc; ETH3D/Middlebury: bad-0.5/1/2/4, avgerr, rms, A50..A99 on nonocc/all; SceneFlow: "
        "EPE, bad-1 on |gt| < 192). Writes per-image and aggregate results as JSON.")
    p.add_argument("--dataset", required=True, help="kitti2012, kitti2015, eth3d, middlebury, sceneflow, folder, ...")
    p.add_argument("--root", type=Path, metavar="DIR", help="dataset root folder (every dataset but synthetic)")
    p.add_argument("--split", choices=("train", "test"),
                   help="benchmark split (default train; test = submission only); folder and synthetic have none")
    p.add_argument("--set", dest="dataset_options", action="append", default=[], metavar="KEY=VALUE",
                   help="further dataset option (e.g. resolution=H for Middlebury)")
    p.add_argument("--max-images", type=int, metavar="N", help="evaluate only the first N pairs")
    p.add_argument("--out", type=Path, metavar="results.json", help="write per-image and aggregate results")
    p.add_argument("--submission", type=Path, metavar="DIR",
                   help="also write the benchmark's submission files (KITTI, ETH3D, Middlebury)")
    p.add_argument("--algo", default="MaDis", help="method name in Middlebury submission files (default MaDis)")
    common.add_model_arguments(p)
    p.set_defaults(func=run)


def _table(result: Any) -> str:
    from madis_stereo.utils.tables import format_table

    columns = TABLE_COLUMNS.get(result.protocol, [])
    regions = [r for r in ("all", "noc") if f"{r}/n" in result.aggregate]
    rows = []
    for region in regions:
        row: dict[str, Any] = {"region": region, "pixels": result.aggregate[f"{region}/n"]}
        row.update({c: result.aggregate.get(f"{region}/{c}") for c in columns})
        rows.append(row)
    return format_table(rows) if rows else "(no ground truth: no metrics)"


def run(args: argparse.Namespace) -> int:
    from madis_stereo.data import build_dataset, dataset_keys
    from madis_stereo.evaluation.evaluate import SubmissionWriter, evaluate_dataset, protocol_for
    from madis_stereo.inference.predictor import Predictor
    from madis_stereo.utils.console import duration, summary
    from madis_stereo.utils.files import atomic_write_bytes

    started = time.perf_counter()
    config = common.dataset_spec(args.dataset, args.root, args.split, args.dataset_options)
    protocol = protocol_for(args.dataset)
    split = config.get("split", "train") if "split" in dataset_keys(args.dataset) else None  # folder, synthetic: none
    writer = None
    if args.submission is not None:
        writer = SubmissionWriter(args.dataset, args.submission, algo=args.algo, split=split or "train",
                                  resolution=str(config.get("resolution", "F")))
    dataset = build_dataset(config)
    predictor = Predictor(common.load_cli_model(args), **common.predictor_kwargs(args))
    total = len(dataset) if args.max_images is None else min(len(dataset), args.max_images)
    log.info("%s: %d pair(s), protocol %s, crop %dx%d, overlap %.2f, %s", args.dataset, total, protocol,
             *predictor.crop, predictor.overlap, predictor.device)
    result = evaluate_dataset(
        predictor, dataset, protocol, max_images=args.max_images, submission=writer,
        progress=lambda it: common.progress(it, total, "evaluate", "pair", disable=args.quiet))
    print(_table(result))
    items: list[tuple[str, Any]] = [
        ("dataset", f"{args.dataset}{f' ({split})' if split else ''}{f' at {args.root}' if args.root else ''}, "
                    f"protocol {protocol}"),
        ("checkpoint", str(args.checkpoint or "bundled default")),
        ("pairs", f"{len(result.per_image)} in {duration(time.perf_counter() - started)} "
                  f"({result.mean_runtime:.3f} s per pair for the model)")]
    if args.out is not None:
        report = {"dataset": config, "checkpoint": str(args.checkpoint or "bundled default"),
                  "settings": {"crop": list(predictor.crop), "overlap": predictor.overlap,
                               "conf_mode": predictor.conf_mode, "blend": predictor.blend,
                               "precision": predictor.precision,
                               "device": str(predictor.device)},
                  **result.to_dict()}
        atomic_write_bytes(args.out, (json.dumps(report, indent=2) + "\n").encode())
        items.append(("results", str(args.out)))
    if writer is not None:
        items.append(("submission", f"{args.submission} ({len(result.submission)} files)"))
    log.info("%s", summary("evaluate finished", items))
    return 0
