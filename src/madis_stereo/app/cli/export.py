"""``madis-stereo export``: the model in other formats (ONNX)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from madis_stereo.app.cli.common import CHECKPOINT_HELP

log = logging.getLogger("madis_stereo")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("export", help="export a model (ONNX)")
    sub = p.add_subparsers(dest="target", metavar="FORMAT")
    sub.required = True
    o = sub.add_parser(
        "onnx", help="ONNX model at a fixed crop",
        description="Export to ONNX at a fixed size: inputs left, right [1,3,H,W] (ImageNet-normalised float32), "
        "outputs disparity, confidence [1,1,H,W]; checked against PyTorch with onnxruntime. Run it with "
        "'madis-stereo predict --onnx MODEL.onnx' (tiled inference at any image size).")
    o.add_argument("--checkpoint", help=CHECKPOINT_HELP + " (default: the bundled model)")
    o.add_argument("--crop", nargs=2, type=int, metavar=("H", "W"), help="input size; default: the training crop")
    o.add_argument("-o", "--out", required=True, type=Path, metavar="model.onnx")
    o.add_argument("--opset", type=int, help="ONNX opset (default 17; 18 with --exporter dynamo)")
    o.add_argument("--exporter", choices=("torchscript", "dynamo"), default="torchscript",
                   help="torch.onnx exporter (default torchscript; dynamo needs onnxscript and opset >= 18)")
    o.add_argument("--no-check", action="store_true", help="skip the onnxruntime comparison")
    o.set_defaults(func=run_onnx)


def run_onnx(args: argparse.Namespace) -> int:
    from madis_stereo.inference.export import export_onnx
    from madis_stereo.model.checkpoint import load_default_model
    from madis_stereo.model.registry import load_model

    model = load_model(args.checkpoint) if args.checkpoint else load_default_model()
    crop = tuple(args.crop) if args.crop else tuple(model.config.crop)
    report = export_onnx(model, args.out, crop, opset=args.opset, exporter=args.exporter, check=not args.no_check)
    print(f"wrote {report.path} ({report.path.stat().st_size / 1e6:.1f} MB, {report.crop[0]}x{report.crop[1]}, "
          f"opset {report.opset}, {report.exporter} exporter, {report.seconds:.1f} s)")
    if report.max_abs_diff_disparity is not None:
        print(f"onnxruntime vs PyTorch max abs diff: disparity {report.max_abs_diff_disparity:.3g}, "
              f"confidence {report.max_abs_diff_confidence:.3g}")
    return 0
