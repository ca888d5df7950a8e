"""Which floating-point precision runs a model fastest on the device at hand.

``resolve_precision("auto", device)`` picks:

- on CUDA: bf16 where the GPU supports it (tensor cores; every GPU from Ampere on), else fp32;
- on a CPU: the faster of fp32 and bf16 by a short measured probe (matrix products of the network's
  shapes on one core, about 0.1 s of CPU time), cached per machine in ``precision.json`` under
  ``$MADIS_STEREO_HOME`` (default ``~/.cache/madis-stereo``), keyed by the CPU (:func:`cpu_model`: name,
  family and model numbers, bf16 flags), the torch version and the thread count. bf16 wins only when it is
  more than :data:`BF16_MARGIN` faster: the difference does not matter below that, and fp32 is the more
  accurate;
- elsewhere (MPS, ...): fp32.

Which is faster is not a property of the instruction set alone: a CPU with AMX runs bf16 products about
7x faster than fp32, an AMD EPYC with AVX512-BF16 about 2.3x faster, and an Intel Xeon with AVX512-BF16
but no AMX 2x slower (benchmarks/RESULTS.md). Hence the measurement rather than a rule on CPU flags.

An explicit "fp32", "bf16" or "fp16" is used as given. ``$MADIS_STEREO_PRECISION`` (one of those three)
replaces the automatic choice, e.g. to make a test suite independent of the machine.

The same probe also times fp32 products through oneDNN (the library behind PyTorch's CPU convolutions)
against the BLAS that ``torch.nn.functional.linear`` calls: on an AMD EPYC (Zen 5) oneDNN ran fp32 at 244
GFLOP/s on one core where MKL ran at 110. :func:`cpu_linears` turns the probe's verdict into the
:class:`~madis_stereo.model.packed.PackedLinears` that a CPU predictor runs its Linear layers through: always
for bf16 (packed weights, fused bias and GELU), for fp32 only where oneDNN was measured faster.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from madis_stereo.errors import InputError
from madis_stereo.model.packed import PackedLinears, linear
from madis_stereo.utils.files import atomic_write_bytes

__all__ = ["BF16_MARGIN", "MATRIX_FLAGS", "ONEDNN_MARGIN", "PRECISIONS", "PrecisionChoice", "autocast",
           "cache_file", "cpu_linears", "cpu_model", "machine_key", "probe_cpu", "resolve_precision"]

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
BF16_MARGIN = 1.1  # bf16 must be this much faster than fp32 to be chosen
ONEDNN_MARGIN = 1.1  # fp32 products go through oneDNN when it is this much faster than the BLAS
ENV_PRECISION = "MADIS_STEREO_PRECISION"

# One probe: GFLOP/s of fp32 (BLAS and oneDNN) and bf16 products on this machine.
Probe = Callable[[], dict[str, float]]
PROBED = ("fp32", "fp32_onednn", "bf16")


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


MATRIX_FLAGS = ("amx_bf16", "avx512_bf16", "avx512_fp16")  # the CPU flags that decide bf16's speed, when present


def cpu_model(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> str:
    """The CPU in words: its model name, with (on Linux) its family and model numbers and the flags of
    :data:`MATRIX_FLAGS` it has, e.g. ``"AMD EPYC (family 25, model 17, avx512_bf16)"``. Virtual machines
    often report a bare "AMD EPYC" for a Zen 4 and a Zen 5 alike, whose bf16 speeds differ; the numbers tell
    them apart in the probe's cache key and in every benchmark table. Elsewhere, the platform's string."""
    fields: dict[str, str] = {}
    try:
        with open(cpuinfo) as fh:
            for line in fh:
                if not line.strip():
                    break  # the first processor's block is enough
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or platform.machine() or "unknown CPU"
    details = [f"{label} {fields[key]}" for key, label in (("cpu family", "family"), ("model", "model"))
               if fields.get(key)]
    flags = set(fields.get("flags", "").split())
    details += [flag for flag in MATRIX_FLAGS if flag in flags]
    return f"{name} ({', '.join(details)})" if details else name


def machine_key(threads: int | None = None) -> str:
    """What the CPU probe's result depends on: CPU model, torch version, thread count."""
    threads = threads or torch.get_num_threads()
    return f"{cpu_model()} | torch {torch.__version__} | {threads} threads"


def cache_file() -> Path:
    """``precision.json`` in the project's cache (``$MADIS_STEREO_HOME``, by default ``~/.cache/madis-stereo``)."""
    from madis_stereo.model.registry import cache_dir

    return cache_dir() / "precision.json"


def _cpu_seconds(product: Callable[[], torch.Tensor]) -> float:
    t = time.thread_time()
    product()
    return time.thread_time() - t


def _probe_products(rows: int, dim: int) -> dict[str, Callable[[], torch.Tensor]]:
    """One ``linear`` of the network's shape per probed kernel: fp32 through the BLAS, fp32 and bf16 through
    :class:`~madis_stereo.model.packed.PackedLinears` (oneDNN), as a CPU predictor runs them."""
    g = torch.Generator().manual_seed(0)
    layer = torch.nn.Linear(dim, dim)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(dim, dim, generator=g))
    x = torch.randn(rows, dim, generator=g)
    products = {"fp32": lambda: layer(x)}
    for name, precision in (("fp32_onednn", "fp32"), ("bf16", "bf16")):
        packs = PackedLinears.for_inference("cpu", precision, fp32_onednn=True)
        xd = x.to(DTYPES[precision])
        if packs is None:  # no oneDNN kernel for it: the plain product (bf16 emulated, or fp32 twice)
            products[name] = lambda xd=xd: torch.nn.functional.linear(xd, layer.weight.to(xd.dtype))
        else:
            products[name] = functools.partial(_packed_product, packs, layer, xd)
    return products


def _packed_product(packs: PackedLinears, layer: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    with packs.active(layer):
        return linear(layer, x)


def probe_cpu(rows: int = 1024, dim: int = 768, reps: int = 6, budget_s: float = 0.6) -> dict[str, float]:
    """GFLOP/s of ``linear`` layers of the network's shapes on one core (best of ``reps``): fp32 through the
    BLAS (``fp32``) and through oneDNN (``fp32_onednn``), and bf16 (``bf16``, oneDNN with packed weights).

    Timed in the thread's CPU time on one thread: on a machine shared with other work, wall-clock time
    measures the other processes as much as the arithmetic (we saw 10x swings on a loaded 2-core VM), CPU
    time does not. The kernels alternate; one that is very slow (bf16 emulated without hardware support)
    stops early once it has spent a third of ``budget_s``.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        products = _probe_products(rows, dim)
        with torch.inference_mode():
            best = dict.fromkeys(products, float("inf"))
            spent = dict.fromkeys(products, 0.0)
            for product in products.values():  # warm-up: oneDNN builds its kernels (and packs) on first use
                product()
            for _ in range(reps):
                for name, product in products.items():
                    if spent[name] < budget_s / len(products):
                        seconds = _cpu_seconds(product)
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


def _cpu_probe(probe: Probe | None, threads: int | None) -> tuple[dict[str, Any], str, str]:
    """(this machine's probe result, its cache key, where it came from): cached, or measured now and cached."""
    key = machine_key(threads)
    path = cache_file()
    cache = _read_cache(path)
    entry = cache.get(key)
    source = f"cached in {path}"
    if not (isinstance(entry, dict) and all(isinstance(entry.get(p), (int, float)) for p in PROBED)):
        probe = probe or probe_cpu
        started = time.perf_counter()
        entry = {p: float(v) for p, v in probe().items()}
        entry["date"] = time.strftime("%Y-%m-%d")
        source = f"measured in {time.perf_counter() - started:.2f} s"
        cache[key] = entry
        try:
            atomic_write_bytes(path, (json.dumps(cache, indent=1, sort_keys=True) + "\n").encode())
        except OSError as err:  # a read-only home still runs, it only measures again next time
            log.debug("could not cache the precision probe in %s: %s", path, err)
    return entry, key, source


def _cpu_choice(probe: Probe | None, threads: int | None) -> PrecisionChoice:
    entry, key, source = _cpu_probe(probe, threads)
    fp32, bf16 = max(entry["fp32"], entry["fp32_onednn"]), entry["bf16"]
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
        return _cpu_choice(probe, threads)
    return PrecisionChoice("fp32", f"auto: fp32 on {device.type}")


def cpu_linears(precision: str, device: torch.device | str, probe: Probe | None = None,
                threads: int | None = None) -> PackedLinears | None:
    """The :class:`~madis_stereo.model.packed.PackedLinears` a predictor runs on ``device`` in the resolved
    ``precision``, or None: on a CPU always for bf16; for fp32 when the (cached) probe measured oneDNN at least
    :data:`ONEDNN_MARGIN` times faster than the BLAS on this machine."""
    if torch.device(device).type != "cpu" or precision not in ("fp32", "bf16"):
        return None
    if precision == "bf16" or not PackedLinears.supported(device, "fp32"):
        return PackedLinears.for_inference(device, precision)
    entry, _, _ = _cpu_probe(probe, threads)
    faster = entry["fp32_onednn"] >= ONEDNN_MARGIN * entry["fp32"]
    log.info("fp32 products through %s (one core: oneDNN %.0f, BLAS %.0f GFLOP/s)", "oneDNN" if faster else "the BLAS",
             entry["fp32_onednn"], entry["fp32"])
    return PackedLinears.for_inference(device, precision, fp32_onednn=faster)
