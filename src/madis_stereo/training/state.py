"""Run-folder files for resuming: ``train_state.pt``, random-generator states, checkpoint rotation.

``train_state.pt`` holds only tensors and plain containers, written atomically and read back with
``torch.load(weights_only=True)``: optimiser, gradient scaler, EMA teacher, step, data position, RNG states,
best validation value and the name of the student checkpoint of the same step. The student weights live in
that ``ckpt_step{N}.safetensors`` (written first, so the state never points at a missing file).
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from madis_stereo.errors import CheckpointError, first_line
from madis_stereo.utils.files import atomic_path

__all__ = [
    "CKPT_PATTERN",
    "STATE_NAME",
    "capture_rng",
    "checkpoint_name",
    "list_checkpoints",
    "load_train_state",
    "remove_stale_temp_files",
    "restore_rng",
    "rotate_checkpoints",
    "save_train_state",
]

STATE_NAME = "train_state.pt"
CKPT_PATTERN = re.compile(r"ckpt_step(\d+)\.safetensors")


def checkpoint_name(step: int) -> str:
    return f"ckpt_step{step}.safetensors"


def capture_rng() -> dict[str, Any]:
    """Python, NumPy and torch (CPU) generator states as tensors and plain containers.

    Training draws its masks from per-step generators (see ``engine.mask_generator``) and its data from
    (seed, epoch, index), so these states matter only to user code that draws from the global generators.
    """
    version, mt_state, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": {"version": version, "state": torch.tensor(mt_state, dtype=torch.int64), "gauss": gauss},
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }


def restore_rng(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state((npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached"]))
    torch.set_rng_state(state["torch"])


def save_train_state(path: str | Path, state: dict[str, Any]) -> None:
    """torch.save ``state`` atomically (a crash leaves the previous file intact)."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_train_state(path: str | Path) -> dict[str, Any]:
    """Read ``train_state.pt`` without unpickling arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no training state to resume from: {path} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling and zip errors come in many types
        first = first_line(err)
        raise CheckpointError(f"{path}: unreadable training state ({first[:160]})") from None


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of the ``ckpt_step{N}.safetensors`` files in ``run_dir``, by step."""
    found = []
    for path in Path(run_dir).iterdir():
        m = CKPT_PATTERN.fullmatch(path.name)
        if m:
            found.append((int(m.group(1)), path))
    return sorted(found)


def rotate_checkpoints(run_dir: str | Path, keep_last: int, protect: str | None = None) -> None:
    """Delete all but the newest ``keep_last`` step checkpoints (never ``protect``)."""
    ckpts = list_checkpoints(run_dir)
    for _, path in ckpts[: max(0, len(ckpts) - keep_last)]:
        if path.name != protect:
            path.unlink(missing_ok=True)


def remove_stale_temp_files(run_dir: str | Path) -> list[str]:
    """Remove temporary files a killed writer left behind (``.NAME.XXXX.tmp`` from ``atomic_path``)."""
    removed = []
    for path in Path(run_dir).glob(".*.tmp"):
        path.unlink(missing_ok=True)
        removed.append(path.name)
    return removed
