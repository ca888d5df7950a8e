"""One dataset class per public benchmark: SceneFlow, KITTI 2012/2015, ETH3D two-view, Middlebury.

Each finds its frames under a ``root`` folder laid out as the benchmark's official archives unpack (see
docs/DATA.md); a missing root or sub-folder raises DataError naming the path and what was expected.
Every class has a ``Spec`` dataclass (the YAML keys accepted by ``build_dataset``) that mirrors its
constructor's keyword arguments.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar

from madis_stereo.data.base import Frame, StereoDataset, check_choice, filter_names
from madis_stereo.errors import DataError

__all__ = ["ETH3D", "Kitti2012", "Kitti2015", "Middlebury", "SceneFlow"]

SPLITS = ("train", "test")


def _subdirs(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.is_dir())


def _optional(path: Path) -> Path | None:
    return path if path.is_file() else None


# --------------------------------------------------------------------------------------------------
# SceneFlow
# --------------------------------------------------------------------------------------------------

# Folder names accepted for each subset (case-insensitive), and the frame pattern below frames_<pass>.
_SCENEFLOW = {
    "flyingthings3d": (("flyingthings3d", "flyingthings", "flying_things_3d"), "{split}/{part}/*/left/*.{ext}"),
    "driving": (("driving",), "*/*/*/left/*.{ext}"),
    "monkaa": (("monkaa",), "*/left/*.{ext}"),
}


@dataclasses.dataclass(frozen=True)
class SceneFlowSpec:
    KEY_ALIASES: ClassVar[dict[str, str]] = {"pass": "pass_"}

    root: str
    split: str = "train"
    subset: str = "all"
    pass_: str = "clean"  # YAML key "pass" (a Python keyword)
    parts: tuple[str, ...] = ("A", "B", "C")


class SceneFlow(StereoDataset):
    """SceneFlow (FlyingThings3D, Driving, Monkaa): ``frames_{clean,final}pass`` PNGs and left-view
    ``disparity`` PFMs; FlyingThings3D has TRAIN/TEST splits with parts A/B/C, Driving and Monkaa only
    training data. ``root`` holds the subset folders (e.g. ``FlyingThings3D/``, ``Driving/``, ``Monkaa/``)
    or, with one ``subset``, may be that subset's folder itself."""

    title = "SceneFlow"
    Spec = SceneFlowSpec

    def __init__(self, root: str | Path, split: str = "train", subset: str = "all", pass_: str = "clean",
                 parts: tuple[str, ...] = ("A", "B", "C")) -> None:
        super().__init__(root)
        check_choice(split, SPLITS, "split")
        check_choice(subset, ("all", *_SCENEFLOW), "subset")
        check_choice(pass_, ("clean", "final"), "pass")
        self.title = f"SceneFlow ({pass_} pass, {split})"
        self._require_dir(self.root, "a SceneFlow folder holding FlyingThings3D/, Driving/ and/or Monkaa/")
        names = list(_SCENEFLOW) if subset == "all" else [subset]
        if split == "test":
            if subset in ("driving", "monkaa"):
                raise DataError(f"{self.root}: SceneFlow {subset} has no test split (only flyingthings3d has)")
            names = ["flyingthings3d"]
        frames: list[Frame] = []
        for name in names:
            folder = self._find_subset(name, explicit=subset != "all")
            if folder is None:
                self._note(f"{name}: not found (looked for {self.root}/{_SCENEFLOW[name][0][0]} and similar)")
                continue
            found = self._frames(name, folder, split, pass_, parts, explicit=subset != "all")
            self.counts[name] = len(found)
            frames += found
        self._set_frames(frames, f"frames_{pass_}pass/.../left/*.png with disparity/.../left/*.pfm")

    def _find_subset(self, name: str, explicit: bool) -> Path | None:
        aliases = _SCENEFLOW[name][0]
        for child in sorted(self.root.iterdir()):
            if child.is_dir() and child.name.lower() in aliases:
                return child
        if explicit and any((self.root / f"frames_{p}pass").is_dir() for p in ("clean", "final")):
            return self.root
        return None

    def _frames(self, name: str, folder: Path, split: str, pass_: str, parts: tuple[str, ...],
                explicit: bool) -> list[Frame]:
        frames_dir, ext = folder / f"frames_{pass_}pass", "png"
        if not frames_dir.is_dir() and (folder / f"frames_{pass_}pass_webp").is_dir():
            frames_dir, ext = folder / f"frames_{pass_}pass_webp", "webp"
        if not frames_dir.is_dir() and not explicit:  # e.g. only the other pass was downloaded
            self._note(f"{name}: {frames_dir} not found (no {pass_} pass images)")
            return []
        self._require_dir(frames_dir, f"SceneFlow {name} images frames_{pass_}pass/")
        disp_dir = self._require_dir(folder / "disparity", f"SceneFlow {name} disparity PFMs disparity/")
        pattern = _SCENEFLOW[name][1]
        patterns = [pattern.format(split=split.upper(), part=p, ext=ext) for p in parts] if "{part}" in pattern \
            else [pattern.format(ext=ext)]
        frames = []
        for pat in patterns:
            for left in sorted(frames_dir.glob(pat)):
                rel = left.relative_to(frames_dir)
                right = frames_dir / rel.parent.parent / "right" / rel.name
                stem = rel.parent.parent / rel.stem
                frames.append(Frame(name=f"{name}/{stem.as_posix()}", left=left, right=right,
                                    disparity=(disp_dir / rel).with_suffix(".pfm")))
        if not frames:
            self._note(f"{name}: no frames matching {frames_dir}/{patterns[0]}")
        return frames


# --------------------------------------------------------------------------------------------------
# KITTI
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class KittiSpec:
    root: str
    split: str = "train"
    gt: str = "occ"


class _Kitti(StereoDataset):
    """KITTI stereo: frames ``NNNNNN_10.png``; GT ``disp_occ`` (all pixels) or ``disp_noc``; the
    ``nonocc`` mask is where the ``disp_noc`` GT is valid."""

    folders: tuple[str, str, str, str] = ("", "", "", "")  # left, right, disp_occ, disp_noc
    Spec = KittiSpec

    def __init__(self, root: str | Path, split: str = "train", gt: str = "occ") -> None:
        super().__init__(root)
        check_choice(split, SPLITS, "split")
        check_choice(gt, ("occ", "noc"), "gt")
        self.has_gt = split == "train"
        self.title = f"{self.title} ({split})"
        left_name, right_name, occ_name, noc_name = self.folders
        self._require_dir(self.root, f"a {type(self).title} folder with training/ and testing/")
        base = self._require_dir(self.root / ("training" if split == "train" else "testing"),
                                 f"the KITTI {'training' if split == 'train' else 'testing'}/ folder")
        left_dir = self._require_dir(base / left_name, f"left images {left_name}/NNNNNN_10.png")
        right_dir = self._require_dir(base / right_name, f"right images {right_name}/NNNNNN_10.png")
        noc_dir = base / noc_name
        if self.has_gt:
            gt_dir = self._require_dir(base / (occ_name if gt == "occ" else noc_name), "KITTI disparity PNGs")
            if not noc_dir.is_dir():
                self._note(f"{noc_dir} not found: no non-occluded mask")
        frames = []
        for left in sorted(left_dir.glob("*_10.png")):
            noc = _optional(noc_dir / left.name) if self.has_gt else None
            frames.append(Frame(name=left.stem, left=left, right=right_dir / left.name,
                                disparity=gt_dir / left.name if self.has_gt else None,
                                nonocc=noc, nonocc_kind="finite"))
        self.counts[split] = len(frames)
        self._set_frames(frames, f"{left_dir}/NNNNNN_10.png")


class Kitti2012(_Kitti):
    """KITTI 2012: ``{training,testing}/colored_0``, ``colored_1``; GT ``disp_occ``, ``disp_noc``."""

    title = "KITTI 2012"
    folders = ("colored_0", "colored_1", "disp_occ", "disp_noc")


class Kitti2015(_Kitti):
    """KITTI 2015: ``{training,testing}/image_2``, ``image_3``; GT ``disp_occ_0``, ``disp_noc_0``."""

    title = "KITTI 2015"
    folders = ("image_2", "image_3", "disp_occ_0", "disp_noc_0")


# --------------------------------------------------------------------------------------------------
# ETH3D two-view
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ETH3DSpec:
    root: str
    split: str = "train"
    scenes: tuple[str, ...] | None = None


class ETH3D(StereoDataset):
    """ETH3D two-view: ``two_view_training/<scene>/{im0,im1}.png, calib.txt`` with GT in
    ``two_view_training_gt/<scene>/{disp0GT.pfm, mask0nocc.png}`` (nonocc = mask == 255);
    ``two_view_test/<scene>/`` without GT. ``scenes``: optional fnmatch patterns to select scenes."""

    Spec = ETH3DSpec

    def __init__(self, root: str | Path, split: str = "train", scenes: tuple[str, ...] | None = None) -> None:
        super().__init__(root)
        check_choice(split, SPLITS, "split")
        self.title = f"ETH3D two-view ({split})"
        self.has_gt = split == "train"
        self._require_dir(self.root, "an ETH3D folder with two_view_training/, two_view_training_gt/, two_view_test/")
        images = self._require_dir(self.root / ("two_view_training" if self.has_gt else "two_view_test"),
                                   "ETH3D scene folders <scene>/im0.png, im1.png, calib.txt")
        gt_dir = self._require_dir(self.root / "two_view_training_gt", "ETH3D GT <scene>/disp0GT.pfm") \
            if self.has_gt else None
        frames = []
        for scene in filter_names(_subdirs(images), scenes):
            folder = images / scene
            frames.append(Frame(name=scene, left=folder / "im0.png", right=folder / "im1.png",
                                disparity=gt_dir / scene / "disp0GT.pfm" if gt_dir else None,
                                nonocc=_optional(gt_dir / scene / "mask0nocc.png") if gt_dir else None,
                                calib=_optional(folder / "calib.txt")))
        self.counts[split] = len(frames)
        self._set_frames(frames, f"{images}/<scene>/im0.png, im1.png")


# --------------------------------------------------------------------------------------------------
# Middlebury
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MiddleburySpec:
    root: str
    split: str = "train"
    resolution: str = "F"
    layout: str = "auto"
    right_image: str = "im1.png"
    scenes: tuple[str, ...] | None = None


class Middlebury(StereoDataset):
    """Middlebury stereo, two layouts:

    - ``eval3`` (MiddEval3): ``training{F,H,Q}/<scene>/{im0.png, im1.png, calib.txt, disp0GT.pfm,
      mask0nocc.png}`` and ``test{F,H,Q}/<scene>/`` without GT; ``resolution`` picks F, H or Q.
    - ``scenes`` (2014 ``<scene>-perfect/``, ``-imperfect/``; 2021 ``<scene>/``): every folder of ``root``
      with ``im0.png``, ``im1.png``, ``disp0.pfm`` (``calib.txt``); no non-occluded mask. ``right_image``
      may pick the 2014 ``im1E.png`` / ``im1L.png`` (other exposure / lighting) instead of ``im1.png``.

    ``layout: auto`` picks ``eval3`` when ``root`` (or ``root/MiddEval3``) has training/test folders.
    """

    Spec = MiddleburySpec

    def __init__(self, root: str | Path, split: str = "train", resolution: str = "F", layout: str = "auto",
                 right_image: str = "im1.png", scenes: tuple[str, ...] | None = None) -> None:
        super().__init__(root)
        check_choice(split, SPLITS, "split")
        check_choice(resolution, ("F", "H", "Q"), "resolution")
        check_choice(layout, ("auto", "eval3", "scenes"), "layout")
        self._require_dir(self.root, "Middlebury MiddEval3 training{F,H,Q}/ or scene folders")
        eval3 = self._eval3_root()
        if layout == "auto":
            layout = "eval3" if eval3 is not None else "scenes"
        self.has_gt = split == "train"
        if layout == "eval3":
            eval3 = eval3 or self.root
            self.title = f"Middlebury MiddEval3 ({split}{resolution})"
            kind = "training" if self.has_gt else "test"
            images = eval3 / f"{kind}{resolution}"
            present = [r for r in "FHQ" if (eval3 / f"{kind}{r}").is_dir()]
            if not images.is_dir() and present:
                has = ", ".join(kind + r for r in present)
                raise DataError(f"{images}: folder not found; this MiddEval3 has {has}: pick it with "
                                f"resolution={present[0]} (--set resolution={present[0]})")
            self._require_dir(images, "MiddEval3 scene folders <scene>/im0.png, im1.png")
            gt_name, mask_name = "disp0GT.pfm", "mask0nocc.png"
        else:
            if not self.has_gt:
                raise DataError(f"{self.root}: Middlebury 2014/2021 scene folders have no test split")
            self.title, images, gt_name, mask_name = "Middlebury scenes (train)", self.root, "disp0.pfm", None
        names = [n for n in _subdirs(images) if (images / n / "im0.png").is_file()]
        frames = []
        suffix = "" if right_image == "im1.png" else f"/{Path(right_image).stem}"
        for scene in filter_names(names, scenes):
            folder = images / scene
            frames.append(Frame(name=scene + suffix, left=folder / "im0.png", right=folder / right_image,
                                disparity=folder / gt_name if self.has_gt else None,
                                nonocc=_optional(folder / mask_name) if (mask_name and self.has_gt) else None,
                                calib=_optional(folder / "calib.txt")))
        self.counts[f"{split}{resolution}" if layout == "eval3" else "scenes"] = len(frames)
        self._set_frames(frames, f"{images}/<scene>/im0.png, {right_image}" + (f", {gt_name}" if self.has_gt else ""))

    def _eval3_root(self) -> Path | None:
        for base in (self.root, self.root / "MiddEval3"):
            if any((base / f"{kind}{r}").is_dir() for kind in ("training", "test") for r in "FHQ"):
                return base
        return None
