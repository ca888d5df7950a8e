"""Forward speed and peak memory of a preset: eager / compiled / onnxruntime, fp32 and bf16.

Each measurement runs in a fresh subprocess (so peak memory is its own), times the median of several
forwards after warm-up, and reports GFLOP/s against the matrix-multiply peak measured in the same run.

    python benchmarks/speed.py --preset vitb_basedec --size 352 704
    python benchmarks/speed.py --preset vitb_basedec --size 352 704 --tiled 375 1242 --precision bf16
    python benchmarks/speed.py --preset vitb_basedec --device cuda --backends eager,compiled --markdown
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------------
# measurement helpers (run inside the worker process)
# --------------------------------------------------------------------------------------------------


class PeakRSS:
    """Samples this process's resident set size in a background thread (Linux /proc; else ru_maxrss)."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def current() -> int:
        try:
            with open("/proc/self/statm") as fh:
                return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.current())
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.current())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int = 2048, reps: int = 5) -> float:
    """Achieved GFLOP/s of an n x n x n matrix product (this machine's practical peak)."""
    if device.type == "cuda":
        n = 8192
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    sync(device)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - t)
    return 2 * n**3 / min(times) / 1e9


def count_flops(model: torch.nn.Module, left: torch.Tensor, right: torch.Tensor) -> float:
    """Matmul/conv/attention FLOPs of one forward (attention counted as 4 * B * heads * Nq * Nk * d)."""
    from torch.utils.flop_counter import FlopCounterMode

    def sdpa_flops(q_shape, k_shape, v_shape, *args, **kwargs) -> int:
        b, h, nq, d = q_shape
        return 4 * b * h * nq * k_shape[-2] * d

    mapping = {}
    for name in ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_attention_math"):
        op = getattr(torch.ops.aten, name, None)
        if op is not None:
            mapping[op] = sdpa_flops  # FlopCounterMode passes shapes to custom formulas
    with torch.inference_mode(), FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        model(left, right)
    return counter.get_total_flops() / 1e9


def build_runner(spec: dict, model: torch.nn.Module, device: torch.device):
    """A callable doing one forward for the requested backend."""
    from madis_stereo.inference.tiling import tiled_predict

    h, w = spec["size"]
    g = torch.Generator().manual_seed(0)
    left = torch.randn(1, 3, h, w, generator=g).to(device)
    right = torch.randn(1, 3, h, w, generator=g).to(device)
    backend = spec["backend"]
    if backend == "onnxruntime":
        from madis_stereo.inference.export import OnnxStereoModel, export_onnx

        path = Path(spec["workdir"]) / f"{spec['preset']}_{h}x{w}.onnx"
        if not path.exists():
            export_onnx(model, path, crop=(h, w))
        net = OnnxStereoModel(path, threads=torch.get_num_threads())
    elif backend == "compiled":
        net = torch.compile(model)
    else:
        net = model
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=spec["precision"] == "bf16")
    tiled = spec.get("tiled")
    if tiled:  # the large pair is made once, outside the timed call
        big_l = torch.randn(1, 3, *tiled, generator=g).to(device)
        big_r = big_l.roll(-8, dims=-1)

    def run():
        with torch.inference_mode(), autocast:
            if tiled:
                return tiled_predict(net, big_l, big_r, crop=(h, w), overlap=spec.get("overlap", 0.7),
                                     tile_batch=spec.get("tile_batch", 1))[0]
            return net(left, right).disparity

    return run, left, right


def load_benchmark_model(spec: dict, device: torch.device) -> torch.nn.Module:
    """``spec["checkpoint"]``, or a ``spec["preset"]`` model with seed-0 random weights, in eval mode."""
    import madis_stereo as ms

    torch.manual_seed(0)
    if spec.get("checkpoint"):
        return ms.load_model(spec["checkpoint"], map_location=device)
    return ms.StereoModel(ms.ModelConfig.preset(spec["preset"])).to(device).eval()


def worker(spec: dict) -> dict:
    """One measurement in this process; returns a result row."""

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    base_rss = PeakRSS.current()
    model = load_benchmark_model(spec, device)
    run, left, right = build_runner(spec, model, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with PeakRSS() as rss:
        for _ in range(spec["warmup"]):
            run()
        sync(device)
        times = []
        for _ in range(spec["runs"]):
            t = time.perf_counter()
            run()
            sync(device)
            times.append(time.perf_counter() - t)
    flops = count_flops(model, left, right) if not spec.get("tiled") else float("nan")
    dtype = torch.bfloat16 if spec["precision"] == "bf16" else torch.float32
    peak = matmul_peak(device, dtype)
    seconds = statistics.median(times)
    row = {
        "preset": spec["preset"], "size": "x".join(map(str, spec.get("tiled") or spec["size"])),
        "precision": spec["precision"], "backend": spec["backend"] + (" tiled" if spec.get("tiled") else ""),
        "seconds": seconds, "gflop": flops, "gflops": flops / seconds, "matmul_peak_gflops": peak,
        "peak_fraction": flops / seconds / peak,
        "peak_mem_gb": (torch.cuda.max_memory_allocated(device) if device.type == "cuda" else rss.peak) / 2**30,
        "rss_before_gb": base_rss / 2**30,
    }
    return row


def disparity_difference(spec: dict) -> float:
    """Mean |bf16 - fp32| disparity (px) of one forward on the Middlebury Motorcycle pair (resized)."""
    import skimage.data

    from madis_stereo.model.preprocess import normalize

    device = torch.device(spec["device"])
    model = load_benchmark_model(spec, device)
    h, w = spec["size"]
    left, right, _ = skimage.data.stereo_motorcycle()
    tensors = []
    for img in (left, right):
        t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float()
        t = torch.nn.functional.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)
        tensors.append(normalize(t).to(device))
    with torch.inference_mode():
        fp32 = model(*tensors).disparity.float()
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            bf16 = model(*tensors).disparity.float()
    return float((bf16 - fp32).abs().mean())


# --------------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------------


def run_subprocess(spec: dict) -> dict:
    cmd = [sys.executable, __file__, "--worker", json.dumps(spec)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"preset": spec["preset"], "backend": spec["backend"], "precision": spec["precision"],
                "error": tail}
    return json.loads(lines[-1])


def format_rows(rows: list[dict], markdown: bool) -> str:
    cols = [("preset", "preset"), ("size", "size"), ("precision", "precision"), ("backend", "backend"),
            ("seconds", "s"), ("gflop", "GFLOP"), ("gflops", "GFLOP/s"), ("peak_fraction", "of peak"),
            ("matmul_peak_gflops", "matmul peak"), ("peak_mem_gb", "peak mem GB")]
    table = [[h for _, h in cols]]
    for r in rows:
        if "error" in r:
            table.append([r["preset"], "", r["precision"], r["backend"], f"error: {r['error'][:60]}"] + [""] * 5)
            continue
        table.append([
            r["preset"], r["size"], r["precision"], r["backend"], f"{r['seconds']:.3f}",
            "" if r["gflop"] != r["gflop"] else f"{r['gflop']:.0f}",
            "" if r["gflops"] != r["gflops"] else f"{r['gflops']:.0f}",
            "" if r["peak_fraction"] != r["peak_fraction"] else f"{100 * r['peak_fraction']:.0f}%",
            f"{r['matmul_peak_gflops']:.0f}", f"{r['peak_mem_gb']:.2f}",
        ])
    if markdown:
        lines = ["| " + " | ".join(row) + " |" for row in table]
        lines.insert(1, "|" + "---|" * len(table[0]))
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in table)


def machine_line(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="vitb_basedec")
    parser.add_argument("--checkpoint", help="time this checkpoint instead of a random preset")
    parser.add_argument("--size", type=int, nargs=2, default=[352, 704], metavar=("H", "W"))
    parser.add_argument("--tiled", type=int, nargs=2, metavar=("H", "W"),
                        help="also time tiled inference of an H x W image (windows of --size)")
    parser.add_argument("--tile-batch", type=int, default=1)
    parser.add_argument("--overlap", type=float, default=0.7, help="tile overlap for --tiled (default 0.7)")
    parser.add_argument("--precision", default="fp32,bf16")
    parser.add_argument("--backends", default="eager", help="comma list of eager, compiled, onnxruntime")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--no-diff", action="store_true", help="skip the bf16-vs-fp32 disparity difference")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        spec = json.loads(args.worker)
        result = {"diff": disparity_difference(spec)} if spec.get("diff") else worker(spec)
        print(json.dumps(result), flush=True)
        return
    import tempfile

    workdir = tempfile.mkdtemp(prefix="madis_speed_")
    base = {"preset": args.preset, "checkpoint": args.checkpoint, "size": args.size, "device": args.device,
            "threads": args.threads, "runs": args.runs, "warmup": args.warmup, "workdir": workdir,
            "tile_batch": args.tile_batch, "overlap": args.overlap}
    rows = []
    for backend in args.backends.split(","):
        for precision in args.precision.split(","):
            if backend == "onnxruntime" and precision != "fp32":
                continue
            rows.append(run_subprocess({**base, "backend": backend, "precision": precision}))
            print(f"# {rows[-1]}", file=sys.stderr, flush=True)
            if args.tiled:
                rows.append(run_subprocess({**base, "backend": backend, "precision": precision,
                                            "tiled": args.tiled, "runs": max(1, args.runs // 2), "warmup": 1}))
                print(f"# {rows[-1]}", file=sys.stderr, flush=True)
    print(f"# {machine_line(args.device)}; {time.strftime('%Y-%m-%d')}; median of {args.runs} runs after "
          f"{args.warmup} warm-up")
    print(format_rows(rows, args.markdown))
    if not args.no_diff:
        diff = run_subprocess({**base, "backend": "eager", "precision": "bf16", "diff": True})
        if "diff" in diff:
            print(f"\nmean |bf16 - fp32| disparity on the Motorcycle pair at {args.size[0]}x{args.size[1]}: "
                  f"{diff['diff']:.4f} px")
        else:
            print(f"\nbf16 vs fp32 difference failed: {diff.get('error')}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
