"""Training logs of the main process: ``metrics.jsonl`` (one JSON object per line), TensorBoard, console.

Lines: ``{"kind": "train", "step", "epoch", "lr", "loss", <terms>, "time", "skipped", ...}`` once per
optimiser step and ``{"kind": "val", "step", <metrics>}`` after each validation. On resume, lines of steps
after the resumed step (written by the interrupted process past its last checkpoint) are dropped, so the
file holds one clean curve.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from madis_stereo.utils.files import atomic_write_bytes

__all__ = ["METRICS_NAME", "RunLogger", "read_metrics"]

log = logging.getLogger(__name__)

METRICS_NAME = "metrics.jsonl"


def read_metrics(path: str | Path, kind: str | None = None) -> list[dict[str, Any]]:
    """Records of a ``metrics.jsonl`` (optionally only one kind); a torn last line is ignored."""
    records = []
    path = Path(path)
    if not path.is_file():
        return records
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if kind is None or record.get("kind") == kind:
            records.append(record)
    return records


class RunLogger:
    """Writes the logs of one run; inert on ranks other than 0 (``enabled=False``)."""

    def __init__(self, run_dir: Path, enabled: bool, resume_step: int | None = None) -> None:
        self.enabled = enabled
        self.path = Path(run_dir) / METRICS_NAME
        self.writer = None
        if not enabled:
            return
        if resume_step is not None:
            kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step]
            atomic_write_bytes(self.path, "".join(json.dumps(r) + "\n" for r in kept).encode())
        self.file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        self.writer = _tensorboard_writer(Path(run_dir))

    def write(self, record: dict[str, Any], scalars: bool = True) -> None:
        """Append one record; with ``scalars`` also send its numbers to TensorBoard."""
        if not self.enabled:
            return
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if scalars and self.writer is not None:
            prefix = record.get("kind", "train")
            for key, value in record.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "step":
                    self.writer.add_scalar(f"{prefix}/{key}", value, record["step"])

    def close(self) -> None:
        if not self.enabled:
            return
        self.file.close()
        if self.writer is not None:
            self.writer.close()


def _tensorboard_writer(run_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.info("tensorboard is not installed; logging to %s only", METRICS_NAME)
        return None
    return SummaryWriter(log_dir=str(run_dir))
