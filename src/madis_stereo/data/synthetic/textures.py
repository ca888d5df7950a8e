"""Procedural and natural-image textures for the synthetic stereo renderer.

Every texture is uint8 ``h x w x 3`` (8-bit work keeps the generator fast). Kinds: multi-scale value noise,
stripes / checkers, crops of the natural images that ship with scikit-image (loaded once per process and
cached), and flat or gently graded colour (textureless regions). All randomness comes from the generator
passed in.
"""

from __future__ import annotations

import functools
import logging
import math

import cv2
import numpy as np

__all__ = ["NATURAL_IMAGES", "multiply", "natural_images", "pick", "random_texture"]

log = logging.getLogger(__name__)

# scikit-image sample images that load offline (bundled with the package).
NATURAL_IMAGES = (
    "astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "brick", "grass", "gravel",
    "hubble_deep_field", "camera", "moon", "coins", "text", "page", "cell", "retina",
)
_MAX_SIDE = 768  # larger sample images are downscaled once (memory and crop speed)


@functools.lru_cache(maxsize=1)
def natural_images() -> tuple[np.ndarray, ...]:
    """The scikit-image sample images as uint8 arrays (``HxW`` gray or ``HxWx3``), cached per process."""
    from skimage import data as skdata

    images = []
    for name in NATURAL_IMAGES:
        try:
            image = np.asarray(getattr(skdata, name)())
        except Exception as err:  # a missing optional image must not stop the generator
            log.warning("scikit-image sample '%s' unavailable: %s", name, err)
            continue
        if image.ndim == 3:
            image = image[:, :, :3]
        scale = _MAX_SIDE / max(image.shape[:2])
        if scale < 1:
            image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        images.append(np.ascontiguousarray(image.astype(np.uint8)))
    return tuple(images)


def pick(rng: np.random.Generator, weights: tuple[float, ...]) -> int:
    """Index drawn with the given probabilities (cheaper than ``rng.choice`` for a handful of options)."""
    return min(int(np.searchsorted(np.cumsum(weights), rng.random() * sum(weights), side="right")), len(weights) - 1)


def _colour(rng: np.random.Generator) -> np.ndarray:
    return rng.random(3) * 255


def _to_u8(values: np.ndarray) -> np.ndarray:
    """Float values in [0, 1] (any shape) -> uint8, rounded and saturated."""
    return cv2.convertScaleAbs(values, alpha=255.0)  # callers' values are >= 0: the abs is a no-op


def _palette(index: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Colour a uint8 ``h x w`` map through a random 2- or 3-colour ramp (a 256-entry lookup)."""
    t = np.linspace(0, 1, 256)[:, None]
    if rng.random() < 0.5:
        c0, c1 = _colour(rng), _colour(rng)
        lut = c0 + t * (c1 - c0)
    else:
        c0, c1, c2 = _colour(rng), _colour(rng), _colour(rng)
        lut = np.where(t < 0.5, c0 + 2 * t * (c1 - c0), c1 + (2 * t - 1) * (c2 - c1))
    return np.take(np.round(lut).astype(np.uint8), index, axis=0)


def multiply(image: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """uint8 ``h x w x 3`` times a float32 ``h x w`` factor map, saturated to uint8."""
    return cv2.multiply(image, cv2.merge([factor, factor, factor]), dtype=cv2.CV_8U)


def _noise(rng: np.random.Generator, h: int, w: int, channels: int) -> np.ndarray:
    """Value noise: octaves with cells from ``fine`` pixels up to 2^(n-1) times larger, summed coarse to
    fine on a pyramid (each level upsampled and added to), normalised to [0, 1] (float32)."""
    fine = 2 ** rng.uniform(0.6, 4.5)
    octaves = int(rng.integers(2, 6))
    persistence = np.float32(rng.uniform(0.35, 0.85))
    total = None
    for k in range(octaves):
        cell = fine * 2 ** (octaves - 1 - k)
        gh, gw = int(math.ceil(h / cell)) + 2, int(math.ceil(w / cell)) + 2
        grid = rng.random((gh, gw, channels) if channels > 1 else (gh, gw), dtype=np.float32) * persistence**k
        total = grid if total is None else grid + cv2.resize(total, (gw, gh), interpolation=cv2.INTER_LINEAR)
    up = cv2.resize(total, (int(round(total.shape[1] * fine)), int(round(total.shape[0] * fine))),
                    interpolation=cv2.INTER_CUBIC)[:h, :w]
    lo, hi = cv2.minMaxLoc(up.reshape(h, -1))[:2]
    return (up - np.float32(lo)) * np.float32(1 / max(hi - lo, 1e-6))


def _noise_texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    if rng.random() < 0.3:
        return _to_u8(_noise(rng, h, w, 3))
    values = _noise(rng, h, w, 1)
    if rng.random() < 0.3:  # blotches: sharpen the noise into patches
        values = 1 / (1 + np.exp(-(values - 0.5) * np.float32(rng.uniform(6, 30))))
    return _palette(_to_u8(values), rng)


def _pattern_texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    period = float(2 ** rng.uniform(2.0, 5.5))
    theta = float(rng.uniform(0, math.pi))
    yy, xx = np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)[None, :]
    u = xx * np.float32(math.cos(theta)) + yy * np.float32(math.sin(theta))
    kind = rng.integers(3)
    if kind == 0:  # smooth stripes
        values = 0.5 + 0.5 * np.sin(u * np.float32(2 * math.pi / period))
    elif kind == 1:  # hard stripes
        values = (np.mod(u, np.float32(period)) < period * rng.uniform(0.2, 0.8)).astype(np.float32)
    else:  # checker
        v = yy * np.float32(math.cos(theta)) - xx * np.float32(math.sin(theta))
        values = np.mod(np.floor(u / np.float32(period)) + np.floor(v / np.float32(period)), 2).astype(np.float32)
    texture = _palette(_to_u8(values), rng)
    if rng.random() < 0.5:  # dirt on the pattern
        texture = multiply(texture, 0.75 + 0.25 * _noise(rng, h, w, 1))
    return texture


def _natural_texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    images = natural_images()
    if not images:
        return _noise_texture(rng, h, w)
    image = images[int(rng.integers(len(images)))]
    zoom = float(2 ** rng.uniform(-1.0, 1.6))  # output pixels per source pixel
    ch, cw = min(int(math.ceil(h / zoom)) + 1, 4 * h + 4), min(int(math.ceil(w / zoom)) + 1, 4 * w + 4)
    ih, iw = image.shape[:2]
    if ch > ih or cw > iw:  # mirror-tile small sources
        pad = ((0, max(0, ch - ih)), (0, max(0, cw - iw))) + (((0, 0),) if image.ndim == 3 else ())
        image = np.pad(image, pad, mode="symmetric")
        ih, iw = image.shape[:2]
    y0, x0 = int(rng.integers(ih - ch + 1)), int(rng.integers(iw - cw + 1))
    crop = image[y0 : y0 + ch, x0 : x0 + cw]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    if rng.random() < 0.5:
        crop = crop[::-1]
    method = cv2.INTER_AREA if zoom < 1 else cv2.INTER_LINEAR
    crop = cv2.resize(np.ascontiguousarray(crop), (w, h), interpolation=method)
    if crop.ndim == 2:
        return _palette(crop, rng) if rng.random() < 0.6 else cv2.merge([crop, crop, crop])
    if rng.random() < 0.3:
        crop = np.ascontiguousarray(crop[:, :, rng.permutation(3)])
    return crop


def _flat_texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Textureless: one colour, or a faint smooth gradient."""
    texture = np.empty((h, w, 3), np.uint8)
    texture[:] = np.round(_colour(rng)).astype(np.uint8)
    if rng.random() < 0.5:
        along_x = rng.random() < 0.5
        ramp = 1 + np.float32(rng.uniform(-0.15, 0.15)) * np.linspace(-1, 1, w if along_x else h, dtype=np.float32)
        ramp = np.broadcast_to(ramp[None, :] if along_x else ramp[:, None], (h, w))
        texture = multiply(texture, np.ascontiguousarray(ramp))
    return texture


def random_texture(rng: np.random.Generator, h: int, w: int, textureless_prob: float = 0.1) -> np.ndarray:
    """A random texture of ``h x w`` pixels (uint8 ``h x w x 3``)."""
    if rng.random() < textureless_prob:
        return _flat_texture(rng, h, w)
    maker = (_natural_texture, _noise_texture, _pattern_texture)[pick(rng, (0.5, 0.32, 0.18))]
    texture = maker(rng, h, w)
    if rng.random() < 0.3:  # lower the contrast around the mean level
        mean = float(np.mean(cv2.mean(texture)[:3]))
        keep = float(rng.uniform(0.3, 1.0))
        texture = cv2.LUT(texture, np.round(mean + (np.arange(256) - mean) * keep).astype(np.uint8))
    return texture
