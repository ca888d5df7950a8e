"""Helpers of the inference-tool tests: a tiny checkpoint, image pairs on disk, a PLY reader, CLI runs."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

import madis_stereo

# The source tree the tests import (subprocesses get the same one).
SRC = Path(madis_stereo.__file__).resolve().parents[1]
TINY_CROP = (64, 128)


@contextlib.contextmanager
def single_thread():
    """Run torch on one thread: the tiny models' ops are too small to gain from more, and on a busy machine
    (more runnable processes than cores) OpenMP's waiting threads make each op up to ~100x slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def make_tiny_checkpoint(path: Path, **metadata) -> Path:
    """The ``tiny`` preset at crop 64x128 with seeded random weights, saved with save_model."""
    import torch

    import madis_stereo as ms

    torch.manual_seed(0)
    model = ms.StereoModel(ms.ModelConfig.preset("tiny", crop=TINY_CROP))
    return ms.save_model(model, path, **metadata)


def stereo_images(height: int = 70, width: int = 150, shift: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A textured left image and its right view shifted by ``shift`` pixels (uint8 HxWx3)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(height, width + shift, 3), dtype=np.uint8)
    return np.ascontiguousarray(base[:, shift:]), np.ascontiguousarray(base[:, :width])


def write_png(path: Path, image: np.ndarray) -> Path:
    from madis_stereo.data import write_image

    write_image(path, image)
    return path


def write_pair(folder: Path, name: str = "pair", **kwargs) -> tuple[Path, Path]:
    left, right = stereo_images(**kwargs)
    return write_png(folder / f"{name}_left.png", left), write_png(folder / f"{name}_right.png", right)


def read_ply(path: Path) -> tuple[dict, np.ndarray]:
    """A minimal binary little-endian PLY reader: (header info, structured vertex array)."""
    raw = Path(path).read_bytes()
    end = raw.index(b"end_header\n") + len(b"end_header\n")
    lines = raw[:end].decode("ascii").splitlines()
    assert lines[0] == "ply" and lines[1] == "format binary_little_endian 1.0"
    types = {"float": "<f4", "uchar": "u1", "double": "<f8", "int": "<i4"}
    count, fields = 0, []
    for line in lines:
        parts = line.split()
        if parts[0] == "element":
            assert parts[1] == "vertex"
            count = int(parts[2])
        elif parts[0] == "property":
            fields.append((parts[2], types[parts[1]]))
    vertices = np.frombuffer(raw[end:], dtype=np.dtype(fields), count=count)
    assert len(raw) == end + count * np.dtype(fields).itemsize
    return {"count": count, "fields": [f for f, _ in fields]}, vertices


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}  # see single_thread
    return subprocess.run([sys.executable, "-m", "madis_stereo", *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=300)


@dataclasses.dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def cli(*args: object) -> CliResult:
    """Run ``madis-stereo ARGS`` in this process (faster than a subprocess); logs go to ``stderr``."""
    from madis_stereo.app.cli import main

    out, err = io.StringIO(), io.StringIO()
    logger = logging.getLogger("madis_stereo")
    handler = logging.StreamHandler(err)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([str(a) for a in args])
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return CliResult(code, out.getvalue(), err.getvalue())
