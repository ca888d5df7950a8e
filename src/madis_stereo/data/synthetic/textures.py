"""Procedural and natural-image textures for the synthetic stereo renderer.

Every texture is uint8 ``h x w x 3`` (8-bit work keeps the generator fast). Kinds: multi-scale value noise,
stripes / checkers, views of real images that installed packages ship (:data:`TEXTURE_SOURCES`: the
photographs and scans of scikit-image, matplotlib's sample data and, when it is installed,
scikit-learn's sample images; nothing is downloaded), and flat or gently graded colour (textureless
regions). A natural texture is a random view of one source: position, scale (from an image pyramid, so
that shrinking does not alias), rotation, a slight stretch, mirroring, and a colour change (a palette for
grey sources; white balance, brightness, contrast, gamma, saturation and channel order otherwise). All
randomness comes from the generator passed in.

The Middlebury Motorcycle pair that scikit-image also ships (``motorcycle_*``) is the project's evaluation
pair: it is never a texture source (``tests/test_textures.py`` checks the file names and the content).
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import logging
import math
from pathlib import Path

import cv2
import numpy as np

__all__ = ["TEXTURE_SOURCES", "TextureSource", "multiply", "natural_images", "pick", "random_texture",
           "source_path", "texture_sources"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TextureSource:
    """A real image shipped inside an installed package: ``package`` (its import name) and ``file`` (relative
    to the package's data folder). ``kind``: photo (8-bit image file), faces (scikit-image's LFW array, tiled
    into a mosaic), scan (16-bit raw MRI slice), elevation (a terrain model, hill-shaded)."""

    package: str
    file: str
    kind: str = "photo"

    @property
    def name(self) -> str:
        return f"{self.package}:{self.file}"


# Each file is read from the package's own data folder; a package that is missing is skipped.
TEXTURE_SOURCES = (
    *(TextureSource("skimage", f) for f in (
        "astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "ihc.png", "brick.png", "grass.png",
        "gravel.png", "hubble_deep_field.jpg", "camera.png", "moon.png", "coins.png", "text.png", "page.png",
        "cell.png", "retina.jpg", "clock_motion.png", "microaneurysms.png")),
    TextureSource("skimage", "lfw_subset.npy", "faces"),
    TextureSource("matplotlib", "grace_hopper.jpg"),
    TextureSource("matplotlib", "s1045.ima.gz", "scan"),
    TextureSource("matplotlib", "jacksboro_fault_dem.npz", "elevation"),
    TextureSource("matplotlib", "topobathy.npz", "elevation"),
    TextureSource("sklearn", "china.jpg"),
    TextureSource("sklearn", "flower.jpg"),
)
_MAX_SIDE = 768  # larger sources are downscaled once (memory and view speed)
_MIN_LEVEL_SIDE = 48  # pyramid levels stop above this size


def source_path(source: TextureSource) -> Path | None:
    """The file of ``source`` inside its installed package, or None when the package is not installed."""
    try:
        if source.package == "skimage":
            import skimage

            folder = Path(skimage.__file__).parent / "data"
        elif source.package == "matplotlib":
            import matplotlib

            folder = Path(matplotlib.get_data_path()) / "sample_data"
        elif source.package == "sklearn":
            import sklearn.datasets

            folder = Path(sklearn.datasets.__file__).parent / "images"
        else:
            raise ValueError(f"unknown texture package {source.package!r}")
    except ImportError:
        return None
    return folder / source.file


def _normalise(values: np.ndarray, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """Any numeric array -> uint8, its ``low``..``high`` percentiles stretched to 0..255."""
    values = values.astype(np.float32)
    lo, hi = np.percentile(values, [low, high])
    return _to_u8(np.clip((values - lo) / max(float(hi - lo), 1e-6), 0, 1))


def _hillshade(elevation: np.ndarray) -> np.ndarray:
    """Lambertian shading of a terrain model lit from the north-west, stretched to uint8."""
    z = elevation.astype(np.float32)
    z = (z - z.mean()) / max(float(z.std()), 1e-6) * 8  # relief in pixel units: strong, readable shading
    gy, gx = np.gradient(z)
    light = np.array([-1.0, -1.0, 1.0]) / math.sqrt(3)
    shade = (light[0] * -gx + light[1] * -gy + light[2]) / np.sqrt(gx**2 + gy**2 + 1)
    return _normalise(shade)


def _read(source: TextureSource, path: Path) -> np.ndarray:
    """The source as uint8 ``HxW`` or ``HxWx3``."""
    if source.kind == "photo":
        from PIL import Image

        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB") if image.mode not in ("L", "RGB") else image)
        return array if array.ndim == 2 or array.shape[2] == 3 else array[:, :, :3]
    if source.kind == "faces":  # 200 grey 25x25 faces in [0, 1] -> a 10 x 20 mosaic
        faces = np.load(path)
        rows = [np.concatenate(list(faces[r * 20 : (r + 1) * 20]), axis=1) for r in range(len(faces) // 20)]
        return _normalise(np.concatenate(rows, axis=0), 0, 100)
    if source.kind == "scan":  # 256 x 256 little-endian uint16
        with gzip.open(path) as fh:
            return _normalise(np.frombuffer(fh.read(), "<u2").reshape(256, 256), 0.5, 99.5)
    if source.kind == "elevation":
        with np.load(path) as data:
            return _hillshade(data["elevation" if "elevation" in data.files else "topo"])
    raise ValueError(f"unknown texture source kind {source.kind!r}")


def _pyramid(image: np.ndarray) -> tuple[np.ndarray, ...]:
    levels = [image]
    while min(levels[-1].shape[:2]) >= 2 * _MIN_LEVEL_SIDE:
        levels.append(cv2.pyrDown(levels[-1]))
    return tuple(levels)


@functools.lru_cache(maxsize=1)
def _bank() -> tuple[tuple[TextureSource, tuple[np.ndarray, ...]], ...]:
    """Every available source with its image pyramid (level 0 at most ``_MAX_SIDE``), cached per process."""
    bank = []
    for source in TEXTURE_SOURCES:
        path = source_path(source)
        if path is None:
            continue
        try:
            image = _read(source, path)
        except Exception as err:  # a missing or unreadable optional image must not stop the generator
            log.warning("texture source %s unavailable: %s", source.name, err)
            continue
        scale = _MAX_SIDE / max(image.shape[:2])
        if scale < 1:
            image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        bank.append((source, _pyramid(np.ascontiguousarray(image, dtype=np.uint8))))
    return tuple(bank)


def texture_sources() -> tuple[TextureSource, ...]:
    """The sources available in this installation (those whose package is installed and file readable)."""
    return tuple(source for source, _ in _bank())


def natural_images() -> tuple[np.ndarray, ...]:
    """The available sources as uint8 arrays (``HxW`` grey or ``HxWx3``, at most 768 pixels a side)."""
    return tuple(levels[0] for _, levels in _bank())


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


def _natural_view(rng: np.random.Generator, levels: tuple[np.ndarray, ...], h: int, w: int) -> np.ndarray:
    """An ``h x w`` view of one source: random centre, scale, slight stretch, mirroring and (a third of the
    time) rotation, resampled once from the pyramid level that keeps the resampling at or above 0.7 output
    pixels per source pixel (no aliasing); borders are mirrored."""
    zoom = float(2 ** rng.uniform(-1.0, 1.6))  # output pixels per source pixel
    level = min(len(levels) - 1, max(0, math.ceil(math.log2(0.7 / zoom))))
    image, zoom = levels[level], zoom * 2**level
    stretch = float(2 ** rng.uniform(-0.25, 0.25))
    sx, sy = zoom * stretch, zoom / stretch
    flip_x, flip_y = rng.random() < 0.5, rng.random() < 0.5
    ih, iw = image.shape[:2]
    cx, cy = rng.uniform(0, iw), rng.uniform(0, ih)  # the source point at the view's centre
    if rng.random() < 1 / 3:
        angle = float(rng.uniform(-math.pi, math.pi))
        cos, sin = math.cos(angle), math.sin(angle)
        fx, fy = -1 if flip_x else 1, -1 if flip_y else 1
        linear = np.array([[fx * cos / sx, -fy * sin / sy], [fx * sin / sx, fy * cos / sy]])  # view -> source
        shift = np.array([cx, cy]) - linear @ np.array([(w - 1) / 2, (h - 1) / 2])
        return cv2.warpAffine(image, np.hstack([linear, shift[:, None]]), (w, h),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT_101)
    # axis-aligned: a crop (mirror-padded where it leaves the source) and one resize, 4x cheaper than a warp
    cw, ch = max(1, round(w / sx)), max(1, round(h / sy))
    x0, y0 = int(cx - cw / 2), int(cy - ch / 2)
    pads = (max(0, -y0), max(0, y0 + ch - ih), max(0, -x0), max(0, x0 + cw - iw))
    if any(pads):
        while any(p >= size for p, size in zip(pads, (ih, ih, iw, iw))):  # reflection needs pads < size
            image = cv2.copyMakeBorder(image, ih // 2, ih // 2, iw // 2, iw // 2, cv2.BORDER_REFLECT_101)
            x0, y0 = x0 + iw // 2, y0 + ih // 2
            ih, iw = image.shape[:2]
            pads = (max(0, -y0), max(0, y0 + ch - ih), max(0, -x0), max(0, x0 + cw - iw))
        image = cv2.copyMakeBorder(image, *pads, cv2.BORDER_REFLECT_101)
        x0, y0 = x0 + pads[2], y0 + pads[0]
    crop = image[y0 : y0 + ch, x0 : x0 + cw]
    crop = crop[:, ::-1] if flip_x else crop
    crop = crop[::-1] if flip_y else crop
    method = cv2.INTER_AREA if zoom < 1 else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(crop), (w, h), interpolation=method)


def _recolour(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """White balance and brightness (per-channel gains), contrast around the mean and gamma in one lookup
    table, then (half the time) saturation; a fifth of the time the channels are permuted (hue)."""
    gains = 2 ** rng.uniform(-0.3, 0.3, 3) * rng.uniform(0.75, 1.3)
    contrast, gamma = rng.uniform(0.6, 1.25), 2 ** rng.uniform(-0.4, 0.4)
    mean = float(np.mean(np.array(cv2.mean(image)[:3]) * gains))
    levels = mean + (np.arange(256)[:, None] * gains[None, :] - mean) * contrast  # 256 x 3
    levels = 255 * (np.clip(levels, 0, 255) / 255) ** gamma
    image = cv2.LUT(image, np.round(levels).astype(np.uint8).reshape(256, 1, 3))
    if rng.random() < 0.5:
        saturation = float(rng.uniform(0.2, 1.6))
        grey = cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
        image = cv2.addWeighted(image, saturation, grey, 1 - saturation, 0)
    if rng.random() < 0.2:
        image = np.ascontiguousarray(image[:, :, rng.permutation(3)])
    return image


def _natural_texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    bank = _bank()
    if not bank:
        return _noise_texture(rng, h, w)
    view = _natural_view(rng, bank[int(rng.integers(len(bank)))][1], h, w)
    if view.ndim == 2:
        if rng.random() < 0.5:
            return _palette(view, rng)
        view = cv2.merge([view, view, view])
    return _recolour(view, rng)


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
    """A random texture of ``h x w`` pixels (uint8 ``h x w x 3``).

    Takes exactly one draw from ``rng`` (the seed of its own generator), so that how a texture is made
    never shifts the random stream of the scene around it.
    """
    rng = np.random.default_rng(int(rng.integers(1 << 62)))
    if rng.random() < textureless_prob:
        return _flat_texture(rng, h, w)
    maker = (_natural_texture, _noise_texture, _pattern_texture)[pick(rng, (0.5, 0.32, 0.18))]
    texture = maker(rng, h, w)
    if rng.random() < 0.3:  # lower the contrast around the mean level
        mean = float(np.mean(cv2.mean(texture)[:3]))
        keep = float(rng.uniform(0.3, 1.0))
        texture = cv2.LUT(texture, np.round(mean + (np.arange(256) - mean) * keep).astype(np.uint8))
    return texture
