"""Which floating-point precision runs a model fastest on the device at hand.

``resolve_precision("auto", device)`` picks:

- on CUDA: bf16 where the GPU supports it (tensor cores; every GPU from Ampere on), else fp32;
- on a CPU: the faster of fp32 and bf16 by a short measured probe (matrix products of the network's
  shapes on one core, about 0.1 s of CPU time), cached per machine in ``precision.json`` under
  ``$MADIS_STEREO_HOME`` (default ``~/.cache/madis-stereo``), keyed by the CPU model, the torch version and
  the thread count. bf16 wins only when it is more than :data:`BF16_MARGIN` faster: the difference does not
  matter below that, and fp32 is the more accurate;
- elsewhere (MPS, ...): fp32.

Which is faster is not a property of the instruction set alone: a CPU with AMX runs bf16 products about
7x faster than fp32, an AMD EPYC with AVX512-BF16 about 2.3x faster, and an Intel Xeon with AVX512-BF16
but no AMX 2x slower (benchmarks/RESULTS.md). Hence the measurement rather than a rule on CPU flags.

An explicit "fp32", "bf16" or "fp16" is used as given. ``$MADIS_STEREO_PRECISION`` (one of those three)
replaces the automatic choice, e.g. to make a test suite independent of the machine.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from madis_stereo.errors import InputError
from madis_stereo.utils.files import atomic_write_bytes

__all__ = ["BF16_MARGIN", "PRECISIONS", "PrecisionChoice", "autocast", "cache_file", "cpu_model", "machine_key",
           "probe_cpu", "resolve_precision"]

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
BF16_MARGIN = 1.1  # bf16 must be this much faster than fp32 to be chosen
ENV_PRECISION = "MADIS_STEREO_PRECISION"

# One probe: GFLOP/s of fp32 and of bf16 products on this machine.
Probe = Callable[[], dict[str, float]]


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision to run with ("fp32", "bf16" or "fp16") and why, in words (for the log)."""

    precision: str
    reason: str


def check_precision(precision: str, allowed: tuple[str, ...] = PRECISIONS) -> str:
    if precision not in allowed:
        raise InputError(f"precision must be one of {', '.join(allowed)}, got {precision!r}")
    return precision


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """The autocast context of a resolved precision (nothing for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=DTYPES[check_precision(precision)])


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, else the platform's processor string)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_key(threads: int | None = None) -> str:
    """What the CPU probe's result depends on: CPU model, torch version, thread count."""
    threads = threads or torch.get_num_threads()
    return f"{cpu_model()} | torch {torch.__version__} | {threads} threads"


def cache_file() -> Path:
    """``precision.json`` in the project's cache (``$MADIS_STEREO_HOME``, by default ``~/.cache/madis-stereo``)."""
    from madis_stereo.model.registry import cache_dir

    return cache_dir() / "precision.json"


def _gemm_cpu_seconds(a: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> float:
    t = time.thread_time()
    torch.nn.functional.linear(a, w, b)
    return time.thread_time() - t


def probe_cpu(rows: int = 1024, dim: int = 768, reps: int = 6, budget_s: float = 0.4) -> dict[str, float]:
    """GFLOP/s of fp32 and bf16 ``linear`` layers of the network's shapes on one core (best of ``reps``).

    Timed in the thread's CPU time on one thread: on a machine shared with other work, wall-clock time
    measures the other processes as much as the arithmetic (we saw 10x swings on a loaded 2-core VM), CPU
    time does not. The two precisions alternate; one that is very slow (bf16 emulated without hardware
    support) stops early once it has spent half of ``budget_s``.
    """
    g = torch.Generator().manual_seed(0)
    tensors = {}
    for name in ("fp32", "bf16"):
        dtype = DTYPES[name]
        tensors[name] = (torch.randn(rows, dim, generator=g).to(dtype), torch.randn(dim, dim, generator=g).to(dtype),
                         torch.zeros(dim, dtype=dtype))
    best = dict.fromkeys(tensors, float("inf"))
    spent = dict.fromkeys(tensors, 0.0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            for name in tensors:  # warm-up: oneDNN builds its kernels on first use
                _gemm_cpu_seconds(*tensors[name])
            for _ in range(reps):
                for name in tensors:
                    if spent[name] < budget_s / 2:
                        seconds = _gemm_cpu_seconds(*tensors[name])
                        spent[name] += seconds
                        best[name] = min(best[name], seconds)
    finally:
        torch.set_num_threads(threads)
    return {name: 2 * rows * dim * dim / max(seconds, 1e-9) / 1e9 for name, seconds in best.items()}


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}  # missing or damaged: measure again and rewrite it


def _cpu_choice(probe: Probe, threads: int | None) -> PrecisionChoice:
    key = machine_key(threads)
    path = cache_file()
    cache = _read_cache(path)
    entry = cache.get(key)
    source = f"cached in {path}"
    if not (isinstance(entry, dict) and all(isinstance(entry.get(p), (int, float)) for p in ("fp32", "bf16"))):
        started = time.perf_counter()
        entry = {p: float(v) for p, v in probe().items()}
        entry["date"] = time.strftime("%Y-%m-%d")
        source = f"measured in {time.perf_counter() - started:.2f} s"
        cache[key] = entry
        try:
            atomic_write_bytes(path, (json.dumps(cache, indent=1, sort_keys=True) + "\n").encode())
        except OSError as err:  # a read-only home still runs, it only measures again next time
            log.debug("could not cache the precision probe in %s: %s", path, err)
    fp32, bf16 = entry["fp32"], entry["bf16"]
    precision = "bf16" if bf16 > BF16_MARGIN * fp32 else "fp32"
    reason = (f"auto: {precision} is the faster on this CPU (matrix products on one core: bf16 {bf16:.0f}, "
              f"fp32 {fp32:.0f} GFLOP/s; {key}; {source})")
    return PrecisionChoice(precision, reason)


def resolve_precision(precision: str, device: torch.device | str, probe: Probe | None = None,
                      threads: int | None = None) -> PrecisionChoice:
    """The precision to run with on ``device``: ``precision`` itself unless it is "auto" (see the module)."""
    check_precision(precision)
    device = torch.device(device)
    if precision != "auto":
        return PrecisionChoice(precision, "requested")
    forced = os.environ.get(ENV_PRECISION)
    if forced:
        if forced not in DTYPES:
            raise InputError(f"{ENV_PRECISION} must be one of {', '.join(DTYPES)}, got {forced!r}")
        return PrecisionChoice(forced, f"{ENV_PRECISION}={forced}")
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return PrecisionChoice("bf16", f"auto: bf16 on {torch.cuda.get_device_name(device)} (tensor cores)")
        return PrecisionChoice("fp32", f"auto: fp32, {torch.cuda.get_device_name(device)} has no bf16")
    if device.type == "cpu":
        return _cpu_choice(probe or probe_cpu, threads)
    return PrecisionChoice("fp32", f"auto: fp32 on {device.type}")
