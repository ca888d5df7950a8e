"""Tiny copies of each benchmark's folder layout, written on the fly (reusable by any test).

Each ``make_*`` function writes a few small frames under ``root`` in the benchmark's exact folder and file
naming and returns a :class:`Layout`: the ``build_dataset`` spec and, per split, the expected sample
contents by sample name. Example::

    layout = make_kitti2015(tmp_path / "kitti")
    ds = build_dataset(layout.spec("train"))
    expected = layout.frames["train"][ds[0]["name"]]   # {"left", "right", "disparity", "nonocc"}
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from madis_stereo.data import write_image, write_kitti_disparity, write_pfm

SIZE = (12, 20)  # height, width of every generated frame

MIDDLEBURY_CALIB = """cam0=[3997.684 0 1176.728; 0 3997.684 1011.728; 0 0 1]
cam1=[3997.684 0 1307.839; 0 3997.684 1011.728; 0 0 1]
doffs=131.111
baseline=193.001
width=2964
height=1988
ndisp=280
isint=0
vmin=31
vmax=257
dyavg=0.918
dymax=1.516
"""

ETH3D_CALIB = """cam0=[541.764 0 553.869; 0 541.764 232.396; 0 0 1]
cam1=[541.764 0 553.869; 0 541.764 232.396; 0 0 1]
doffs=0
baseline=59.8367
width=942
height=489
ndisp=64
isint=0
vmin=0
vmax=64
dyavg=0
dymax=0
"""


@dataclasses.dataclass
class Layout:
    """A generated dataset: its name, root, extra spec keys and expected samples per split."""

    name: str
    root: Path
    keys: dict[str, Any] = dataclasses.field(default_factory=dict)
    frames: dict[str, dict[str, dict[str, Any]]] = dataclasses.field(default_factory=dict)
    has_split: bool = True

    def spec(self, split: str = "train", **extra: Any) -> dict[str, Any]:
        spec = {"name": self.name, "root": str(self.root), **self.keys, **extra}
        if self.has_split:
            spec["split"] = split
        return spec


class _Writer:
    """Deterministic random frames; every call gives new content."""

    def __init__(self, seed: int = 0, size: tuple[int, int] = SIZE) -> None:
        self.rng = np.random.default_rng(seed)
        self.size = size

    def image(self, path: Path, gray: bool = False) -> np.ndarray:
        shape = self.size if gray else (*self.size, 3)
        image = self.rng.integers(0, 256, shape, dtype=np.uint8)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_image(path, image)
        return np.repeat(image[:, :, None], 3, axis=2) if gray else image

    def disparity(self, invalid: float = 0.2) -> np.ndarray:
        disparity = self.rng.uniform(0.5, 60.0, self.size).astype(np.float32)
        disparity[self.rng.random(self.size) < invalid] = np.inf
        return disparity

    def pfm(self, path: Path, invalid: float = 0.2) -> np.ndarray:
        disparity = self.disparity(invalid)
        write_pfm(path, disparity)
        return disparity

    def kitti(self, path: Path, invalid: float = 0.3) -> np.ndarray:
        disparity = self.disparity(invalid)
        write_kitti_disparity(path, disparity)
        return np.where(np.isfinite(disparity), np.round(disparity * 256) / 256, np.inf).astype(np.float32)

    def mask(self, path: Path) -> np.ndarray:
        mask = self.rng.choice(np.array([0, 128, 255], dtype=np.uint8), self.size)
        write_image(path, mask)
        return mask == 255

    def pair(self, left: Path, right: Path, gray: bool = False) -> dict[str, Any]:
        return {"left": self.image(left, gray), "right": self.image(right, gray)}


def make_sceneflow(root: Path, seed: int = 0) -> Layout:
    """FlyingThings3D (TRAIN A/B, TEST A), Driving and Monkaa; clean pass for all, final pass for Monkaa."""
    w = _Writer(seed)
    layout = Layout("sceneflow", root, frames={"train": {}, "test": {}})
    sequences = [
        ("flyingthings3d", "FlyingThings3D", "TRAIN/A/0000", ["0006", "0007"], "train"),
        ("flyingthings3d", "FlyingThings3D", "TRAIN/B/0001", ["0006"], "train"),
        ("flyingthings3d", "FlyingThings3D", "TEST/A/0000", ["0006"], "test"),
        ("driving", "Driving", "15mm_focallength/scene_backwards/fast", ["0001", "0002"], "train"),
        ("monkaa", "Monkaa", "a_rain_of_stones_x2", ["0000"], "train"),
    ]
    for subset, folder, seq, frames, split in sequences:
        for frame in frames:
            passes = ("clean", "final") if subset == "monkaa" else ("clean",)
            for pass_ in passes:
                images = root / folder / f"frames_{pass_}pass" / seq
                sample = w.pair(images / "left" / f"{frame}.png", images / "right" / f"{frame}.png")
                if pass_ == "clean":
                    expected = sample
            disp = root / folder / "disparity" / seq
            expected["disparity"] = w.pfm(disp / "left" / f"{frame}.pfm", invalid=0.0)
            w.pfm(disp / "right" / f"{frame}.pfm", invalid=0.0)
            expected["nonocc"] = None
            layout.frames[split][f"{subset}/{seq}/{frame}"] = expected
    return layout


def _make_kitti(name: str, root: Path, folders: tuple[str, str, str, str], seed: int) -> Layout:
    w = _Writer(seed)
    layout = Layout(name, root, frames={"train": {}, "test": {}})
    left, right, occ, noc = folders
    for split, base, count in (("train", root / "training", 3), ("test", root / "testing", 2)):
        for index in range(count):
            for frame in ("10", "11"):  # only the _10 frames have ground truth and are used
                stem = f"{index:06d}_{frame}"
                sample = w.pair(base / left / f"{stem}.png", base / right / f"{stem}.png")
                if frame == "11":
                    continue
                sample["disparity"] = sample["nonocc"] = None
                if split == "train":
                    sample["disparity"] = w.kitti(base / occ / f"{stem}.png", invalid=0.2)
                    noc_disp = np.where(w.rng.random(SIZE) < 0.2, np.inf, sample["disparity"])
                    write_kitti_disparity(base / noc / f"{stem}.png", noc_disp)
                    sample["nonocc"] = np.isfinite(noc_disp)
                layout.frames[split][stem] = sample
    return layout


def make_kitti2015(root: Path, seed: int = 1) -> Layout:
    return _make_kitti("kitti2015", root, ("image_2", "image_3", "disp_occ_0", "disp_noc_0"), seed)


def make_kitti2012(root: Path, seed: int = 2) -> Layout:
    return _make_kitti("kitti2012", root, ("colored_0", "colored_1", "disp_occ", "disp_noc"), seed)


def make_eth3d(root: Path, seed: int = 3) -> Layout:
    """Two training scenes with GT (grayscale images, as ETH3D ships them) and one test scene."""
    w = _Writer(seed)
    layout = Layout("eth3d", root, frames={"train": {}, "test": {}})
    for split, folder, scenes in (("train", "two_view_training", ("delivery_area_1l", "electro_1l")),
                                  ("test", "two_view_test", ("lakeside_1l",))):
        for scene in scenes:
            sample = w.pair(root / folder / scene / "im0.png", root / folder / scene / "im1.png", gray=True)
            (root / folder / scene / "calib.txt").write_text(ETH3D_CALIB)
            sample["disparity"] = sample["nonocc"] = None
            if split == "train":
                gt = root / "two_view_training_gt" / scene
                sample["disparity"] = w.pfm(gt / "disp0GT.pfm")
                sample["nonocc"] = w.mask(gt / "mask0nocc.png")
            layout.frames[split][scene] = sample
    return layout


def make_middlebury(root: Path, seed: int = 4, resolutions: str = "QH") -> Layout:
    """MiddEval3 under ``root/MiddEval3``: training{Q,H} (2 scenes) and test{Q,H} (1 scene)."""
    w = _Writer(seed)
    layout = Layout("middlebury", root, keys={"resolution": resolutions[0]}, frames={"train": {}, "test": {}})
    for resolution in resolutions:
        for split, kind, scenes in (("train", "training", ("Adirondack", "Motorcycle")),
                                    ("test", "test", ("Australia",))):
            for scene in scenes:
                folder = root / "MiddEval3" / f"{kind}{resolution}" / scene
                sample = w.pair(folder / "im0.png", folder / "im1.png")
                (folder / "calib.txt").write_text(MIDDLEBURY_CALIB)
                sample["disparity"] = sample["nonocc"] = None
                if split == "train":
                    sample["disparity"] = w.pfm(folder / "disp0GT.pfm")
                    sample["nonocc"] = w.mask(folder / "mask0nocc.png")
                if resolution == resolutions[0]:
                    layout.frames[split][scene] = sample
    return layout


def make_middlebury_scenes(root: Path, seed: int = 5) -> Layout:
    """Middlebury 2014 (``<scene>-perfect/`` with im1E/im1L) and 2021 (``<scene>/``) scene folders."""
    w = _Writer(seed)
    layout = Layout("middlebury", root, frames={"train": {}})
    for scene, extra in (("Adirondack-perfect", True), ("Bicycle1-perfect", True), ("artroom1", False)):
        folder = root / scene
        sample = w.pair(folder / "im0.png", folder / "im1.png")
        if extra:
            sample["im1E"] = w.image(folder / "im1E.png")
            w.image(folder / "im1L.png")
        sample["disparity"] = w.pfm(folder / "disp0.pfm")
        w.pfm(folder / "disp1.pfm")
        (folder / "calib.txt").write_text(MIDDLEBURY_CALIB)
        sample["nonocc"] = None
        layout.frames["train"][scene] = sample
    return layout


def make_folder(root: Path, seed: int = 6, disparity: str = "pfm") -> Layout:
    """Users' own data: ``left/*.png``, ``right/*.png`` and ``disp/*.{pfm,png,npy}`` with one unmatched
    left and one unmatched right image."""
    w = _Writer(seed)
    keys: dict[str, Any] = {"left": "left/*.png", "right": "right/*.png"}
    if disparity != "none":
        keys["disparity"] = f"disp/*.{disparity}"
    layout = Layout("folder", root, keys=keys, frames={"train": {}}, has_split=False)
    for stem in ("scene_a", "scene_b", "scene_c"):
        sample = w.pair(root / "left" / f"{stem}.png", root / "right" / f"{stem}.png")
        sample["nonocc"] = None
        sample["disparity"] = None
        path = root / "disp" / f"{stem}.{disparity}"
        if disparity == "pfm":
            sample["disparity"] = w.pfm(path)
        elif disparity == "png":
            sample["disparity"] = w.kitti(path)
        elif disparity == "npy":
            sample["disparity"] = w.disparity()
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, sample["disparity"])
        layout.frames["train"][stem] = sample
    w.image(root / "left" / "lonely_left.png")
    w.image(root / "right" / "lonely_right.png")
    return layout


LAYOUTS = {
    "sceneflow": make_sceneflow,
    "kitti2012": make_kitti2012,
    "kitti2015": make_kitti2015,
    "eth3d": make_eth3d,
    "middlebury": make_middlebury,
    "middlebury_scenes": make_middlebury_scenes,
    "folder": make_folder,
}
