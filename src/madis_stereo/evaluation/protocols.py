"""Benchmark evaluation protocols: each benchmark's per-image metrics paired with its aggregation over images.

Results are flat dicts keyed ``region/metric`` (see :mod:`madis_stereo.evaluation.metrics`); keys named ``n``
or ``n_*`` are pixel counts (summed), ``weight`` an image weight; everything else is a metric.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from madis_stereo.errors import InputError
from madis_stereo.evaluation.metrics import (
    eth3d_image,
    generic_image,
    kitti2012_image,
    kitti2015_image,
    middlebury_image,
    sceneflow_image,
)

__all__ = [
    "PROTOCOLS",
    "Protocol",
    "aggregate_image_mean",
    "aggregate_pixels",
    "aggregate_weighted_mean",
    "evaluate_protocol",
    "get_protocol",
]


# --------------------------------------------------------------------------------------------------
# aggregation over images
# --------------------------------------------------------------------------------------------------


def _is_count(key: str) -> bool:
    name = key.rsplit("/", 1)[-1]
    return name == "n" or name.startswith("n_")


def _combine(results: Sequence[Mapping[str, float]], key: str, weight_key: str | None, quadratic: bool) -> float:
    """Weighted mean of ``key`` over images (weight 1 when ``weight_key`` is None), NaN values skipped;
    ``quadratic`` combines root-mean-squares: sqrt(sum w v^2 / sum w)."""
    num = den = 0.0
    for r in results:
        v = r.get(key, math.nan)
        w = 1.0 if weight_key is None else float(r.get(weight_key, 0.0))
        if math.isnan(v) or w <= 0:
            continue
        num += w * (v * v if quadratic else v)
        den += w
    if den == 0:
        return math.nan
    return math.sqrt(num / den) if quadratic else num / den


def _aggregate(results: Sequence[Mapping[str, float]], weight_for: Callable[[str], str | None],
               quadratic: Iterable[str] = ()) -> dict[str, float]:
    quadratic = set(quadratic)
    keys = list(dict.fromkeys(k for r in results for k in r))
    out: dict[str, float] = {"n_images": len(results)}
    for key in keys:
        if key == "weight":
            continue
        if _is_count(key):
            out[key] = int(sum(r.get(key, 0) for r in results))
        else:
            out[key] = _combine(results, key, weight_for(key), key.rsplit("/", 1)[-1] in quadratic)
    return out


def aggregate_image_mean(results: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Mean of each metric over the images that have it (NaN = no valid pixel in that region: skipped).

    Used for KITTI 2012 (its devkit averages per-image error fractions), ETH3D and SceneFlow.
    """
    return _aggregate(results, lambda key: None)


def aggregate_weighted_mean(results: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Mean of each metric over images weighted by each result's ``weight`` (Middlebury)."""
    return _aggregate(results, lambda key: "weight")


def _pixel_weight_key(key: str) -> str:
    """The count a pixel-weighted metric is normalised by: its own region's ``n``, ``n_bg``/``n_fg`` for
    D1-bg/fg, ``n_est`` for errors averaged over estimated pixels when the results carry it."""
    region, name = key.rsplit("/", 1) if "/" in key else ("", key)
    prefix = f"{region}/" if region else ""
    if name in ("d1_bg", "d1_fg"):
        return f"{prefix}n_{name[3:]}"
    if name in ("epe", "rmse"):
        return f"{prefix}n_est"
    return f"{prefix}n"


def aggregate_pixels(results: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Pool the pixels of all images: a rate becomes sum(errors) / sum(pixels) (KITTI 2015 devkit, which
    accumulates error and pixel counts over the 200 images before dividing); EPE is weighted by the
    images' estimated-pixel counts (``n_est``, or ``n`` where absent) and rmse combined quadratically, so
    that the result equals the metric of all images taken as one."""

    def weight_for(key: str) -> str:
        wkey = _pixel_weight_key(key)
        if wkey.endswith("/n_est") and not any(wkey in r for r in results):
            return wkey[: -len("_est")]
        return wkey

    return _aggregate(results, weight_for, quadratic=("rmse",))


# --------------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------------


class Protocol(NamedTuple):
    """A benchmark's per-image metric function and its aggregation over images."""

    per_image: Callable[..., dict[str, float]]
    aggregate: Callable[[Sequence[Mapping[str, float]]], dict[str, float]]


PROTOCOLS: dict[str, Protocol] = {
    "kitti2012": Protocol(kitti2012_image, aggregate_image_mean),
    "kitti2015": Protocol(kitti2015_image, aggregate_pixels),
    "eth3d": Protocol(eth3d_image, aggregate_image_mean),
    "middlebury": Protocol(middlebury_image, aggregate_weighted_mean),
    "sceneflow": Protocol(sceneflow_image, aggregate_image_mean),
    "generic": Protocol(generic_image, aggregate_pixels),
}


def get_protocol(name: str) -> Protocol:
    """``PROTOCOLS[name]``; an unknown name raises InputError listing the known ones."""
    if name not in PROTOCOLS:
        raise InputError(f"unknown evaluation protocol {name!r}; known: {', '.join(sorted(PROTOCOLS))}")
    return PROTOCOLS[name]


def evaluate_protocol(name: str, samples: Iterable[Sequence[Any]], **kwargs: Any) -> dict[str, float]:
    """Evaluate a benchmark protocol over ``samples`` and aggregate as that benchmark does.

    Each sample is ``(pred, gt)``, ``(pred, gt, nonocc)`` or ``(pred, gt, nonocc, per_image_kwargs)``
    (e.g. ``{"obj_map": m}`` for KITTI 2015, ``{"weight": 0.5}`` for Middlebury); ``kwargs`` go to every
    call (e.g. ``max_disparity=``). ``samples`` may be a generator: images are scored one at a time.
    Returns a flat dict such as ``{"n_images": 200, "all/d1_all": 1.9, "noc/d1_all": 1.7, ...}``.
    """
    protocol = get_protocol(name)
    results = []
    for i, sample in enumerate(samples):
        if not 2 <= len(sample) <= 4:
            raise InputError(f"sample {i}: expected (pred, gt[, nonocc[, kwargs]]), got {len(sample)} items")
        pred, gt, *rest = sample
        nonocc = rest[0] if rest else None
        extra = dict(rest[1]) if len(rest) > 1 else {}
        results.append(protocol.per_image(pred, gt, nonocc, **kwargs, **extra))
    return protocol.aggregate(results)
