"""Pairs per second of the synthetic stereo renderers and of a training step, on the machine at hand.

Rows: the batched torch renderer (``training.rendering``, what ``data.render_on_device`` trains on) on the
CPU and, when present, on CUDA; the NumPy/OpenCV reference renderer on one core (what each DataLoader worker
renders); one training step of a preset (the bundled recipe's objective: CroCo-Stereo GT loss, dense
synthetic GT) on a random batch; on CUDA also a step fed by the device renderer (render + step, the pace of
a ``render_on_device`` run). Medians over ``--runs`` after one warm-up.

    python benchmarks/render_speed.py                          # 256x512, the bundled recipe's world, CPU
    python benchmarks/render_speed.py --device cuda --render-batch 256 --train-batch 32 --amp bf16
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import cv2
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from speed import machine_line, sync  # noqa: E402
from train_speed import make_batch, make_engine, time_steps  # noqa: E402

from madis_stereo.data import SyntheticConfig, SyntheticStereo  # noqa: E402
from madis_stereo.training.rendering import DeviceBatches  # noqa: E402


def timed(fn, runs: int, device: torch.device) -> float:
    """Median seconds of ``fn()`` over ``runs`` calls after one warm-up call."""
    times = []
    for i in range(runs + 1):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def torch_renderer(cfg: SyntheticConfig, batch: int, device: torch.device, runs: int) -> float:
    batches = DeviceBatches(cfg, batch, device, ahead=1)
    counter = iter(range(10**9))
    return batch / timed(lambda: batches.batch(next(counter)), runs, device)


def reference_renderer(cfg: SyntheticConfig, runs: int) -> float:
    cv2.setNumThreads(0)  # one core, as in a DataLoader worker
    dataset = SyntheticStereo(cfg)
    counter = iter(range(10**9))
    return 1 / timed(lambda: dataset[next(counter)], runs, torch.device("cpu"))


def train_step(preset: str, size: tuple[int, int], batch: int, amp: str, device: torch.device, runs: int,
               source: DeviceBatches | None = None) -> float:
    """Pairs per second of ``Engine.step`` on a fixed random batch, or on batches from ``source`` (timed over
    whole render cycles of ``source.ahead`` steps, so that the rendering is counted in full)."""
    engine = make_engine(preset, False, amp, device, size)
    if source is None:
        fixed = {k: v.to(device) for k, v in make_batch(batch, size, dense=True).items()}
        return batch / statistics.median(time_steps(engine, fixed, 1, runs))
    counter = iter(range(10**9))

    def cycle() -> None:
        for _ in range(source.ahead):
            engine.step([source.batch(next(counter))], 0, 1e-6)

    return batch * source.ahead / timed(cycle, runs, device)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, nargs=2, default=(256, 512), metavar=("H", "W"))
    p.add_argument("--max-disparity", type=float, default=96.0)
    p.add_argument("--device", default="cpu", help="cpu, or cuda (the CPU rows are measured too)")
    p.add_argument("--render-batch", type=int, default=4, help="pairs per torch render call")
    p.add_argument("--train-batch", type=int, default=2)
    p.add_argument("--preset", default="small")
    p.add_argument("--amp", default="none", help="training step precision: none, bf16, fp16")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--reference-runs", type=int, default=10)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    size = tuple(args.size)
    cfg = SyntheticConfig(size=size, max_disparity=args.max_disparity, occlusion_mask=False)
    cpu, device = torch.device("cpu"), torch.device(args.device)
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"# {machine_line('cpu')} ({torch.get_num_threads()} threads); load average {load}")
    if device.type == "cuda":
        print(f"# {machine_line(args.device)}")
    print(f"# {size[0]}x{size[1]}, max disparity {args.max_disparity:g}; median of {args.runs} runs after 1 warm-up")
    rows = [("torch renderer", "cpu", f"batch {args.render_batch}",
             torch_renderer(cfg, args.render_batch, cpu, args.runs)),
            ("NumPy reference renderer", "cpu, 1 core", "1 pair", reference_renderer(cfg, args.reference_runs))]
    if device.type == "cuda":
        rows.append(("torch renderer", str(device), f"batch {args.render_batch}",
                     torch_renderer(cfg, args.render_batch, device, args.runs)))
    rows.append((f"train step, {args.preset} (GT loss, {args.amp})", str(device), f"batch {args.train_batch}",
                 train_step(args.preset, size, args.train_batch, args.amp, device, args.runs)))
    if device.type == "cuda":
        source = DeviceBatches(cfg, args.train_batch, device)
        rows.append((f"train step fed by the device renderer ({source.ahead} batches per render)", str(device),
                     f"batch {args.train_batch}",
                     train_step(args.preset, size, args.train_batch, args.amp, device, args.runs, source)))
    print("\n| what | device | batch | pairs/s |\n|---|---|---|---|")
    for what, where, batch, rate in rows:
        print(f"| {what} | {where} | {batch} | {rate:.3g} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
