"""The demo: a stereo model next to OpenCV's StereoSGBM on a real pair, with images and metrics.

The default pair is the Middlebury 2014 Motorcycle scene that ships with scikit-image (quarter resolution,
741x500; invalid GT = +inf), so the demo needs no download.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from madis_stereo.app.visualize import colorize_disparity, confidence_image, error_map, save_png, side_by_side
from madis_stereo.errors import InputError
from madis_stereo.evaluation.baselines import fill_holes_rowwise, sgbm_disparity
from madis_stereo.evaluation.metrics import stereo_metrics
from madis_stereo.inference.predictor import Predictor, rgb_pair
from madis_stereo.utils.files import atomic_path

__all__ = ["DemoResult", "METRIC_COLUMNS", "motorcycle", "run_demo"]

log = logging.getLogger(__name__)

# Motorcycle's calib.txt ndisp is 270 at full resolution; scikit-image's copy is a quarter of that.
MOTORCYCLE_MAX_DISPARITY = 270 / 4
METRIC_COLUMNS = ("epe", "bad_1", "bad_2", "bad_3", "d1", "invalid_pred")


@dataclass
class DemoResult:
    """Metric rows (one per method; empty without GT), written files, and the model's run time."""

    rows: list[dict[str, Any]]
    files: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0


def motorcycle(scale: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The real Motorcycle pair (uint8 HxWx3 x 2) and GT disparity (float32, +inf invalid), optionally scaled."""
    import cv2
    import skimage.data

    left, right, gt = skimage.data.stereo_motorcycle()
    gt = np.where(np.isfinite(gt), gt, np.inf).astype(np.float32)
    if scale != 1.0:
        size = (max(32, round(left.shape[1] * scale)), max(32, round(left.shape[0] * scale)))
        left = cv2.resize(left, size, interpolation=cv2.INTER_AREA)
        right = cv2.resize(right, size, interpolation=cv2.INTER_AREA)
        gt = cv2.resize(gt, size, interpolation=cv2.INTER_NEAREST) * (size[0] / gt.shape[1])
    return left, right, gt


def _score(name: str, disparity: np.ndarray, gt: np.ndarray) -> dict[str, Any]:
    values = stereo_metrics(disparity, gt)
    return {"method": name, **{k: values[k] for k in METRIC_COLUMNS}}


def run_demo(model: torch.nn.Module, left: np.ndarray, right: np.ndarray, gt: np.ndarray | None, out_dir: Path,
             max_disparity: float | None = None, label: str = "ours",
             compare: Mapping[str, torch.nn.Module] | None = None, **predictor_kwargs: Any) -> DemoResult:
    """Predict with ``model`` and SGBM (raw and row-filled), write images and, with GT, score all of them.

    ``label`` names the model in the metric rows and on the sheet (e.g. "bundled model", "crocostereo");
    ``compare`` adds more models (label -> model), each with its row, disparity and error image.
    Writes into ``out_dir``: disparity.png, confidence.png, sgbm.png, sgbm_filled.png, sheet.png, and with
    GT error.png, error_sgbm.png and metrics.json; ``disparity_<label>.png`` (and ``error_<label>.png``) per
    compared model. ``predictor_kwargs`` go to :class:`Predictor`.
    """
    left, right = rgb_pair(left, right)
    if gt is not None and gt.shape != left.shape[:2]:
        raise InputError(f"ground truth is {gt.shape}, the images are {left.shape[:2]}")
    out_dir = Path(out_dir)
    models = {label: model, **(compare or {})}
    if len(models) != 1 + len(compare or {}):
        raise InputError(f"two models are labelled '{label}'; give the compared ones other labels")
    preds, seconds = {}, {}
    for name, net in models.items():
        start = time.perf_counter()
        preds[name] = Predictor(net, **predictor_kwargs)(left, right)
        seconds[name] = time.perf_counter() - start
        log.info("%s: %.2f s for %dx%d", name, seconds[name], left.shape[1], left.shape[0])
    pred = preds[label]
    sgbm = sgbm_disparity(left, right, max_disparity=max_disparity)
    filled = fill_holes_rowwise(sgbm)
    finite = gt[np.isfinite(gt)] if gt is not None else pred.disparity.ravel()
    vmax = float(np.percentile(finite, 99.5)) if finite.size else None
    images = {
        "disparity": colorize_disparity(pred.disparity, vmin=0.0, vmax=vmax),
        "confidence": confidence_image(pred.certainty, vmin=0.0, vmax=1.0),
        "sgbm": colorize_disparity(sgbm, vmin=0.0, vmax=vmax),
        "sgbm_filled": colorize_disparity(filled, vmin=0.0, vmax=vmax),
    }
    others = [name for name in models if name != label]
    for name in others:
        images[f"disparity_{_slug(name)}"] = colorize_disparity(preds[name].disparity, vmin=0.0, vmax=vmax)
    rows: list[dict[str, Any]] = []
    sheet = [left, images["disparity"], images["confidence"], images["sgbm"], images["sgbm_filled"],
             *(images[f"disparity_{_slug(name)}"] for name in others)]
    labels = ["left", label, "certainty", "SGBM", "SGBM filled", *others]
    if gt is not None:
        scored = {name: _score(name, preds[name].disparity, gt) for name in models}
        scored["SGBM"], scored["SGBM filled"] = _score("SGBM", sgbm, gt), _score("SGBM filled", filled, gt)
        rows = [scored[name] for name in (label, *others, "SGBM", "SGBM filled")]
        images["error"] = error_map(pred.disparity, gt)
        images["error_sgbm"] = error_map(sgbm, gt)
        for name in others:
            images[f"error_{_slug(name)}"] = error_map(preds[name].disparity, gt)
        sheet = [left, colorize_disparity(gt, vmin=0.0, vmax=vmax), *sheet[1:5], images["error"],
                 images["error_sgbm"]]
        labels = ["left", "ground truth", *(f"{lab} bad-2 {scored[lab]['bad_2']:.1f}%" if lab in scored else lab
                                            for lab in labels[1:5]), f"error {label}", "error SGBM"]
        for name in others:
            sheet += [images[f"disparity_{_slug(name)}"], images[f"error_{_slug(name)}"]]
            labels += [f"{name} bad-2 {scored[name]['bad_2']:.1f}%", f"error {name}"]
    images["sheet"] = side_by_side(sheet, labels, columns=4 if gt is not None else 3)
    files = {name: save_png(out_dir / f"{name}.png", img) for name, img in images.items()}
    if rows:
        report = {"rows": rows, "model_seconds": seconds[label], "seconds": seconds}
        with atomic_path(out_dir / "metrics.json") as tmp:
            tmp.write_text(json.dumps(report, indent=1))
        files["metrics"] = out_dir / "metrics.json"
    return DemoResult(rows, files, seconds[label])


def _slug(label: str) -> str:
    """A label as a file-name part: letters, digits, '-' and '_' kept, the rest '_'."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", label).strip("_") or "model"
