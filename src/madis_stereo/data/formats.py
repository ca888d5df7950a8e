"""Stereo file formats: PFM, KITTI 16-bit disparity PNGs, Middlebury/ETH3D ``calib.txt``, images.

Every reader raises :class:`~madis_stereo.errors.DataError` naming the file when it is missing, truncated
or not what it claims to be. Every writer is atomic (:func:`madis_stereo.utils.files.atomic_write_bytes`):
the bytes go to a temporary file in the target folder, are synced, then replace the target, so a crash
never leaves a half-written file.
"""

from __future__ import annotations

import io
import logging
import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from madis_stereo.errors import DataError, InputError, first_line
from madis_stereo.utils.files import atomic_write_bytes

__all__ = [
    "read_calib",
    "read_disparity",
    "read_image",
    "read_kitti_disparity",
    "read_mask",
    "read_pfm",
    "write_image",
    "write_kitti_disparity",
    "write_pfm",
]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike


def _require_file(path: PathLike, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} not found" + (" (it is a folder)" if path.is_dir() else ""))
    return path


def _read_bytes(path: PathLike, what: str) -> bytes:
    path = _require_file(path, what)
    try:
        return path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot read {what} ({err.strerror or err})") from None


# --------------------------------------------------------------------------------------------------
# PFM
# --------------------------------------------------------------------------------------------------


def _pfm_header(raw: bytes, path: PathLike) -> tuple[list[bytes], int]:
    """The 4 header tokens (type, width, height, scale) and the offset of the first data byte."""
    tokens: list[bytes] = []
    pos = 0
    while len(tokens) < 4:
        while pos < len(raw) and raw[pos : pos + 1].isspace():
            pos += 1
        start = pos
        while pos < len(raw) and not raw[pos : pos + 1].isspace() and pos - start < 32:
            pos += 1
        if start == pos or pos >= len(raw):
            raise DataError(f"{path}: not a PFM file (incomplete header)")
        tokens.append(raw[start:pos])
        if len(tokens) == 1 and tokens[0] not in (b"PF", b"Pf"):
            raise DataError(f"{path}: not a PFM file (header starts with {raw[:8]!r}, expected 'PF' or 'Pf')")
    return tokens, pos + 1  # exactly one whitespace byte separates the scale from the data


def read_pfm(path: PathLike) -> np.ndarray:
    """Read a PFM file: float32 ``HxW`` (``Pf``) or ``HxWx3`` (``PF``), top row first; inf/nan kept.

    The scale's sign gives the byte order (negative = little-endian); its magnitude is ignored.
    """
    raw = _read_bytes(path, "PFM file")
    tokens, offset = _pfm_header(raw, path)
    try:
        width, height, scale = int(tokens[1]), int(tokens[2]), float(tokens[3])
    except ValueError:
        raise DataError(f"{path}: bad PFM header {b' '.join(tokens)!r}") from None
    if width <= 0 or height <= 0 or scale == 0 or not np.isfinite(scale):
        raise DataError(f"{path}: bad PFM header (width {width}, height {height}, scale {scale})")
    channels = 3 if tokens[0] == b"PF" else 1
    count = width * height * channels
    if raw[offset - 1 : offset + 1] == b"\r\n" and len(raw) - offset - 1 == 4 * count:
        offset += 1  # a header written with Windows line ends
    available = len(raw) - offset
    if available < 4 * count:
        raise DataError(f"{path}: truncated PFM: {width}x{height}x{channels} needs {4 * count} data bytes, "
                        f"found {max(available, 0)}")
    if available > 4 * count:
        log.debug("%s: %d trailing bytes after the PFM data ignored", path, available - 4 * count)
    dtype = "<f4" if scale < 0 else ">f4"
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=offset).astype(np.float32)
    shape = (height, width, 3) if channels == 3 else (height, width)
    return np.ascontiguousarray(data.reshape(shape)[::-1])


def write_pfm(path: PathLike, array: np.ndarray, little_endian: bool = True) -> None:
    """Write ``HxW`` / ``HxWx1`` (``Pf``) or ``HxWx3`` (``PF``) values as float32 PFM (inf kept)."""
    array = np.asarray(array, dtype=np.float32)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        kind = "Pf"
    elif array.ndim == 3 and array.shape[2] == 3:
        kind = "PF"
    else:
        raise InputError(f"write_pfm expects HxW or HxWx3, got shape {array.shape}")
    height, width = array.shape[:2]
    header = f"{kind}\n{width} {height}\n{-1.0 if little_endian else 1.0}\n".encode("ascii")
    body = np.ascontiguousarray(array[::-1], dtype="<f4" if little_endian else ">f4").tobytes()
    atomic_write_bytes(path, header + body)


# --------------------------------------------------------------------------------------------------
# PNG / images
# --------------------------------------------------------------------------------------------------


def _open_image(path: PathLike, what: str) -> Image.Image:
    path = _require_file(path, what)
    try:
        with warnings.catch_warnings():  # Pillow only warns below twice its pixel limit; refuse those too
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                return image
    except UnidentifiedImageError:
        raise DataError(f"{path}: not a readable image file ({what} expected)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise DataError(f"{path}: image too large to decode safely ({err})") from None
    except MemoryError:
        raise
    except Exception as err:  # Pillow's decoders fail on damaged bytes with many error types
        raise DataError(f"{path}: truncated or corrupt image ({first_line(err)})") from None


def read_image(path: PathLike) -> np.ndarray:
    """Read an image as uint8 ``HxWx3`` RGB: grayscale is repeated, 16-bit is scaled (``v >> 8``),
    alpha is dropped, palettes are expanded."""
    image = _open_image(path, "image")
    if image.mode.startswith("I"):
        values = np.asarray(image)
        if "16" in image.mode or values.max(initial=0) > 255:
            values = np.clip(values, 0, 65535).astype(np.uint32) >> 8
        return np.repeat(values.astype(np.uint8)[:, :, None], 3, axis=2)
    if image.mode == "F":
        raise DataError(f"{path}: floating-point image, expected an 8- or 16-bit colour or grayscale image")
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))


def read_mask(path: PathLike) -> np.ndarray:
    """Read a single-channel 8-bit mask (e.g. Middlebury/ETH3D ``mask0nocc.png``) as uint8 ``HxW``.

    Colour masks use their first channel; 16-bit masks are scaled to 8 bits (``v >> 8``).
    """
    image = _open_image(path, "mask image")
    values = np.asarray(image)
    if image.mode not in ("L", "1", "P") and values.ndim == 2 and values.dtype != np.uint8:
        return (np.clip(values, 0, 65535).astype(np.uint32) >> 8).astype(np.uint8)
    if image.mode == "P":
        values = np.asarray(image.convert("L"))
    if values.ndim == 3:
        values = values[:, :, 0]
    return np.ascontiguousarray(values.astype(np.uint8))


def read_kitti_disparity(path: PathLike) -> np.ndarray:
    """Read a KITTI disparity PNG (uint16, value / 256, 0 = invalid) as float32 ``HxW``, +inf invalid."""
    image = _open_image(path, "KITTI disparity PNG")
    if image.mode not in ("I;16", "I;16L", "I;16B", "I;16N"):
        bits = "8-bit" if image.mode in ("L", "P", "1", "RGB", "RGBA", "LA") else f"mode {image.mode}"
        raise DataError(f"{path}: {bits} image ({image.mode}); a KITTI disparity PNG is single-channel 16-bit")
    raw = np.asarray(image).astype(np.float32)
    disparity = raw / 256.0
    disparity[raw == 0] = np.inf
    return disparity


def write_kitti_disparity(path: PathLike, disparity: np.ndarray) -> None:
    """Write float ``HxW`` disparity as a KITTI uint16 PNG (round(d * 256)); non-finite or negative
    values become 0 (invalid); valid values are clipped to [1/256, 65535/256]."""
    disparity = np.asarray(disparity, dtype=np.float64)
    if disparity.ndim != 2:
        raise InputError(f"write_kitti_disparity expects HxW, got shape {disparity.shape}")
    valid = np.isfinite(disparity) & (disparity >= 0)
    if valid.any() and disparity[valid].max() > 65535 / 256:
        log.warning("%s: disparities above %.2f clipped", path, 65535 / 256)
    values = np.zeros(disparity.shape, dtype=np.uint16)
    values[valid] = np.clip(np.round(disparity[valid] * 256.0), 1, 65535).astype(np.uint16)
    atomic_write_bytes(path, _png_bytes(values))


def _png_bytes(array: np.ndarray) -> bytes:
    if array.dtype == np.uint16:
        image = Image.frombytes("I;16", (array.shape[1], array.shape[0]), array.astype("<u2").tobytes())
    else:
        image = Image.fromarray(array)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def write_image(path: PathLike, image: np.ndarray) -> None:
    """Write a uint8 ``HxW`` or ``HxWx3`` image (format from the extension), atomically."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise InputError(f"write_image expects uint8, got {image.dtype}")
    fmt = Image.registered_extensions().get(Path(path).suffix.lower())
    if fmt is None:
        raise InputError(f"{path}: unknown image extension")
    out = io.BytesIO()
    Image.fromarray(image).save(out, format=fmt)
    atomic_write_bytes(path, out.getvalue())


# --------------------------------------------------------------------------------------------------
# disparity dispatch, calibration
# --------------------------------------------------------------------------------------------------


def read_disparity(path: PathLike) -> np.ndarray:
    """Read a disparity map by extension: ``.pfm``, ``.png`` (KITTI uint16 / 256) or ``.npy``.

    Returns float32 ``HxW``; every non-finite value (inf, nan) becomes +inf (invalid).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".pfm":
        disparity = read_pfm(path)
        if disparity.ndim != 2:
            raise DataError(f"{path}: 3-channel PFM ('PF'), a disparity map needs 1 channel ('Pf')")
    elif suffix == ".png":
        disparity = read_kitti_disparity(path)
    elif suffix == ".npy":
        raw = _read_bytes(path, "disparity .npy file")
        try:
            disparity = np.load(io.BytesIO(raw), allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise DataError(f"{path}: not a valid .npy array ({err})") from None
        if disparity.ndim == 3 and disparity.shape[0] == 1:
            disparity = disparity[0]
        if disparity.ndim != 2 or not np.issubdtype(disparity.dtype, np.number):
            raise DataError(f"{path}: expected a numeric HxW array, got {disparity.dtype} {disparity.shape}")
        disparity = disparity.astype(np.float32)
    else:
        raise DataError(f"{path}: unsupported disparity format '{suffix}' (use .pfm, .png (KITTI 16-bit) or .npy)")
    disparity[~np.isfinite(disparity)] = np.inf
    return disparity


_MATRIX = re.compile(r"^\[(.*)\]$")
_INT_KEYS = {"width", "height", "ndisp", "isint"}
_MATRIX_KEYS = {"cam0", "cam1"}


def _parse_matrix(text: str, path: PathLike, key: str) -> np.ndarray:
    rows = [row.split() for row in text.split(";")]
    try:
        matrix = np.array([[float(v) for v in row] for row in rows], dtype=np.float64)
    except ValueError:
        raise DataError(f"{path}: '{key}' is not a numeric matrix: [{text}]") from None
    if matrix.shape != (3, 3):
        raise DataError(f"{path}: '{key}' should be a 3x3 matrix [f 0 cx; 0 f cy; 0 0 1], got [{text}]")
    return matrix


def read_calib(path: PathLike) -> dict[str, Any]:
    """Read a Middlebury / ETH3D ``calib.txt`` (``key=value`` lines).

    ``cam0``/``cam1`` become 3x3 float ndarrays; width, height, ndisp, isint are ints; other numeric values
    (doffs, baseline, vmin, vmax, dyavg, dymax, ...) floats; anything else is kept as a string.
    """
    raw = _read_bytes(path, "calibration file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text calibration file") from None
    calib: dict[str, Any] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "=" not in line:
            raise DataError(f"{path}: line {number} is not key=value: {line[:60]!r}")
        key, value = (part.strip() for part in line.split("=", 1))
        match = _MATRIX.match(value)
        if match:
            calib[key] = _parse_matrix(match.group(1), path, key)
            continue
        if key in _MATRIX_KEYS:
            raise DataError(f"{path}: '{key}' should be a 3x3 matrix [f 0 cx; 0 f cy; 0 0 1], got {value[:60]!r}")
        try:
            number_value = float(value)
        except ValueError:
            calib[key] = value
            continue
        if key in _INT_KEYS and number_value.is_integer():
            calib[key] = int(number_value)
        else:
            calib[key] = number_value
    if not calib:
        raise DataError(f"{path}: empty calibration file (expected key=value lines such as cam0=[...])")
    return calib
