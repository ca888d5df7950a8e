"""Write scenes of the synthetic world to disk in the folder layouts our readers take (docs/DATA.md).

``write_synthetic(out, layout, count, config)`` renders scenes ``0 .. count-1`` of a :class:`SyntheticStereo`
and writes each as the layout's files:

- ``folder``: ``left/NNNN.png``, ``right/NNNN.png``, ``disparity/NNNN.pfm`` (read with ``name: folder`` and
  ``disparity: "disparity/*.pfm"``);
- ``pairs``: one folder of ``NNNN_left.png`` / ``NNNN_right.png`` (what ``predict DIR DIR`` pairs), no GT;
- ``kitti2015`` / ``kitti2012``: ``training/{image_2,image_3,disp_occ_0,disp_noc_0}/NNNNNN_10.png`` (2012:
  ``colored_0``, ``colored_1``, ``disp_occ``, ``disp_noc``), disparity as uint16 PNG of round(d * 256);
- ``middlebury``: ``MiddEval3/trainingF/synthNNNN/{im0,im1}.png, calib.txt, disp0GT.pfm, mask0nocc.png``;
- ``eth3d``: ``two_view_training/synthNNNN/{im0,im1}.png, calib.txt`` and
  ``two_view_training_gt/synthNNNN/{disp0GT.pfm, mask0nocc.png}``.

The disparity is the exact dense left-view GT; the non-occluded mask (KITTI ``disp_noc``, Middlebury/ETH3D
``mask0nocc.png`` = 255 where visible in the right view, 128 where occluded) comes from the render's exact
occlusion test. The synthetic world has no physical camera: ``calib.txt`` states a pinhole camera with
focal length = image width in pixels, principal point at the centre and a 100 mm baseline, so depth from
these files is in millimetres and consistent with the disparity. Every file is written atomically.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from madis_stereo.data.formats import write_image, write_kitti_disparity, write_pfm
from madis_stereo.data.synthetic.config import SyntheticConfig
from madis_stereo.data.synthetic.world import SyntheticRender, SyntheticStereo
from madis_stereo.errors import InputError
from madis_stereo.utils.files import atomic_write_bytes

__all__ = ["LAYOUTS", "SYNTHETIC_BASELINE_MM", "read_spec", "write_synthetic"]

SYNTHETIC_BASELINE_MM = 100.0

_KITTI_FOLDERS = {"kitti2015": ("image_2", "image_3", "disp_occ_0", "disp_noc_0"),
                  "kitti2012": ("colored_0", "colored_1", "disp_occ", "disp_noc")}


def _calib_text(height: int, width: int, max_disparity: float) -> str:
    f, cx, cy = float(width), (width - 1) / 2, (height - 1) / 2
    cam = f"[{f:g} 0 {cx:g}; 0 {f:g} {cy:g}; 0 0 1]"
    ndisp = int(math.ceil(max_disparity)) + 1
    return (f"cam0={cam}\ncam1={cam}\ndoffs=0\nbaseline={SYNTHETIC_BASELINE_MM:g}\nwidth={width}\nheight={height}\n"
            f"ndisp={ndisp}\nisint=0\nvmin=0\nvmax={ndisp - 1}\n")


def _mask_png(render: SyntheticRender) -> np.ndarray:
    """Middlebury/ETH3D ``mask0nocc``: 255 visible in both views, 128 occluded."""
    if render.nonocc is None:
        return np.full(render.disparity.shape, 255, np.uint8)
    return np.where(render.nonocc, 255, 128).astype(np.uint8)


def _write_folder(out: Path, index: int, render: SyntheticRender, cfg: SyntheticConfig) -> str:
    name = f"{index:04d}"
    write_image(out / "left" / f"{name}.png", render.left)
    write_image(out / "right" / f"{name}.png", render.right)
    write_pfm(out / "disparity" / f"{name}.pfm", render.disparity)
    return name


def _write_pairs(out: Path, index: int, render: SyntheticRender, cfg: SyntheticConfig) -> str:
    name = f"{index:04d}"
    write_image(out / f"{name}_left.png", render.left)
    write_image(out / f"{name}_right.png", render.right)
    return name


def _kitti_writer(layout: str) -> Callable[[Path, int, SyntheticRender, SyntheticConfig], str]:
    left_dir, right_dir, occ_dir, noc_dir = _KITTI_FOLDERS[layout]

    def write(out: Path, index: int, render: SyntheticRender, cfg: SyntheticConfig) -> str:
        name = f"{index:06d}_10"
        base = out / "training"
        write_image(base / left_dir / f"{name}.png", render.left)
        write_image(base / right_dir / f"{name}.png", render.right)
        write_kitti_disparity(base / occ_dir / f"{name}.png", render.disparity)
        noc = render.disparity if render.nonocc is None else np.where(render.nonocc, render.disparity, np.inf)
        write_kitti_disparity(base / noc_dir / f"{name}.png", noc)
        return name

    return write


def _scene_writer(images: str, gt: str | None) -> Callable[[Path, int, SyntheticRender, SyntheticConfig], str]:
    """Middlebury / ETH3D scene folders: images and calib.txt under ``images``, GT under ``gt`` (or beside)."""

    def write(out: Path, index: int, render: SyntheticRender, cfg: SyntheticConfig) -> str:
        name = f"synth{index:04d}"
        folder = out / images / name
        gt_folder = out / gt / name if gt is not None else folder
        write_image(folder / "im0.png", render.left)
        write_image(folder / "im1.png", render.right)
        calib = _calib_text(*render.disparity.shape, cfg.max_disparity)
        atomic_write_bytes(folder / "calib.txt", calib.encode())
        write_pfm(gt_folder / "disp0GT.pfm", render.disparity)
        write_image(gt_folder / "mask0nocc.png", _mask_png(render))
        return name

    return write


@dataclasses.dataclass(frozen=True)
class Layout:
    """How one layout is written, and the ``build_dataset`` spec (without root) that reads it back."""

    write: Callable[[Path, int, SyntheticRender, SyntheticConfig], str]
    spec: dict[str, Any]


LAYOUTS: dict[str, Layout] = {
    "folder": Layout(_write_folder, {"name": "folder", "disparity": "disparity/*.pfm"}),
    "pairs": Layout(_write_pairs, {"name": "folder", "left": "*_left.png", "right": "*_right.png"}),
    "kitti2015": Layout(_kitti_writer("kitti2015"), {"name": "kitti2015"}),
    "kitti2012": Layout(_kitti_writer("kitti2012"), {"name": "kitti2012"}),
    "middlebury": Layout(_scene_writer("MiddEval3/trainingF", None), {"name": "middlebury"}),
    "eth3d": Layout(_scene_writer("two_view_training", "two_view_training_gt"), {"name": "eth3d"}),
}


def read_spec(layout: str, root: str | Path) -> dict[str, Any]:
    """The ``build_dataset`` spec that reads what :func:`write_synthetic` wrote with ``layout`` under ``root``."""
    return {**LAYOUTS[layout].spec, "root": str(root)}


def write_synthetic(out: str | Path, layout: str, count: int, config: SyntheticConfig | None = None,
                    progress: Callable[[Any], Any] | None = None) -> list[str]:
    """Render scenes 0 .. ``count - 1`` of the synthetic world and write them under ``out`` in ``layout``.

    ``out`` must be missing or empty (files of an earlier set would mix in). Returns the frame names.
    """
    if layout not in LAYOUTS:
        raise InputError(f"unknown layout {layout!r}; choose from {', '.join(LAYOUTS)}")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise InputError(f"count must be an integer >= 1, got {count!r}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out}: {'not a folder' if not out.is_dir() else 'folder is not empty'}; "
                         "choose a new --out")
    config = config or SyntheticConfig()
    if layout in ("kitti2015", "kitti2012") and config.max_disparity >= 256:
        raise InputError(f"max_disparity {config.max_disparity:g} does not fit KITTI's uint16 PNG (d * 256 < 65536)")
    world = SyntheticStereo(config)
    indices = range(count) if progress is None else progress(range(count))
    return [LAYOUTS[layout].write(out, i, world.render(i), config) for i in indices]
