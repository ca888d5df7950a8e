"""Disparity error metrics and benchmark evaluation protocols (numpy or torch in, Python floats out).

Conventions shared by everything here:

* Ground truth (gt) that is not finite is invalid and never evaluated (``madis_stereo.data`` reads KITTI
  zeros and Middlebury/ETH3D/SceneFlow ``inf`` as ``+inf``).
* A prediction that is not finite (NaN or +-inf) is a *missing estimate*. Each function says how it scores
  one: :func:`stereo_metrics`, SceneFlow and the generic protocol count it as wrong in every rate; KITTI
  fills it first, as the official devkit does; Middlebury and ETH3D follow their official SDKs.
* Rates are percentages in [0, 100]; errors are in pixels. With e = |pred - gt|:
  bad-x = 100 * #{e > x} / n,  D1 = 100 * #{e > 3 and e > 0.05 |gt|} / n,  EPE = mean(e),  rmse = sqrt(mean(e^2)).
* An evaluation set without pixels gives NaN values and a count of 0, never a warning or an exception.

Protocol results are flat dicts keyed ``region/metric``: ``all`` = every valid GT pixel (KITTI's "occ"),
``noc`` = valid GT inside the non-occluded mask. Keys named ``n`` or ``n_*`` are pixel counts (summed by the
aggregators), ``weight`` an image weight; everything else is a metric.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from madis_stereo.errors import InputError

__all__ = [
    "PROTOCOLS",
    "Protocol",
    "aggregate_image_mean",
    "aggregate_pixels",
    "aggregate_weighted_mean",
    "as_numpy",
    "eth3d_image",
    "evaluate_protocol",
    "format_table",
    "get_protocol",
    "generic_image",
    "kitti2012_image",
    "kitti2015_image",
    "middlebury_image",
    "sceneflow_image",
    "stereo_metrics",
]

BAD_THRESHOLDS = (0.5, 1.0, 2.0, 3.0, 4.0)
D1_ABS, D1_REL = 3.0, 0.05
QUANTILES = (("a50", 0.50), ("a90", 0.90), ("a95", 0.95), ("a99", 0.99))


# --------------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------------


def as_numpy(x: Any, name: str = "array") -> np.ndarray:
    """Return ``x`` (numpy array, torch tensor, nested list) as a numpy array; tensors are detached to CPU."""
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        x = x.detach().cpu()
        if x.is_floating_point():
            x = x.float()  # bfloat16/half have no numpy dtype
        x = x.numpy()
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as err:
        raise InputError(f"{name} cannot be read as an array: {err}") from err


def _same_shape(a: np.ndarray, b: np.ndarray, names: str) -> tuple[np.ndarray, np.ndarray]:
    """Check that ``a`` matches ``b``; singleton dimensions may differ (a [1,1,H,W] tensor against an HxW
    map), in which case ``a`` takes ``b``'s shape."""
    if a.shape != b.shape and np.squeeze(a).shape == np.squeeze(b).shape:
        a = a.reshape(b.shape)
    if a.shape != b.shape:
        raise InputError(f"{names} must have the same shape, got {a.shape} and {b.shape}")
    return a, b


def _pair(pred: Any, gt: Any) -> tuple[np.ndarray, np.ndarray]:
    p = as_numpy(pred, "pred").astype(np.float64, copy=False)
    g = as_numpy(gt, "gt").astype(np.float64, copy=False)
    return _same_shape(p, g, "pred and gt")


def _mask(mask: Any, like: np.ndarray, name: str) -> np.ndarray:
    """A boolean mask shaped like ``like``; None means everything; any nonzero value counts as True."""
    if mask is None:
        return np.ones(like.shape, dtype=bool)
    m = as_numpy(mask, name)
    m, _ = _same_shape(m, like, f"{name} and gt")
    return m.astype(bool)


# --------------------------------------------------------------------------------------------------
# per-pixel building blocks (1-D arrays of the evaluated pixels)
# --------------------------------------------------------------------------------------------------


def _abs_errors(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """|pred - gt| with +inf where the prediction is missing, and the mask of real estimates."""
    est = np.isfinite(pred)
    err = np.full(pred.shape, np.inf)
    err[est] = np.abs(pred[est] - gt[est])
    return err, est


def _d1_outliers(err: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """KITTI outliers: error > 3 px AND error > 5 % of |gt| (a missing estimate, e = inf, is one)."""
    return (err > D1_ABS) & (err > D1_REL * np.abs(gt))


def _pct(count: int | np.integer, n: int | np.integer) -> float:
    return 100.0 * float(count) / float(n) if n else math.nan


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else math.nan


def _rms(values: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(values)))) if values.size else math.nan


def _quantiles(values: np.ndarray) -> dict[str, float]:
    """Error quantiles as ETH3D defines them: the sorted errors' element at index floor(n * q)."""
    if not values.size:
        return {name: math.nan for name, _ in QUANTILES}
    index = [int(math.floor(values.size * q)) for _, q in QUANTILES]
    part = np.partition(values, index)
    return {name: float(part[i]) for (name, _), i in zip(QUANTILES, index)}


def _regions(gt: np.ndarray, nonocc: Any) -> dict[str, np.ndarray]:
    """``all`` = finite GT; ``noc`` = finite GT inside the non-occluded mask (only when one is given)."""
    valid = np.isfinite(gt)
    regions = {"all": valid}
    if nonocc is not None:
        regions["noc"] = valid & _mask(nonocc, gt, "nonocc")
    return regions


def _tag(x: float) -> str:
    return f"bad_{x:.1f}"


# --------------------------------------------------------------------------------------------------
# the general metric
# --------------------------------------------------------------------------------------------------


def stereo_metrics(pred: Any, gt: Any, valid: Any = None) -> dict[str, float]:
    """EPE, rmse, bad-x and D1 of one disparity map (any shape; pred and gt alike, e.g. HxW).

    Evaluated pixels: finite ``gt`` and, when given, ``valid`` (bool mask). With e = |pred - gt| over the
    n evaluated pixels:

    * ``bad_x`` (x in 0.5, 1, 2, 3, 4) = 100 * #{e > x} / n  (strictly greater);
    * ``d1`` = 100 * #{e > 3 px and e > 0.05 * |gt|} / n  (KITTI's outlier rate);
    * ``epe`` = mean(e) and ``rmse`` = sqrt(mean(e^2)) over the pixels with a finite prediction;
    * ``invalid_pred`` = 100 * #{pred not finite} / n;  ``n_valid`` = n.

    A non-finite prediction on an evaluated pixel is a wrong pixel in every bad-x and in d1 (its error is
    taken as infinite). EPE and rmse leave it out instead of becoming infinite, the convention of the
    Middlebury SDK's average error; ``invalid_pred`` reports how many were left out, so a sparse result
    cannot hide behind a small EPE. With n = 0 every value is NaN and ``n_valid`` is 0.
    """
    p, g = _pair(pred, gt)
    keep = np.isfinite(g) & _mask(valid, g, "valid")
    p, g = p[keep], g[keep]
    err, est = _abs_errors(p, g)
    n = int(keep.sum())
    out = {"epe": _mean(err[est]), "rmse": _rms(err[est])}
    for x in BAD_THRESHOLDS:
        out[f"bad_{x:g}"] = _pct(np.count_nonzero(err > x), n)
    out["d1"] = _pct(np.count_nonzero(_d1_outliers(err, g)), n)
    out["invalid_pred"] = _pct(n - int(est.sum()), n)
    out["n_valid"] = n
    return out


# --------------------------------------------------------------------------------------------------
# per-image protocol functions
# --------------------------------------------------------------------------------------------------


def _kitti_fill(disp: np.ndarray) -> np.ndarray:
    """The KITTI devkit's ``interpolateBackground``: row-wise background fill, then the first and last
    filled row of each column extended to the top and bottom border."""
    from madis_stereo.baselines import fill_holes_rowwise  # cv2 is imported lazily there

    if disp.ndim != 2:
        raise InputError(f"KITTI filling needs HxW disparity maps, got shape {disp.shape} (or interpolate=False)")
    filled = fill_holes_rowwise(disp).astype(np.float64)
    ok = np.isfinite(filled)
    has = ok.any(axis=0)
    cols = np.arange(filled.shape[1])
    rows = np.arange(filled.shape[0])[:, None]
    first = np.argmax(ok, axis=0)
    last = filled.shape[0] - 1 - np.argmax(ok[::-1], axis=0)
    filled = np.where((rows < first) & has, filled[first, cols], filled)
    return np.where((rows > last) & has, filled[last, cols], filled)


def kitti2015_image(pred: Any, gt: Any, nonocc: Any = None, obj_map: Any = None, *,
                    interpolate: bool = True) -> dict[str, float]:
    """KITTI 2015 stereo metrics of one image: D1-all (and D1-bg / D1-fg with ``obj_map``), EPE, density.

    ``gt`` is ``disp_occ_0`` (all valid GT, region ``all``), ``nonocc`` the valid pixels of ``disp_noc_0``
    (region ``noc``); ``obj_map`` > 0 marks foreground (cars). As in the devkit, missing estimates are
    first filled by background interpolation (``interpolate=False`` scores them as outliers instead), and
    ``density`` is the percentage of valid GT pixels that had an estimate before filling.
    D1 = 100 * #{e > 3 and e > 0.05 |gt|} / n;  EPE = mean(e) (not a KITTI 2015 table column).
    """
    p, g = _pair(pred, gt)
    estimated = np.isfinite(p)
    if interpolate:
        p = _kitti_fill(p)
    fg = None if obj_map is None else _mask(obj_map, g, "obj_map")
    out: dict[str, float] = {}
    for region, m in _regions(g, nonocc).items():
        err, est = _abs_errors(p[m], g[m])
        bad = _d1_outliers(err, g[m])
        out[f"{region}/n"] = int(m.sum())
        out[f"{region}/d1_all"] = _pct(np.count_nonzero(bad), m.sum())
        if fg is not None:
            f = fg[m]
            out[f"{region}/n_bg"], out[f"{region}/n_fg"] = int((~f).sum()), int(f.sum())
            out[f"{region}/d1_bg"] = _pct(np.count_nonzero(bad & ~f), (~f).sum())
            out[f"{region}/d1_fg"] = _pct(np.count_nonzero(bad & f), f.sum())
        out[f"{region}/epe"] = _mean(err[est])
        out[f"{region}/density"] = _pct(np.count_nonzero(estimated[m]), m.sum())
    return out


def kitti2012_image(pred: Any, gt: Any, nonocc: Any = None, *, interpolate: bool = True) -> dict[str, float]:
    """KITTI 2012 stereo metrics of one image: Out-x (``bad_x``, x = 2..5 px), Avg (``epe``), D1, density.

    Regions and filling as in :func:`kitti2015_image` (``gt`` = ``disp_occ``, ``nonocc`` from ``disp_noc``).
    The KITTI 2012 table ranks by Out-3 = 100 * #{e > 3} / n (no relative term); ``d1_all`` (the 2015
    definition) is given as well because papers report it on both.
    """
    p, g = _pair(pred, gt)
    estimated = np.isfinite(p)
    if interpolate:
        p = _kitti_fill(p)
    out: dict[str, float] = {}
    for region, m in _regions(g, nonocc).items():
        err, est = _abs_errors(p[m], g[m])
        n = int(m.sum())
        out[f"{region}/n"] = n
        for x in (2.0, 3.0, 4.0, 5.0):
            out[f"{region}/{_tag(x)}"] = _pct(np.count_nonzero(err > x), n)
        out[f"{region}/d1_all"] = _pct(np.count_nonzero(_d1_outliers(err, g[m])), n)
        out[f"{region}/epe"] = _mean(err[est])
        out[f"{region}/density"] = _pct(np.count_nonzero(estimated[m]), n)
    return out


def _dense_table(region: str, err_est: np.ndarray, n: int, n_est: int, count_missing: bool) -> dict[str, float]:
    """bad-0.5/1/2/4, avgerr, rms and A50..A99 of one region (Middlebury and ETH3D share the columns)."""
    denom = n if count_missing else n_est
    missing = n - n_est if count_missing else 0
    out: dict[str, float] = {f"{region}/n": n}
    for x in (0.5, 1.0, 2.0, 4.0):
        out[f"{region}/{_tag(x)}"] = _pct(np.count_nonzero(err_est > x) + missing, denom)
    out[f"{region}/avgerr"] = _mean(err_est)
    out[f"{region}/rms"] = _rms(err_est)
    out.update({f"{region}/{k}": v for k, v in _quantiles(err_est).items()})
    return out


def middlebury_image(pred: Any, gt: Any, nonocc: Any = None, *, max_disparity: float | None = None,
                     weight: float = 1.0) -> dict[str, float]:
    """Middlebury (MiddEval3) metrics of one image, over ``all`` valid GT and the ``noc`` mask.

    As the MiddEval3 SDK (``evaldisp``): GT ``inf`` is unknown and skipped; finite predictions are
    clipped to [0, max_disparity] when ``max_disparity`` (calib.txt ``ndisp``, at the prediction's
    resolution) is given; a missing (non-finite) prediction counts as bad in every bad-x (the SDK's
    "totbad") and is left out of avgerr, rms and the quantiles A50..A99 (index floor(n q) of the sorted
    errors). ``invalid`` = percentage of evaluated pixels without an estimate. ``weight`` is this image's
    weight in the aggregate (MiddEval3 tables weight some scenes; default 1).
    """
    p, g = _pair(pred, gt)
    if max_disparity is not None:
        p = np.where(np.isfinite(p), np.clip(p, 0.0, float(max_disparity)), p)
    out: dict[str, float] = {"weight": float(weight)}
    for region, m in _regions(g, nonocc).items():
        err, est = _abs_errors(p[m], g[m])
        n, n_est = int(m.sum()), int(est.sum())
        out.update(_dense_table(region, err[est], n, n_est, count_missing=True))
        out[f"{region}/invalid"] = _pct(n - n_est, n)
    return out


def eth3d_image(pred: Any, gt: Any, nonocc: Any = None) -> dict[str, float]:
    """ETH3D two-view metrics of one image, over ``all`` valid GT and the ``noc`` mask (mask0nocc == 255).

    As the official ETH3D two-view evaluation: a pixel has an estimate when the prediction is finite and
    |pred| <= image width; bad-0.5/1/2/4, avgerr, rms and A50..A99 (index floor(n q) of the sorted errors)
    are computed over estimated pixels only, and ``coverage`` = 100 * #estimated / #valid GT. A region with
    GT but no estimate gets the worst result: bad-x 100 and infinite errors.
    """
    p, g = _pair(pred, gt)
    width = g.shape[-1] if g.ndim else 0
    p = np.where(np.abs(p) <= width, p, np.nan)  # also turns NaN/inf into "no estimate"
    out: dict[str, float] = {}
    for region, m in _regions(g, nonocc).items():
        err, est = _abs_errors(p[m], g[m])
        n, n_est = int(m.sum()), int(est.sum())
        if n and not n_est:  # GT but no estimate: the official "worst possible result"
            out.update(_dense_table(region, np.array([np.inf]), n, 1, count_missing=False))
        else:
            out.update(_dense_table(region, err[est], n, n_est, count_missing=False))
        out[f"{region}/coverage"] = _pct(n_est, n)
    return out


def sceneflow_image(pred: Any, gt: Any, nonocc: Any = None, *, max_disparity: float = 192.0) -> dict[str, float]:
    """SceneFlow metrics of one image over pixels with finite gt and |gt| < ``max_disparity`` (192).

    ``epe`` = mean(e) over finite predictions, ``bad_1.0`` = 100 * #{e > 1} / n with missing predictions
    counted as wrong, ``invalid_pred`` = their percentage (all as in :func:`stereo_metrics`).
    """
    p, g = _pair(pred, gt)
    in_range = np.abs(np.where(np.isfinite(g), g, np.inf)) < max_disparity
    out: dict[str, float] = {}
    for region, m in _regions(g, nonocc).items():
        s = stereo_metrics(p, g, m & in_range)
        out.update({f"{region}/n": s["n_valid"], f"{region}/epe": s["epe"], f"{region}/bad_1.0": s["bad_1"],
                    f"{region}/invalid_pred": s["invalid_pred"]})
    return out


def generic_image(pred: Any, gt: Any, nonocc: Any = None) -> dict[str, float]:
    """:func:`stereo_metrics` over ``all`` valid GT (and ``noc`` when a mask is given), keyed for protocols.

    Also keeps ``n_est`` (pixels with a finite prediction) so that the aggregate is exact.
    """
    p, g = _pair(pred, gt)
    out: dict[str, float] = {}
    for region, m in _regions(g, nonocc).items():
        s = stereo_metrics(p, g, m)
        out[f"{region}/n"] = s["n_valid"]
        out[f"{region}/n_est"] = int(np.count_nonzero(np.isfinite(p[m])))
        out[f"{region}/epe"], out[f"{region}/rmse"] = s["epe"], s["rmse"]
        for x in BAD_THRESHOLDS:
            out[f"{region}/{_tag(x)}"] = s[f"bad_{x:g}"]
        out[f"{region}/d1_all"] = s["d1"]
        out[f"{region}/invalid_pred"] = s["invalid_pred"]
    return out


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


# --------------------------------------------------------------------------------------------------
# plain-text table
# --------------------------------------------------------------------------------------------------


def _cell(value: Any, float_format: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, (float, np.floating)):
        return format(float(value), float_format) if math.isfinite(value) else str(float(value))
    return str(value)


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, *,
                 float_format: str = ".2f") -> str:
    """Rows of dicts as an aligned plain-text table (header, dashes, one line per row).

    ``columns`` picks and orders the keys (default: every key, in order of first appearance). Floats use
    ``float_format``; a missing key or None shows ``-``. Numbers are right-aligned, text left-aligned.
    """
    if columns is None:
        columns = list(dict.fromkeys(k for row in rows for k in row))
    cells = [[_cell(row.get(c), float_format) for c in columns] for row in rows]
    numeric = [
        all(isinstance(row.get(c), (int, float, np.number)) or row.get(c) is None for row in rows)
        for c in columns
    ]
    widths = [max([len(str(c))] + [len(line[j]) for line in cells]) for j, c in enumerate(columns)]

    def fmt(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)]
        return "  ".join(parts).rstrip()

    lines = [fmt([str(c) for c in columns]), "  ".join("-" * w for w in widths)]
    lines += [fmt(line) for line in cells]
    return "\n".join(lines)
