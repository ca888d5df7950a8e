"""GPU throughput and training memory in one short, time-limited run (benchmarks/gpu_speed.sh wraps it).

Measures, each section only while ``--deadline`` seconds are not spent (results print as they come, so a
run cut short by the wrapper's hard limit keeps what it measured):

1. the fp32 and bf16 matrix-multiply peaks (8192^3 on CUDA);
2. the forward of ``--preset`` at ``--batch`` pairs of ``--size`` in bf16: pairs/s and the fraction of the
   bf16 peak, eager and (``--compile``) ``torch.compile(mode="reduce-overhead")``, i.e. CUDA graphs for the
   fixed shape;
3. ``Predictor.predict_batch`` on ``--batch`` uint8 pairs (what ``predict --batch`` runs over a folder):
   pairs/s end to end, with the transfers and the normalisation;
4. (run right after the peaks) the bundled recipe's step (``--recipe-preset`` at ``--recipe-size``,
   CroCo-Stereo objective, bf16) at each of ``--recipe-batches``: pairs/s, to check that the recipe's batch
   keeps the GPU, not the host, busy;
5. a MaDis training step of ``--train-preset`` at ``--train-batch`` x ``--train-size`` in bf16 with
   ``optim.activation_checkpointing`` on and off: seconds per step and peak memory (CUDA: the allocator's
   peak), attention forced onto the flash kernel of ``scaled_dot_product_attention`` on CUDA.

    bash benchmarks/gpu_speed.sh                       # on the GPU machine: writes gpu_speed.md
    python benchmarks/gpu_speed.py --device cpu --preset tiny --size 64 128 --batch 2 \\
        --train-preset tiny --train-size 64 128 --train-batch 1 \\
        --recipe-preset tiny --recipe-size 64 128 --recipe-batches 1,2   # the CPU check of the script itself
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from speed import count_flops, matmul_peak, sync  # noqa: E402
from train_speed import make_batch, make_engine, time_steps  # noqa: E402

import madis_stereo as ms  # noqa: E402
from madis_stereo.inference.precision import autocast, resolve_precision  # noqa: E402

ROWS: list[str] = []


def emit(cells: list[str]) -> None:
    """Print one markdown table row now (flushed: a hard time limit keeps what was measured)."""
    ROWS.append("| " + " | ".join(cells) + " |")
    print(ROWS[-1], flush=True)


def model_precision(device: torch.device) -> str:
    """The precision of the model rows: bf16 on a GPU; on a CPU the faster of bf16 and fp32 on this one (the
    cached probe, or ``MADIS_STEREO_PRECISION``), since bf16 without the CPU's bf16 kernels (a Zen 3, an Intel
    without AMX) is emulated at a few GFLOP/s and the rows would take many minutes to say nothing useful."""
    return "bf16" if device.type == "cuda" else resolve_precision("auto", device).precision


def timed(fn, device: torch.device, warmup: int, runs: int) -> list[float]:
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def forward_rows(args: argparse.Namespace, device: torch.device, prec: str, peak: float, left_s) -> None:
    torch.manual_seed(0)
    model = ms.StereoModel(ms.ModelConfig.preset(args.preset)).to(device).eval()
    h, w = args.size
    g = torch.Generator().manual_seed(0)
    left = torch.randn(args.batch, 3, h, w, generator=g).to(device)
    right = left.roll(-8, dims=-1)
    gflop_pair = count_flops(model, left[:1], right[:1])
    variants = [("eager", model)]
    if args.compile:
        variants.append(("compiled (CUDA graphs)" if device.type == "cuda" else "compiled",
                         torch.compile(model, mode="reduce-overhead" if device.type == "cuda" else "default")))
    for name, net in variants:
        if left_s() < args.section_s:
            emit([f"forward {name}", "skipped: out of time", "", "", ""])
            continue

        def run(net=net):
            with torch.inference_mode(), autocast(prec, device):
                return net(left, right).disparity

        started = time.perf_counter()
        run()  # the first call (compilation, CUDA graph capture) is timed apart
        sync(device)
        first = time.perf_counter() - started
        times = timed(run, device, args.warmup, args.runs)
        seconds = statistics.median(times)
        pairs_s = args.batch / seconds
        emit([f"forward {name}, batch {args.batch}, {h}x{w}, {prec}", f"{pairs_s:.1f} pairs/s",
              f"{100 * gflop_pair * pairs_s / peak:.0f}% of {prec} peak",
              f"{seconds * 1000:.1f} ms/batch (first call {first:.1f} s)",
              f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB" if device.type == "cuda" else ""])
    if left_s() < args.section_s:
        emit(["predict_batch", "skipped: out of time", "", "", ""])
        return
    rng = np.random.default_rng(0)
    pairs = [tuple(rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(2)) for _ in range(args.batch)]
    predictor = ms.Predictor(model, device=device, crop=(h, w), precision="auto")
    times = timed(lambda: predictor.predict_batch(pairs), device, 1, max(1, args.runs // 2))
    seconds = statistics.median(times)
    fraction = gflop_pair * args.batch / seconds / peak
    emit([f"Predictor.predict_batch, {args.batch} uint8 pairs {h}x{w}, {predictor.precision}",
          f"{args.batch / seconds:.1f} pairs/s", f"{100 * fraction:.0f}% of {prec} peak",
          f"{seconds * 1000:.1f} ms/batch", ""])


def flash_only(device: torch.device) -> contextlib.AbstractContextManager:
    """On CUDA: attention must take the flash kernel (an error otherwise, rather than a silent fallback)."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION])


def training_rows(args: argparse.Namespace, device: torch.device, prec: str, left_s) -> None:
    size = tuple(args.train_size)
    amp = "bf16" if prec == "bf16" else "none"
    for checkpointing in (True, False):
        label = (f"MaDis train step {args.train_preset}, batch {args.train_batch}, {size[0]}x{size[1]}, {prec}, "
                 f"checkpointing {'on' if checkpointing else 'off'}")

        def measure(checkpointing: bool = checkpointing) -> list[str]:
            engine = make_engine(args.train_preset, True, amp, device, size, checkpointing)
            batch = make_batch(args.train_batch, size)
            with flash_only(device):
                times = timed_steps(engine, batch, args.train_steps)
            return [f"{statistics.median(times):.3f} s/step", f"min {min(times):.3f} max {max(times):.3f}",
                    "flash attention" if device.type == "cuda" else ""]

        guarded_row(label, device, measure, left_s() >= args.section_s, fits_24gb=True)


def recipe_rows(args: argparse.Namespace, device: torch.device, prec: str, left_s) -> None:
    """The bundled recipe's step (``configs/bundled_small.yaml``: CroCo-Stereo objective, dense GT, bf16) at
    each of ``--recipe-batches``: how far a bigger batch buys pairs/s before the GPU, not the host, is the limit.
    The batches sit on the device already, as the device renderer's do (its own cost is not in these rows)."""
    size = tuple(args.recipe_size)
    amp = "bf16" if prec == "bf16" else "none"
    for batch_size in args.recipe_batches:
        label = f"recipe step {args.recipe_preset}, batch {batch_size}, {size[0]}x{size[1]}, {prec}"

        def measure(batch_size: int = batch_size) -> list[str]:
            engine = make_engine(args.recipe_preset, False, amp, device, size)
            batch = {k: v.to(device) for k, v in make_batch(batch_size, size, dense=True).items()}
            times = time_steps(engine, batch, warmup=2, steps=args.recipe_steps)
            seconds = statistics.median(times)
            return [f"{batch_size / seconds:.0f} pairs/s", f"{seconds * 1000:.1f} ms/step",
                    f"min {min(times) * 1000:.1f} max {max(times) * 1000:.1f} ms"]

        guarded_row(label, device, measure, left_s() >= args.section_s)


def guarded_row(label: str, device: torch.device, measure, in_time: bool, fits_24gb: bool = False) -> None:
    """One table row from ``measure()`` (three cells) and the CUDA allocator's peak; out of memory, a failure
    or no time left is said in the row instead."""
    if not in_time:
        emit([label, "skipped: out of time", "", "", ""])
        return
    try:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        cells = measure()
        memory = ""
        if device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(device)
            memory = f"{peak / 2**30:.2f} GiB peak" + (f", {'fits' if peak < 24e9 else 'over'} 24 GB" if fits_24gb
                                                       else "")
        emit([label, *cells, memory])
    except torch.OutOfMemoryError:
        emit([label, "out of memory", "", "", ""])
    except RuntimeError as err:
        emit([label, f"failed: {str(err).splitlines()[0][:100]}", "", "", ""])
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def timed_steps(engine, batch: dict, steps: int) -> list[float]:
    return time_steps(engine, batch, warmup=1, steps=steps)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--preset", default="vitb_basedec")
    p.add_argument("--size", type=int, nargs=2, default=(352, 704), metavar=("H", "W"))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--compile", action="store_true", help="also time torch.compile (CUDA graphs on CUDA)")
    p.add_argument("--train-preset", default="vitl_basedec")
    p.add_argument("--train-size", type=int, nargs=2, default=(352, 704), metavar=("H", "W"))
    p.add_argument("--train-batch", type=int, default=2)
    p.add_argument("--train-steps", type=int, default=3)
    p.add_argument("--recipe-preset", default="small")
    p.add_argument("--recipe-size", type=int, nargs=2, default=(256, 512), metavar=("H", "W"))
    p.add_argument("--recipe-batches", type=lambda t: [int(b) for b in t.split(",")], default=[32, 64, 128],
                   help="comma list of batch sizes for the bundled recipe's step (default 32,64,128)")
    p.add_argument("--recipe-steps", type=int, default=10)
    p.add_argument("--deadline", type=float, default=80.0, help="seconds; sections that would start later are skipped")
    p.add_argument("--section-s", type=float, default=5.0, help="a section starts only with this many seconds left")
    p.add_argument("--skip-train", action="store_true")
    args = p.parse_args(argv)
    started = time.perf_counter()

    def left_s() -> float:
        return args.deadline - (time.perf_counter() - started)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_speed.py: error: --device cuda but torch sees no CUDA device", file=sys.stderr)
        return 2
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"{device} ({torch.get_num_threads()} threads)")
    print(f"# {name}, torch {torch.__version__}, {time.strftime('%Y-%m-%d %H:%M')}; median of {args.runs} runs")
    peaks = {p_: matmul_peak(device, dt) for p_, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    print("\n| measurement | throughput | fraction | time | memory |\n|---|---|---|---|---|")
    emit(["matrix-multiply peak", f"fp32 {peaks['fp32']:.0f} GFLOP/s", f"bf16 {peaks['bf16']:.0f} GFLOP/s", "", ""])
    prec = model_precision(device)
    if not args.skip_train:  # first: a few seconds that size the bundled recipe's batch (issue #11's training)
        recipe_rows(args, device, prec, left_s)
    forward_rows(args, device, prec, peaks[prec], left_s)
    if not args.skip_train:
        training_rows(args, device, prec, left_s)
    print(f"\n# {time.perf_counter() - started:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
