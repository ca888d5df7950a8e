"""Console output of long jobs: a progress line on a terminal, plain log lines elsewhere, and summaries.

On a terminal (``stream.isatty()``) :class:`Progress` redraws one line in place::

    train  120/1000 [####                ] 12% | 34.5 pairs/s | ETA 1:23 | loss 2.35

and clears it before any log record is printed, so log lines and the bar do not mix. Not attached to a
terminal (CI, ``nohup``, a pipe) it draws nothing: the caller's log lines are the whole output.
Numbers are shown with 3 significant digits (:func:`sig`).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Iterable, Sequence
from typing import IO, Any

__all__ = ["Progress", "attached", "duration", "sig", "summary"]

REDRAW_S = 0.1  # at most ten redraws a second


def attached(stream: IO[str] | None = None) -> bool:
    """Whether ``stream`` (default stderr) is a terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def sig(value: Any, digits: int = 3) -> str:
    """A number with ``digits`` significant digits: 3.22, 0.0123, 1230 (no exponent below 1e6), 4.5e-05."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    if value == 0:
        return "0"
    if abs(value) >= 10 ** digits and abs(value) < 1e6:
        return f"{value:.0f}"
    if abs(value) < 1e-3:
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}g}"


def duration(seconds: float) -> str:
    """Seconds as ``m:ss`` or ``h:mm:ss`` (``?`` when unknown)."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def summary(title: str, items: Iterable[tuple[str, Any]]) -> str:
    """A titled block of aligned ``key  value`` lines (values through :func:`sig`)."""
    items = [(k, sig(v) if isinstance(v, float) else str(v)) for k, v in items]
    width = max((len(k) for k, _ in items), default=0)
    return "\n".join([title] + [f"  {k.ljust(width)}  {v}" for k, v in items])


class _ClearBeforeLog(logging.Filter):
    """Clears the progress line before a log record reaches a handler writing to the same stream."""

    def __init__(self, progress: Progress) -> None:
        super().__init__()
        self.progress = progress

    def filter(self, record: logging.LogRecord) -> bool:
        self.progress.clear()
        return True


class Progress:
    """Progress of ``total`` steps: rate, ETA and fields on a terminal line; nothing when not a terminal.

    ``items_per_step`` converts steps into ``item_unit`` for the rate (pairs per optimiser step);
    ``deadline`` (a ``time.monotonic()`` value) caps the ETA, e.g. at the end of a time budget.
    ``enabled=None`` = draw iff ``stream`` is a terminal.
    """

    def __init__(self, total: int, *, desc: str, initial: int = 0, items_per_step: float = 1.0,
                 item_unit: str = "it", deadline: float | None = None, stream: IO[str] | None = None,
                 enabled: bool | None = None, width: int = 20) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.active = attached(self.stream) if enabled is None else enabled
        self.total, self.n, self.desc = total, initial, desc
        self.items_per_step, self.item_unit, self.deadline, self.width = items_per_step, item_unit, deadline, width
        self.fields: dict[str, Any] = {}
        self.started = time.monotonic()
        self._mark: tuple[float, int] | None = None  # (time, n) of the first update: start-up is not pace
        self._drawn_at = 0.0
        self._visible = False
        self._filters: list[tuple[logging.Handler, logging.Filter]] = []
        if self.active:
            self._hook_logging()

    def _hook_logging(self) -> None:
        for handler in logging.getLogger().handlers:
            if getattr(handler, "stream", None) is self.stream:
                f = _ClearBeforeLog(self)
                handler.addFilter(f)
                self._filters.append((handler, f))

    # --- numbers ---------------------------------------------------------------------------------
    def rate(self) -> float | None:
        """Items per second since the first update (None until two updates)."""
        if self._mark is None:
            return None
        t0, n0 = self._mark
        elapsed = time.monotonic() - t0
        return (self.n - n0) * self.items_per_step / elapsed if self.n > n0 and elapsed > 0 else None

    def eta(self) -> float | None:
        """Seconds to ``total`` at the current rate, capped by the deadline."""
        rate = self.rate()
        left = None if rate is None else (self.total - self.n) * self.items_per_step / rate
        if self.deadline is not None:
            until = max(0.0, self.deadline - time.monotonic())
            left = until if left is None else min(left, until)
        return left

    def line(self) -> str:
        """The progress line (without control characters)."""
        total = max(self.total, 1)
        frac = min(1.0, self.n / total)
        filled = int(round(frac * self.width))
        parts = [f"{self.desc}  {self.n}/{self.total} [{'#' * filled}{' ' * (self.width - filled)}] "
                 f"{100 * frac:3.0f}%"]
        rate = self.rate()
        parts.append(f"{sig(rate) if rate is not None else '?'} {self.item_unit}/s")
        parts.append(f"ETA {duration(self.eta()) if self.n < self.total else '0:00'}")
        parts += [f"{k} {sig(v)}" for k, v in self.fields.items()]
        return " | ".join(parts)

    # --- drawing ---------------------------------------------------------------------------------
    def update(self, n: int = 1, **fields: Any) -> None:
        """Advance by ``n`` steps and set the shown fields (e.g. ``loss=2.35``)."""
        now = time.monotonic()
        if self._mark is None:
            self._mark = (now, self.n)
        self.n += n
        self.fields.update(fields)
        if self.active and (not self._visible or now - self._drawn_at >= REDRAW_S or self.n >= self.total):
            self.draw()

    def draw(self) -> None:
        if not self.active:
            return
        self._drawn_at = time.monotonic()
        self.stream.write("\r\x1b[K" + self.line())
        self.stream.flush()
        self._visible = True

    def clear(self) -> None:
        """Erase the line (a log record or a table is about to be printed); the next update redraws it."""
        if self.active and self._visible:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._visible = False

    def close(self) -> None:
        """Leave the last state on its own line and stop intercepting log records."""
        if self.active and self._visible:
            self.draw()
            self.stream.write("\n")
            self.stream.flush()
            self._visible = False
        for handler, f in self._filters:
            handler.removeFilter(f)
        self._filters.clear()


def metric_rows(metrics: dict[str, float], best: dict[str, tuple[float, int]], keys: Sequence[str] | None = None
                ) -> list[dict[str, Any]]:
    """Rows ``metric | value | best (step)`` for :func:`~madis_stereo.utils.tables.format_table` (3 digits)."""
    keys = list(metrics) if keys is None else [k for k in keys if k in metrics]
    rows = []
    for key in keys:
        value, step = best.get(key, (metrics[key], None))
        rows.append({"metric": key, "value": sig(metrics[key]),
                     "best": f"{sig(value)} (step {step})" if step is not None else sig(value)})
    return rows
