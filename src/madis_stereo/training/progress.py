"""What a training run shows on the console (rank 0): progress, validation tables and a final summary.

- On a terminal: a progress line (step, pairs/s, ETA to the end of the run or of the time budget, loss).
  Elsewhere (CI, ``nohup``, a pipe): one plain log line every ``run.log_every`` steps instead.
- After each validation: a table of the metrics with 3 significant digits and the best value so far.
- At the end: steps, time, the best checkpoint and its metrics, where the logs are.

The JSONL and TensorBoard logs (``runlog.py``) are written independently of all this.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from madis_stereo.utils.console import Progress, duration, metric_rows, sig, summary
from madis_stereo.utils.tables import format_table

__all__ = ["TrainConsole"]

log = logging.getLogger("madis_stereo.training")


class TrainConsole:
    """The console of one run; inert when ``enabled`` is False (ranks other than 0).

    ``pairs_per_step``: training pairs per optimiser step (all processes); ``budget_s``: the time budget,
    counted from now. The console keeps its own clock (``time.monotonic``), apart from the trainer's.
    """

    def __init__(self, total: int, initial: int, pairs_per_step: int, log_every: int, enabled: bool,
                 budget_s: float | None = None) -> None:
        self.enabled, self.log_every, self.initial = enabled, log_every, initial
        self.started = time.monotonic()
        deadline = self.started + budget_s if budget_s is not None else None
        self.progress = Progress(total, desc="train", initial=initial, items_per_step=pairs_per_step,
                                 item_unit="pairs", deadline=deadline, enabled=None if enabled else False)
        self.best: dict[str, tuple[float, int]] = {}
        self.best_metrics: tuple[int, dict[str, float]] | None = None  # (step, metrics) of the best validation

    def step(self, step: int, total: int, losses: dict[str, float], lr: float) -> None:
        """One optimiser step done."""
        if not self.enabled:
            return
        self.progress.total = total
        self.progress.update(1, loss=losses["loss"])
        if not self.progress.active and self.log_every and step % self.log_every == 0:
            rate = self.progress.rate()
            terms = "  ".join(f"{k} {sig(v)}" for k, v in losses.items())
            log.info("step %d/%d  %s  lr %s  %s pairs/s  ETA %s", step, total, terms, sig(lr),
                     sig(rate) if rate is not None else "?", duration(self.progress.eta()))

    def validation(self, step: int, metrics: dict[str, float], best_key: str) -> None:
        """A validation result (all metrics lower = better): the table with the best values so far."""
        if best_key in metrics and (best_key not in self.best or metrics[best_key] < self.best[best_key][0]):
            self.best_metrics = (step, dict(metrics))
        for key, value in metrics.items():
            if key not in self.best or value < self.best[key][0]:
                self.best[key] = (value, step)
        if self.enabled and metrics:
            log.info("validation at step %d:\n%s", step, format_table(metric_rows(metrics, self.best)))

    def finish(self, step: int, run_dir: Path, last: Path | None, best: dict[str, Any] | None,
               tensorboard: bool) -> None:
        """Close the progress line and log the summary (``last`` None: the run stopped early, no summary)."""
        self.progress.close()
        if not self.enabled or last is None:
            return
        seconds = time.monotonic() - self.started
        rate = (step - self.initial) * self.progress.items_per_step / seconds if seconds > 0 else 0.0
        resumed = f" (resumed at step {self.initial})" if self.initial else ""
        items: list[tuple[str, Any]] = [("steps", f"{step}{resumed}"),
                                        ("time", f"{duration(seconds)} ({sig(rate)} pairs/s)")]
        if best is not None:
            metrics = self.best_metrics[1] if self.best_metrics and self.best_metrics[0] == best["step"] else {}
            shown = "  ".join(f"{k} {sig(v)}" for k, v in metrics.items())
            items.append(("best checkpoint", f"{run_dir / 'best.safetensors'} (step {best['step']}, "
                                             f"{best['metric']} {sig(best['value'])})"))
            if shown:
                items.append(("its metrics", shown))
        items.append(("last checkpoint", str(last)))
        board = f"; TensorBoard: tensorboard --logdir {run_dir}" if tensorboard else ""
        items.append(("logs", f"{run_dir / 'metrics.jsonl'}{board}"))
        log.info("%s", summary("training finished", items))
