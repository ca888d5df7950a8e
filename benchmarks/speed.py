"""Forward speed and peak memory of a preset: eager / compiled / onnxruntime; fp32, bf16, fp16, int8, auto.

Each measurement runs in a fresh subprocess (so peak memory is its own), times the median of several
forwards after warm-up, and reports GFLOP/s against the matrix-multiply peaks (fp32 and bf16) measured in
the same process: "of peak" against the peak of the row's own precision, "of best" against the better of
the two. ``--clock cpu`` times in process CPU time instead of wall-clock time: with ``--threads 1`` that
is independent of other processes competing for the cores. ``int8`` is dynamic int8 quantisation of the
Linear layers (``torch.ao.quantization.quantize_dynamic``; activations stay fp32); ``auto`` is what
``predict`` picks on this machine. Then the accuracy of each precision against fp32: a tiled prediction of
the full-size Middlebury Motorcycle pair (scikit-image's copy, with its ground truth) by the bundled model.

    python benchmarks/speed.py --preset vitb_basedec --size 352 704
    python benchmarks/speed.py --preset vitb_basedec --precision fp32,bf16,int8,auto --threads 1 --clock cpu
    python benchmarks/speed.py --preset vitb_basedec --size 352 704 --tiled 375 1242 --precision bf16
    python benchmarks/speed.py --preset vitb_basedec --device cuda --backends eager,compiled --markdown
"""

from __future__ import annotations

import argparse
import json
import os
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


def clock_function(clock: str):
    """time.perf_counter (wall) or time.process_time (CPU time of all this process's threads)."""
    return time.process_time if clock == "cpu" else time.perf_counter


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int = 2048, reps: int = 5, clock: str = "wall") -> float:
    """Achieved GFLOP/s of an n x n x n matrix product (this machine's practical peak).

    On a CPU the best of ``torch.matmul`` (the BLAS in fp32) and oneDNN's Linear kernel (bf16 on a packed
    weight) on the same operands: on an AMD EPYC (Zen 5) oneDNN ran fp32 at twice MKL's rate and bf16 about 10%
    above ``torch.matmul``, so the matmul alone would understate what the machine can do."""
    if device.type == "cuda":
        n = 8192
    elif dtype == torch.bfloat16 and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        n = min(n, 512)  # emulated bf16 (a Zen 3: about 1 GFLOP/s): 2048^3 would take 20 s a product
    now = clock_function(clock)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    products = [lambda: a @ b]
    if device.type == "cpu" and torch.backends.mkldnn.is_available():
        weight = b
        if dtype == torch.bfloat16 and torch.ops.mkldnn._is_mkldnn_bf16_supported():
            weight = torch.ops.mkldnn._reorder_linear_weight(b, n)
        if dtype == torch.float32 or weight is not b:
            products.append(lambda: torch.ops.mkldnn._linear_pointwise(a, weight, None, "none", [], ""))
    best = float("inf")
    with torch.inference_mode():
        for product in products:
            for _ in range(2):
                product()
            sync(device)
            for _ in range(reps):
                t = now()
                product()
                sync(device)
                best = min(best, now() - t)
    return 2 * n**3 / best / 1e9


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


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` with dynamic int8 Linear layers (int8 weights, activations quantised per call)."""
    import warnings

    with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def resolved_precision(spec: dict, device: torch.device) -> str:
    """The row's precision with "auto" resolved as ``predict`` does on this machine."""
    from madis_stereo.inference.precision import resolve_precision

    if spec["precision"] != "auto":
        return spec["precision"]
    choice = resolve_precision("auto", device)
    print(f"# auto: {choice.reason}", file=sys.stderr, flush=True)
    return choice.precision


def build_runner(spec: dict, model: torch.nn.Module, device: torch.device, precision: str):
    """A callable doing one forward for the requested backend and (resolved) precision."""
    from madis_stereo.inference.precision import autocast, cpu_linears
    from madis_stereo.inference.tiling import tiled_predict
    from madis_stereo.model.packed import activate

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
    if precision == "int8":
        net = quantize_int8(net)
    amp = autocast("fp32" if precision == "int8" else precision, device)
    # "eager" is what Predictor runs (on a CPU: Linear layers through oneDNN, see cpu_linears); "unpacked" is
    # the module's own Linear under plain autocast
    packed = cpu_linears(precision, device) if backend == "eager" else None
    tiled = spec.get("tiled")
    if tiled:  # the large pair is made once, outside the timed call
        big_l = torch.randn(1, 3, *tiled, generator=g).to(device)
        big_r = big_l.roll(-8, dims=-1)

    def run():
        with torch.inference_mode(), amp, activate(packed, net):
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

    device = torch.device(spec["device"])
    now = clock_function(spec.get("clock", "wall"))
    base_rss = PeakRSS.current()
    model = load_benchmark_model(spec, device)
    precision = resolved_precision(spec, device)
    run, left, right = build_runner(spec, model, device, precision)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(spec["warmup"]):
        run()
    sync(device)
    times = []
    for _ in range(spec["runs"]):
        t = now()
        run()
        sync(device)
        times.append(now() - t)
    # peak memory from one more forward: the sampling thread would add its own CPU time (about 1%) to the
    # timed runs' process clock
    with PeakRSS() as rss:
        run()
        sync(device)
    flops = count_flops(model, left, right) if not spec.get("tiled") else float("nan")
    peaks = {name: matmul_peak(device, dtype, clock=spec.get("clock", "wall"))
             for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    if precision == "fp16" and device.type == "cuda":
        peaks["fp16"] = matmul_peak(device, torch.float16)
    own = peaks.get(precision, float("nan"))
    best = max(peaks.values())
    seconds = statistics.median(times)
    label = f"auto={precision}" if spec["precision"] == "auto" else precision
    row = {
        "preset": spec["preset"], "size": "x".join(map(str, spec.get("tiled") or spec["size"])),
        "precision": label, "backend": spec["backend"] + (" tiled" if spec.get("tiled") else ""),
        "seconds": seconds, "min_seconds": min(times), "max_seconds": max(times), "clock": spec.get("clock", "wall"),
        "gflop": flops, "gflops": flops / seconds, "matmul_peak_gflops": own, "best_peak_gflops": best,
        "fp32_peak": peaks["fp32"], "bf16_peak": peaks["bf16"],
        "peak_fraction": flops / seconds / own, "best_fraction": flops / seconds / best,
        "peak_mem_gb": (torch.cuda.max_memory_allocated(device) if device.type == "cuda" else rss.peak) / 2**30,
        "rss_before_gb": base_rss / 2**30,
    }
    return row


def precision_accuracy(spec: dict) -> dict:
    """Disparities of the full-size Motorcycle pair (tiled) in each precision, against fp32 and the GT.

    Runs ``spec["checkpoint"]`` or the bundled model through :class:`~madis_stereo.Predictor`; ``int8`` is
    the quantised copy in fp32 autocast. Returns per precision: mean and max |d - d_fp32| (px), EPE and
    bad-2 (%) against the ground truth, and the CPU seconds of the prediction.
    """
    import skimage.data

    import madis_stereo as ms

    device = torch.device(spec["device"])
    model = ms.load_model(spec["checkpoint"]) if spec.get("checkpoint") else ms.load_default_model()
    left, right, gt = skimage.data.stereo_motorcycle()
    results, disparities = {}, {}
    for precision in ["fp32"] + [p for p in spec["precisions"] if p != "fp32"]:
        net, resolved = model, resolved_precision({"precision": precision}, device)
        if resolved == "int8":
            net, resolved = quantize_int8(model), "fp32"
        predictor = ms.Predictor(net, device=device, precision=resolved)
        started = time.process_time()
        disparities[precision] = predictor(left, right).disparity
        seconds = time.process_time() - started
        diff = np.abs(disparities[precision] - disparities["fp32"])
        metrics = ms.stereo_metrics(disparities[precision], gt)
        results[precision] = {"mean_diff": float(diff.mean()), "max_diff": float(diff.max()),
                              "epe": metrics["epe"], "bad_2": metrics["bad_2"], "cpu_seconds": seconds}
    return {"accuracy": results, "image": f"{left.shape[0]}x{left.shape[1]}"}


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


def _number(value: float, fmt: str) -> str:
    return "" if value != value else format(value, fmt)  # NaN (not measured) -> empty cell


def render_table(table: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(row) + " |" for row in table]
        lines.insert(1, "|" + "---|" * len(table[0]))
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in table)


def format_rows(rows: list[dict], markdown: bool) -> str:
    heads = ["preset", "size", "precision", "backend", "s", "min-max s", "GFLOP", "GFLOP/s", "of peak", "of best",
             "fp32 / bf16 peak", "peak mem GB"]
    table = [heads]
    for r in rows:
        if "error" in r:
            table.append([r["preset"], "", r["precision"], r["backend"], f"error: {r['error'][:60]}"]
                         + [""] * (len(heads) - 5))
            continue
        table.append([
            r["preset"], r["size"], r["precision"], r["backend"], f"{r['seconds']:.3f}",
            f"{r['min_seconds']:.2f}-{r['max_seconds']:.2f}", _number(r["gflop"], ".0f"), _number(r["gflops"], ".0f"),
            _number(100 * r["peak_fraction"], ".0f") + "%" * (r["peak_fraction"] == r["peak_fraction"]),
            _number(100 * r["best_fraction"], ".0f") + "%" * (r["best_fraction"] == r["best_fraction"]),
            f"{r['fp32_peak']:.0f} / {r['bf16_peak']:.0f}" if "fp32_peak" in r else f"{r['matmul_peak_gflops']:.0f}",
            f"{r['peak_mem_gb']:.2f}",
        ])
    return render_table(table, markdown)


def format_accuracy(result: dict, markdown: bool) -> str:
    table = [["precision", "mean abs(d - d_fp32) px", "max px", "EPE px", "bad-2 %", "CPU s"]]
    for name, r in result["accuracy"].items():
        table.append([name, f"{r['mean_diff']:.4f}", f"{r['max_diff']:.3f}", f"{r['epe']:.3f}", f"{r['bad_2']:.2f}",
                      f"{r['cpu_seconds']:.1f}"])
    return render_table(table, markdown)


def machine_line(device: str) -> str:
    from madis_stereo.inference.precision import cpu_model

    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    load = ", load {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()) if hasattr(os, "getloadavg") else ""
    return (f"{cpu_model()}, {os.cpu_count()} cores{load}, torch {torch.__version__}, "
            f"{torch.backends.cpu.get_cpu_capability()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="vitb_basedec")
    parser.add_argument("--checkpoint", help="time this checkpoint instead of a random preset")
    parser.add_argument("--size", type=int, nargs=2, default=[352, 704], metavar=("H", "W"))
    parser.add_argument("--tiled", type=int, nargs=2, metavar=("H", "W"),
                        help="also time tiled inference of an H x W image (windows of --size)")
    parser.add_argument("--tile-batch", type=int, default=1)
    parser.add_argument("--overlap", type=float, default=0.7, help="tile overlap for --tiled (default 0.7)")
    parser.add_argument("--precision", default="fp32,bf16", help="comma list of fp32, bf16, fp16, int8, auto")
    parser.add_argument("--backends", default="eager", help="comma list of eager, unpacked, compiled, onnxruntime "
                        "(unpacked: eager without the oneDNN Linear layers that a CPU Predictor uses)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="time in wall-clock or process CPU time (cpu: load-independent with --threads 1)")
    parser.add_argument("--repeat", type=int, default=1, help="measure every row this many times (in turn)")
    parser.add_argument("--no-diff", action="store_true", help="skip the accuracy of each precision against fp32")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        spec = json.loads(args.worker)
        if spec.get("threads"):
            torch.set_num_threads(spec["threads"])
        result = precision_accuracy(spec) if spec.get("accuracy") else worker(spec)
        print(json.dumps(result), flush=True)
        return
    import tempfile

    workdir = tempfile.mkdtemp(prefix="madis_speed_")
    base = {"preset": args.preset, "checkpoint": args.checkpoint, "size": args.size, "device": args.device,
            "threads": args.threads, "runs": args.runs, "warmup": args.warmup, "workdir": workdir,
            "tile_batch": args.tile_batch, "overlap": args.overlap, "clock": args.clock}
    precisions = args.precision.split(",")
    rows = []
    for _ in range(args.repeat):
        for backend in args.backends.split(","):
            for precision in precisions:
                if backend == "onnxruntime" and precision != "fp32":
                    continue
                rows.append(run_subprocess({**base, "backend": backend, "precision": precision}))
                print(f"# {rows[-1]}", file=sys.stderr, flush=True)
                if args.tiled:
                    rows.append(run_subprocess({**base, "backend": backend, "precision": precision,
                                                "tiled": args.tiled, "runs": max(1, args.runs // 2), "warmup": 1}))
                    print(f"# {rows[-1]}", file=sys.stderr, flush=True)
    threads = args.threads or torch.get_num_threads()
    print(f"# {machine_line(args.device)}; {time.strftime('%Y-%m-%d %H:%M')}; {threads} threads; {args.clock} "
          f"clock; median of {args.runs} runs after {args.warmup} warm-up")
    print(format_rows(rows, args.markdown))
    if not args.no_diff:
        result = run_subprocess({**base, "precision": "", "backend": "", "accuracy": True,
                                 "precisions": precisions})
        if "accuracy" in result:
            print(f"\nMotorcycle pair ({result['image']}, tiled) with {args.checkpoint or 'the bundled model'}:")
            print(format_accuracy(result, args.markdown))
        else:
            print(f"\naccuracy run failed: {result.get('error')}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
