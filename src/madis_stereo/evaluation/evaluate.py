"""Benchmark evaluation of a predictor over a dataset, and the benchmarks' submission files.

Submission layouts (what each benchmark's upload expects, one file per test pair):

- KITTI 2012 / 2015: ``disp_0/<frame>_10.png``, uint16 PNG of round(d * 256), 0 = no estimate.
- ETH3D two-view: ``low_res_two_view/<scene>.pfm`` (float32 disparity, +inf = no estimate) and
  ``low_res_two_view/<scene>.txt`` holding ``runtime <seconds>``.
- Middlebury MiddEval3: ``<split><res>/<scene>/disp0<ALGO>.pfm`` (e.g. ``testF/Australia/disp0MaDis.pfm``)
  and ``time<ALGO>.txt`` beside it holding only the runtime in seconds; ``split`` is ``training`` or
  ``test`` and ``res`` the resolution F, H or Q.
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from madis_stereo.errors import InputError
from madis_stereo.evaluation.protocols import get_protocol
from madis_stereo.utils.files import atomic_write_bytes

__all__ = [
    "DATASET_PROTOCOLS",
    "EvaluationResult",
    "SUBMISSION_FORMATS",
    "SubmissionWriter",
    "evaluate_dataset",
    "protocol_for",
]

log = logging.getLogger(__name__)

# Dataset name (madis_stereo.data.build_dataset) -> evaluation protocol (madis_stereo.evaluation.protocols.PROTOCOLS).
DATASET_PROTOCOLS: dict[str, str] = {
    "kitti2012": "kitti2012",
    "kitti2015": "kitti2015",
    "eth3d": "eth3d",
    "middlebury": "middlebury",
    "sceneflow": "sceneflow",
    "folder": "generic",
    "synthetic": "generic",
}
SUBMISSION_FORMATS = ("kitti2012", "kitti2015", "eth3d", "middlebury")


def protocol_for(dataset_name: str) -> str:
    """The evaluation protocol of a dataset name (unknown names use the generic protocol)."""
    return DATASET_PROTOCOLS.get(dataset_name, "generic")


def _safe_name(name: str) -> str:
    """A sample name as one path component (``/`` and other separators become ``_``)."""
    cleaned = re.sub(r"[\\/:]+", "_", str(name)).strip("._ ")
    return cleaned or "unnamed"


class SubmissionWriter:
    """Writes one benchmark's submission files (see the module docstring for the layouts).

    ``algo`` names the method in Middlebury file names (letters, digits, ``_`` and ``-``);
    ``split`` ("train"/"test") and ``resolution`` ("F", "H", "Q") pick Middlebury's top folder.
    """

    def __init__(self, benchmark: str, root: str | os.PathLike, algo: str = "MaDis", split: str = "test",
                 resolution: str = "F") -> None:
        if benchmark not in SUBMISSION_FORMATS:
            raise InputError(f"no submission format for {benchmark!r}; known: {', '.join(SUBMISSION_FORMATS)}")
        if not re.fullmatch(r"[A-Za-z0-9_-]+", algo):
            raise InputError(f"algorithm name {algo!r} must be letters, digits, '_' or '-'")
        if resolution not in ("F", "H", "Q"):
            raise InputError(f"Middlebury resolution must be F, H or Q, got {resolution!r}")
        self.benchmark = benchmark
        self.root = Path(root)
        self.algo = algo
        self.split_folder = f"{'training' if split == 'train' else 'test'}{resolution}"

    def paths(self, name: str) -> list[Path]:
        """The files written for sample ``name`` (disparity first)."""
        name = _safe_name(name)
        if self.benchmark.startswith("kitti"):
            return [self.root / "disp_0" / f"{name}.png"]
        if self.benchmark == "eth3d":
            folder = self.root / "low_res_two_view"
            return [folder / f"{name}.pfm", folder / f"{name}.txt"]
        folder = self.root / self.split_folder / name
        return [folder / f"disp0{self.algo}.pfm", folder / f"time{self.algo}.txt"]

    def write(self, name: str, disparity: np.ndarray, runtime: float) -> list[Path]:
        """Write the submission files of one sample (atomically); return their paths."""
        from madis_stereo.data.formats import write_kitti_disparity, write_pfm

        paths = self.paths(name)
        disparity = np.asarray(disparity, dtype=np.float32)
        if self.benchmark.startswith("kitti"):
            write_kitti_disparity(paths[0], disparity)
            return paths
        write_pfm(paths[0], np.where(np.isfinite(disparity), disparity, np.inf).astype(np.float32))
        text = f"runtime {runtime:.6f}\n" if self.benchmark == "eth3d" else f"{runtime:.6f}\n"
        atomic_write_bytes(paths[1], text.encode("ascii"))
        return paths


@dataclass
class EvaluationResult:
    """Per-image and aggregate metrics of one evaluation run.

    ``per_image``: one dict per sample, ``{"name", "runtime_s", <protocol metrics>...}`` (metrics absent when
    the sample has no ground truth); ``aggregate``: the protocol's aggregate over the samples with GT.
    """

    protocol: str
    per_image: list[dict[str, Any]] = field(default_factory=list)
    aggregate: dict[str, Any] = field(default_factory=dict)
    submission: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: NaN and infinities become None."""
        return _json_ready({"protocol": self.protocol, "n_images": len(self.per_image),
                            "mean_runtime_s": self.mean_runtime, "aggregate": self.aggregate,
                            "per_image": self.per_image})

    @property
    def mean_runtime(self) -> float:
        """Mean prediction time per pair in seconds (NaN without images)."""
        times = [r["runtime_s"] for r in self.per_image]
        return float(np.mean(times)) if times else math.nan


def _json_ready(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


def _protocol_kwargs(protocol: str, sample: Mapping[str, Any]) -> dict[str, Any]:
    """Per-image extras: Middlebury clips predictions to calib.txt ``ndisp``."""
    calib = sample.get("calib") or {}
    if protocol == "middlebury" and calib.get("ndisp"):
        return {"max_disparity": float(calib["ndisp"])}
    return {}


def evaluate_dataset(predictor: Callable[[Any, Any], Any], dataset: Sequence[Mapping[str, Any]], protocol: str, *,
                     max_images: int | None = None, submission: SubmissionWriter | None = None,
                     progress: Callable[[Iterable[int]], Iterable[int]] | None = None,
                     on_image: Callable[[dict[str, Any]], None] | None = None) -> EvaluationResult:
    """Predict every sample of ``dataset`` and score it with ``protocol`` (a key of ``metrics.PROTOCOLS``).

    Args:
        predictor: ``predictor(left, right)`` -> an object with ``disparity`` (HxW), e.g. a
            :class:`~madis_stereo.Predictor`. ``runtime_s`` is its wall time per pair.
        dataset: indexable samples ``{"left", "right", "disparity" (or None), "nonocc", "name", "calib"}``.
        max_images: evaluate only the first N samples.
        submission: also write each prediction in the benchmark's submission layout.
        progress: wraps the index iterable (e.g. ``tqdm``); ``on_image`` receives each per-image record.
    """
    spec = get_protocol(protocol)
    count = len(dataset) if max_images is None else min(len(dataset), max(0, int(max_images)))
    if count == 0:
        raise InputError("the dataset holds no samples to evaluate")
    result = EvaluationResult(protocol)
    scored = []
    indices: Iterable[int] = range(count)
    if progress is not None:
        indices = progress(indices)
    for i in indices:
        sample = dataset[i]
        name = str(sample.get("name", i))
        start = time.perf_counter()
        pred = predictor(sample["left"], sample["right"])
        runtime = time.perf_counter() - start
        disparity = np.asarray(pred.disparity, dtype=np.float32)
        record: dict[str, Any] = {"name": name, "runtime_s": runtime}
        if sample.get("disparity") is not None:
            metrics = spec.per_image(disparity, sample["disparity"], sample.get("nonocc"),
                                     **_protocol_kwargs(protocol, sample))
            scored.append(metrics)
            record.update(metrics)
        if submission is not None:
            result.submission += [str(p) for p in submission.write(name, disparity, runtime)]
        result.per_image.append(record)
        if on_image is not None:
            on_image(record)
    if scored:
        result.aggregate = spec.aggregate(scored)
    else:
        log.info("no ground truth in the evaluated samples: no metrics")
    return result
