"""Run-folder files for resuming: ``train_state.pt``, random-generator states, checkpoint rotation.

``train_state.pt`` holds only tensors and plain containers, written atomically and read back with
``torch.load(weights_only=True)``: optimiser, gradient scaler, EMA teacher, step, data position, RNG states,
best validation value and the name of the student checkpoint of the same step. The student weights live in
that ``ckpt_step{N}.safetensors`` (written first, so the state never points at a missing file).
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import socket
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from madis_stereo.errors import CheckpointError, TrainingError, first_line
from madis_stereo.utils.files import atomic_path

__all__ = [
    "CKPT_PATTERN",
    "LOCK_NAME",
    "RunLock",
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
LOCK_NAME = ".run.lock"

log = logging.getLogger(__name__)
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


class RunLock:
    """An exclusive lock on a run folder, held while one process trains into it.

    ``fcntl.flock`` on ``RUN_DIR/.run.lock``: the kernel releases it when the process ends in any way, so a
    crashed run leaves its details in the file but no lock, and the next run takes it over (saying whose it
    was). While held, the file names the holder's pid, host, start time and command line, which a refused
    second process prints; a clean release empties it.
    Without ``fcntl`` (Windows) the folder is not locked.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self._fh: Any = None

    def acquire(self) -> RunLock:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return self
        fh = open(self.path, "a+")  # noqa: SIM115 - held open for the lock's lifetime
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = _describe_holder(fh.read())
            fh.close()
            raise TrainingError(f"{self.path.parent} is in use by another training process ({holder}); wait for "
                                "it to finish or stop it, or choose another run folder") from None
        fh.seek(0)
        previous = fh.read()
        if previous.strip():
            log.info("%s: took over the lock of a run that ended without releasing it (%s)", self.path.parent,
                     _describe_holder(previous))
        fh.seek(0)
        fh.truncate()
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                  "command": " ".join(sys.argv)}
        fh.write(json.dumps(holder) + "\n")
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        """Empty the file (an empty file = released cleanly) and unlock. The file stays: deleting it could
        let a process that opened it just before lock a file nobody else sees."""
        if self._fh is None:
            return
        self._fh.seek(0)
        self._fh.truncate()
        self._fh.close()  # closing the file releases the flock
        self._fh = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _describe_holder(text: str) -> str:
    try:
        info = json.loads(text)
        return f"pid {info['pid']} on {info['host']}, started {info['started']}: {info['command']}"
    except (ValueError, KeyError, TypeError):
        return "a process that left no details"
