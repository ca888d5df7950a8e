"""Disparity error metrics: ``stereo_metrics`` and each benchmark's per-image metrics (numpy or torch in, floats out).

Conventions shared by everything here:

* Ground truth (gt) that is not finite is invalid and never evaluated (``madis_stereo.data`` reads KITTI
  zeros and Middlebury/ETH3D/SceneFlow ``inf`` as ``+inf``).
* A prediction that is not finite (NaN or +-inf) is a *missing estimate*. Each function says how it scores
  one: :func:`stereo_metrics`, SceneFlow and the generic protocol count it as wrong in every rate; KITTI
  fills it first, as the official devkit does; Middlebury and ETH3D follow their official SDKs.
* Rates are percentages in [0, 100]; errors are in pixels. With e = |pred - gt|:
  bad-x = 100 * #{e > x} / n,  D1 = 100 * #{e > 3 and e > 0.05 |gt|} / n,  EPE = mean(e),  rmse = sqrt(mean(e^2)).
* An evaluation set without pixels gives NaN values and a count of 0, never a warning or an exception.

Per-image protocol results (aggregated over images in :mod:`madis_stereo.evaluation.protocols`) are flat
dicts keyed ``region/metric``: ``all`` = every valid GT pixel (KITTI's "occ"), ``noc`` = valid GT inside the
non-occluded mask. Keys named ``n`` or ``n_*`` are pixel counts (summed by the aggregators), ``weight`` an
image weight; everything else is a metric.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from madis_stereo.errors import InputError

__all__ = [
    "as_numpy",
    "eth3d_image",
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
    from madis_stereo.evaluation.baselines import fill_holes_rowwise  # cv2 is imported lazily there

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
