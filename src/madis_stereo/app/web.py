"""``madis-stereo app``: a local Gradio web app to try a model on a pair without writing code.

Upload a pair (or take the bundled Middlebury Motorcycle example), choose the checkpoint (the bundled
model, a local path, or any other name :func:`~madis_stereo.model.checkpoint.load_model` accepts), and see
the coloured disparity, the certainty map and an interactive 3-D point cloud; download PFM, PNG16 and PLY.
Options: tile overlap, precision, colour range, and a calibration for metric depth (Middlebury/ETH3D
``calib.txt`` for a rectified pair, or a raw rig's OpenCV / KITTI calibration or its two ROS camera_info
files, which rectify the pair first). Needs the ``app`` extra (``pip install 'madis-stereo[app]'``).
"""

from __future__ import annotations

import functools
import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from madis_stereo.errors import InputError

__all__ = ["BUNDLED", "AppResult", "build_app", "run_pair"]

log = logging.getLogger(__name__)

BUNDLED = "bundled"
VIEWER_POINTS = 120_000  # the 3-D view gets a subsample; the PLY download has every point


@functools.lru_cache(maxsize=2)
def _model(checkpoint: str) -> Any:
    from madis_stereo.model.registry import load_model

    return load_model(checkpoint.strip() or BUNDLED)  # a path, a URL, a registered name or bundled


Calibration = str | Path | Sequence[str | Path] | None


def _calibration_files(calibration: Calibration) -> list[Path]:
    """The uploaded calibration file(s): none, one, or two (a ROS rig's camera_info files, either order)."""
    if not calibration:
        return []
    files = [calibration] if isinstance(calibration, (str, Path)) else [c for c in calibration if c]
    if len(files) > 2:
        raise InputError(f"calibration: one file, or the two ROS camera_info files of a rig; got {len(files)} files")
    return [Path(f) for f in files]


def _geometry(calibration: Calibration, width: int, height: int) -> tuple[Any, Any, str]:
    """(camera or rectified view, rectifier or None, description) for optional calibration file(s)."""
    from madis_stereo.geometry.camera import Camera, camera_from_calib

    files = _calibration_files(calibration)
    if not files:
        camera = Camera(fx=float(width), baseline=1.0, unit="baseline units")
        return camera, None, "no calibration: a nominal camera (f = image width, baseline 1), shape only"
    path = files[0]
    if len(files) == 1 and path.suffix.lower() == ".txt" and "cam0=" in path.read_text(errors="replace"):
        from madis_stereo.data.formats import read_calib

        return camera_from_calib(read_calib(path), path.name), None, f"{path.name}: rectified pair, depth in mm"
    from madis_stereo.geometry.calibration import read_calibration
    from madis_stereo.geometry.rectify import Rectifier

    rectifier = Rectifier(read_calibration(path if len(files) == 1 else files))
    view = rectifier.view(width, height)
    names = " + ".join(f.name for f in files)
    return view, rectifier, f"{names}: raw pair rectified, depth in {view.unit} in the original left camera"


@dataclass
class AppResult:
    """Paths of what one run produced, and a Markdown summary."""

    color: Path
    certainty: Path
    viewer_ply: Path
    files: list[Path]
    summary: str


def run_pair(left: np.ndarray, right: np.ndarray, checkpoint: str = BUNDLED, overlap: float = 0.7,
             precision: str = "auto", vmin: float = 0.0, vmax: float | None = None,
             calibration: Calibration = None, out_dir: Path | None = None) -> AppResult:
    """Predict one pair and write the app's files (colour PNG, certainty PNG, PFM, PNG16, PLY) into ``out_dir``."""
    from madis_stereo.app.outputs import OutputOptions, write_outputs, write_ply
    from madis_stereo.geometry.rectify import vertical_disparity
    from madis_stereo.inference.predictor import Predictor, rgb_pair

    if left is None or right is None:
        raise InputError("upload a left and a right image (or press 'Use the example')")
    left, right = rgb_pair(left, right)
    out = Path(out_dir or tempfile.mkdtemp(prefix="madis_app_"))
    camera, rectifier, geometry = _geometry(calibration, left.shape[1], left.shape[0])
    pair = rectifier.rectify(left, right) if rectifier is not None else (left, right)
    started = time.perf_counter()
    predictor = Predictor(_model(checkpoint), overlap=overlap, precision=precision)
    pred = predictor(*pair)
    seconds = time.perf_counter() - started
    finite = pred.disparity[np.isfinite(pred.disparity)]
    if vmax is None or vmax <= vmin:
        vmax = float(np.percentile(finite, 99)) if finite.size else vmin + 1.0
    options = OutputOptions(formats=("color", "conf", "pfm", "png16", "ply"), vmin=vmin, vmax=vmax)
    written = write_outputs(out, "disparity", pred.disparity, pred.confidence, left, options, camera)
    by_suffix = {p.name: p for p in written}
    points, colors = camera.points(pred.disparity, left)
    if len(points):  # the view leaves out the farthest 2% (a few far points would shrink the scene to a dot)
        near = points[:, 2] <= np.percentile(points[:, 2], 98)
        points, colors = points[near], colors[near]
    step = max(1, len(points) // VIEWER_POINTS)
    # OpenCV camera frame (y down, z forward) -> the viewer's (y up, the scene in front of the camera)
    viewer = write_ply(out / "view.ply", points[::step] * np.array([1, -1, -1], np.float32), colors[::step])
    lines = [f"**{pred.disparity.shape[1]}x{pred.disparity.shape[0]}** in {seconds:.2f} s "
             f"(checkpoint: {checkpoint or BUNDLED}, overlap {overlap}, {predictor.precision})",
             f"disparity {np.min(finite):.1f}..{np.max(finite):.1f} px, colour range {vmin:g}..{vmax:.4g} px",
             geometry]
    if rectifier is not None:
        lines.append(f"vertical disparity after rectification: {vertical_disparity(*pair)}")
    return AppResult(by_suffix["disparity_color.png"], by_suffix["disparity_conf.png"], viewer,
                     [by_suffix["disparity.pfm"], by_suffix["disparity_disp16.png"], by_suffix["disparity.ply"]],
                     "  \n".join(lines))


def _example() -> tuple[np.ndarray, np.ndarray]:
    from madis_stereo.app.demo import motorcycle

    left, right, _ = motorcycle()
    return left, right


def build_app(checkpoint: str = BUNDLED) -> Any:
    """The Gradio Blocks of the app (``checkpoint``: the initial value of the checkpoint box)."""
    try:
        import gradio as gr
    except ImportError:
        raise InputError("the web app needs gradio: pip install 'madis-stereo[app]'") from None
    from madis_stereo.errors import first_line

    def predict(left, right, checkpoint, overlap, precision, vmin, vmax, calibration):
        try:
            result = run_pair(left, right, checkpoint, float(overlap), precision, float(vmin or 0.0),
                              float(vmax) if vmax else None, calibration)
        except (ValueError, OSError, RuntimeError) as err:
            raise gr.Error(first_line(err)) from None
        return (str(result.color), str(result.certainty), str(result.viewer_ply),
                [str(p) for p in result.files], result.summary)

    with gr.Blocks(title="madis-stereo", analytics_enabled=False) as app:
        gr.Markdown("# madis-stereo\nStereo matching with MaDis-Stereo / CroCo-Stereo: disparity, certainty and "
                    "a point cloud for a rectified pair (or a raw pair with its calibration).")
        with gr.Row():
            left = gr.Image(label="left image", type="numpy", format="png", elem_id="left")
            right = gr.Image(label="right image", type="numpy", format="png", elem_id="right")
        with gr.Row():
            example = gr.Button("Use the example (Middlebury Motorcycle)", elem_id="example")
            run = gr.Button("Predict", variant="primary", elem_id="predict")
        with gr.Accordion("Model and options", open=False):
            ckpt = gr.Textbox(value=checkpoint, label="checkpoint: 'bundled', a local path, or a registered name")
            with gr.Row():
                overlap = gr.Slider(0.0, 0.9, value=0.7, step=0.05, label="tile overlap")
                precision = gr.Radio(["auto", "fp32", "bf16"], value="auto", label="precision")
                vmin = gr.Number(value=0.0, label="colour range start (px)")
                vmax = gr.Number(value=None, label="colour range end (px; empty = 99th percentile)")
            calib = gr.File(label="calibration for metric depth: calib.txt, OpenCV YAML/XML, KITTI "
                            "calib_cam_to_cam.txt, or a ROS rig's two camera_info YAML files",
                            type="filepath", file_count="multiple")
        with gr.Row():
            color = gr.Image(label="disparity", type="filepath", elem_id="disparity")
            sure = gr.Image(label="certainty (white = sure)", type="filepath", elem_id="certainty")
        cloud = gr.Model3D(label="point cloud (drag to turn)", display_mode="point_cloud", elem_id="cloud",
                           camera_position=(90, 90, None), height=480)
        files = gr.File(label="downloads: PFM, PNG16, PLY", file_count="multiple", elem_id="downloads")
        info = gr.Markdown(elem_id="summary")
        example.click(_example, outputs=[left, right], api_name="example")
        run.click(predict, inputs=[left, right, ckpt, overlap, precision, vmin, vmax, calib],
                  outputs=[color, sure, cloud, files, info], api_name="predict")
    return app
