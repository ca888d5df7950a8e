"""Seconds per training step: CroCo-Stereo baseline vs MaDis-Stereo (student + EMA teacher + both decoder passes).

One optimiser step = the trainer's own ``Engine.step`` (forward, losses, backward, AdamW, EMA) on a random
batch; the median over ``--steps`` steps after ``--warmup`` steps is reported. ``--profile`` adds, for the
MaDis step, the time of each phase (the engine's ``train/...`` profiler ranges) and the costliest operators.

    python benchmarks/train_speed.py                                  # vitb_basedec, batch 1, 224x448, CPU
    python benchmarks/train_speed.py --precisions fp32 --profile
    python benchmarks/train_speed.py --device cuda --precisions fp32,bf16,fp16 --batch 6 --size 352 704
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import madis_stereo as ms  # noqa: E402
from madis_stereo.training import Engine, load_train_config  # noqa: E402
from madis_stereo.training.distributed import DistEnv  # noqa: E402

MADIS_HOOKS = {"vitb_basedec": [13, 16, 19, 23]}


def make_engine(preset: str, madis: bool, amp: str, device: torch.device, crop: tuple[int, int],
                checkpointing: bool = False) -> Engine:
    model = {"preset": preset, "crop": list(crop)}
    if madis and preset in MADIS_HOOKS:
        model["dpt_hooks"] = MADIS_HOOKS[preset]
    elif madis:
        arch = ms.ModelConfig.preset(preset)
        model["dpt_hooks"] = [arch.enc_depth + arch.dec_depth - 1 - i * (arch.dec_depth // 4) for i in (3, 2, 1, 0)]
    cfg = load_train_config({"model": model, "data": {"train": [{"name": "synthetic"}]},
                             "madis": {"enabled": madis},
                             "optim": {"amp": amp, "activation_checkpointing": checkpointing}})
    torch.manual_seed(0)
    env = DistEnv(rank=0, world_size=1, local_rank=0, device=device)
    return Engine(ms.StereoModel(cfg.model.arch), cfg, env)


def make_batch(batch: int, size: tuple[int, int], dense: bool = False) -> dict:
    """Random images and GT; sparse GT (left columns invalid, as in KITTI) makes the teacher run."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2, batch, 3, *size), generator=g, dtype=torch.uint8)
    disparity = torch.rand(batch, 1, *size, generator=g) * 64
    if not dense:
        disparity[:, :, :, :16] = float("inf")
    return {"left": images[0], "right": images[1], "disparity": disparity}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(engine: Engine, batch: dict, warmup: int, steps: int) -> list[float]:
    times = []
    for i in range(warmup + steps):
        sync(engine.env.device)
        start = time.perf_counter()
        engine.step([batch], i, 1e-6)
        sync(engine.env.device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def profile_step(engine: Engine, batch: dict, top: int) -> None:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if engine.env.device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        engine.step([batch], 10_000, 1e-6)
        sync(engine.env.device)
    events = prof.key_averages()
    phases: dict[str, float] = {}
    for e in events:
        if e.key.startswith("train/"):
            phases[e.key] = phases.get(e.key, 0.0) + e.cpu_time_total
    total = sum(phases.values()) or 1.0
    print("\nMaDis step by phase (profiler ranges, host time incl. children; on CUDA it includes waiting):")
    for key, value in sorted(phases.items(), key=lambda kv: -kv[1]):
        print(f"  {key:24s} {value / 1e6:7.3f} s  {100 * value / total:5.1f} %")
    print(f"\nTop {top} operators by self time:")
    print(events.table(sort_by="self_cpu_time_total", row_limit=top))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="vitb_basedec")
    p.add_argument("--size", type=int, nargs=2, default=(224, 448), metavar=("H", "W"))
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--modes", default="baseline,madis,madis_dense",
                   help="baseline (CroCo-Stereo), madis (sparse GT: the teacher runs), madis_dense (dense GT: the "
                        "teacher is skipped, its labels would be unused)")
    p.add_argument("--precisions", default="fp32,bf16", help="comma list of fp32, bf16, fp16 (fp16: CUDA only)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    p.add_argument("--profile", action="store_true", help="phase breakdown and top operators of a MaDis step")
    p.add_argument("--checkpointing", action="store_true", help="optim.activation_checkpointing (less memory)")
    p.add_argument("--top", type=int, default=15)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    size = tuple(args.size)
    print(f"{args.preset}, batch {args.batch}, {size[0]}x{size[1]}, {device} "
          f"({torch.get_num_threads()} threads), torch {torch.__version__}; median of {args.steps} steps "
          f"after {args.warmup} warm-up steps")
    rows = []
    for mode in args.modes.split(","):
        for precision in args.precisions.split(","):
            amp = "none" if precision == "fp32" else precision
            engine = make_engine(args.preset, mode.startswith("madis"), amp, device, size, args.checkpointing)
            batch = make_batch(args.batch, size, dense=mode == "madis_dense")
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            times = time_steps(engine, batch, args.warmup, args.steps)
            rows.append((mode, precision, statistics.median(times), min(times), max(times)))
            memory = ""
            if device.type == "cuda":
                memory = f", peak {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB"
            print(f"  {mode:11s} {precision:5s} median {rows[-1][2]:7.3f} s/step  (min {min(times):.3f}, "
                  f"max {max(times):.3f}{memory})", flush=True)
            if args.profile and mode == "madis" and precision == args.precisions.split(",")[0]:
                profile_step(engine, batch, args.top)
            del engine
            gc.collect()
    print("\n| mode | precision | s/step (median) | min | max |\n|---|---|---|---|---|")
    for mode, precision, med, lo, hi in rows:
        print(f"| {mode} | {precision} | {med:.3f} | {lo:.3f} | {hi:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
