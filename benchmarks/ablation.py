"""The paper's ablations at small scale, in the regime where MaDis's teacher matters, with seed noise measured.

1. A starting model whose DPT taps decoder layers only (MaDis's choice: encoder outputs are masked-length in
   training): the bundled model (``small`` preset, trained on the procedural world; its DPT tapped encoder
   layers too) with its DPT re-pointed at the last four decoder layers, trained with the baseline recipe (no
   masking) on rendered synthetic pairs with DENSE ground truth (the SceneFlow stage). (The ``tiny`` preset
   trained from scratch for 1500 steps stayed at the constant-prediction floor, so it could not rank
   anything.)
2. Every configuration fine-tunes that model on a SMALL set of other synthetic pairs whose ground truth is
   SPARSE like KITTI's LiDAR (none in the top rows, a random part of the non-occluded pixels below), so the
   teacher's pseudo labels fill real gaps; the same number of optimiser steps and the same number of training
   pairs for every run, one CPU thread, seeds 0..S-1 (the seed draws masks, data order and augmentation).
3. Evaluation (never training): held-out synthetic pairs with dense GT, and the real Middlebury Motorcycle
   pair at half resolution (tiled prediction).

Configurations: the CroCo-Stereo baseline; masking + reconstruction without a teacher; MaDis (the public
code's teacher) at mask ratios 0.2 / 0.4 / 0.6; and the teacher variants at 0.4: encoder EMA decoded by the
student with gradients (the public code, = MaDis 0.4), the same with detached labels, the full-network EMA.

docs/ablation.md:

    nice -n 10 python benchmarks/ablation.py --out runs/ablation --doc docs/ablation.md

Finished runs are kept in ``--out`` (``<run>/ablation.json``); rerunning skips them, ``--report`` only
rebuilds the table. ``--steps``/``--seeds``/``--start-steps`` scale it up (e.g. on a GPU: ``--device cuda``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

TEACHER_04 = {"madis": {"enabled": True, "mask_ratio": 0.4}}
RUNS: dict[str, dict[str, Any]] = {
    "baseline": {"madis": {"enabled": False}},
    # GT weight 2: MaDis counts GT pixels twice (GT loss + the GT part of the distillation loss); without a
    # teacher the same GT weight remains.
    "masking_no_teacher": {"madis": {"enabled": True, "mask_ratio": 0.4, "weights": {"gt": 2.0, "distill": 0.0}}},
    "madis_0.2": {"madis": {"enabled": True, "mask_ratio": 0.2}},
    "madis_0.4": TEACHER_04,  # = teacher "encoder, not detached" (the public code)
    "madis_0.6": {"madis": {"enabled": True, "mask_ratio": 0.6}},
    "teacher_detached": {**TEACHER_04, "teacher": {"detach": True}},
    "teacher_full": {**TEACHER_04, "teacher": {"scope": "full"}},
}
LABELS = {
    "baseline": "CroCo-Stereo baseline (no masking, no teacher)",
    "masking_no_teacher": "masking + reconstruction, no teacher (ratio 0.4)",
    "madis_0.2": "MaDis, ratio 0.2",
    "madis_0.4": "MaDis, ratio 0.4 (teacher: encoder EMA, not detached = public code)",
    "madis_0.6": "MaDis, ratio 0.6",
    "teacher_detached": "MaDis 0.4, teacher labels detached",
    "teacher_full": "MaDis 0.4, full-network EMA teacher",
}
TEACHERS = ("madis_0.4", "teacher_detached", "teacher_full")
RATIOS = ("madis_0.2", "madis_0.4", "madis_0.6")
METRICS = ("synthetic_epe", "synthetic_bad_2", "motorcycle_epe", "motorcycle_bad_2")

CROP = (64, 128)
RENDER = (80, 160)
MAX_DISPARITY = 40.0
START_PAIRS, TRAIN_PAIRS, VAL_PAIRS = 256, 48, 24
START_SEED, TRAIN_SEED, VAL_SEED = 100, 0, 12345
GT_TOP_EMPTY, GT_KEEP = 0.3, 0.4  # KITTI-like: no LiDAR return in the top 30% of rows, 40% of the rest
BATCH = 2
T_975 = {2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}  # Student t, 95% two-sided


class RenderedSet:
    """A fixed set of rendered synthetic pairs (rendered once, up front); sparse GT with ``sparse``."""

    def __init__(self, count: int, seed: int, sparse: bool) -> None:
        from madis_stereo.data import build_dataset

        source = build_dataset({"name": "synthetic", "size": list(RENDER), "length": count, "seed": seed,
                                "max_disparity": MAX_DISPARITY})
        self.items = [self._sparsify(dict(source[i]), i) if sparse else dict(source[i]) for i in range(count)]

    @staticmethod
    def _sparsify(sample: dict, index: int) -> dict:
        height = sample["disparity"].shape[0]
        keep = np.random.default_rng([TRAIN_SEED, index]).random(sample["disparity"].shape) < GT_KEEP
        keep &= sample["nonocc"]
        keep[: int(round(GT_TOP_EMPTY * height))] = False
        sample["disparity"] = np.where(keep, sample["disparity"], np.inf).astype(np.float32)
        return sample

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        return self.items[index]


def decoder_model_section(init: str) -> dict[str, Any]:
    """The architecture of checkpoint ``init`` at the ablation crop, its DPT on the last 4 decoder layers."""
    from madis_stereo.model.checkpoint import read_metadata

    arch = read_metadata(init)["config"]
    depth = arch["enc_depth"] + arch["dec_depth"]
    return {**arch, "crop": list(CROP), "dpt_hooks": list(range(depth - 4, depth)), "init": str(init)}


def base_config(steps: int, seed: int, device: str, init: str) -> dict[str, Any]:
    return {
        "model": decoder_model_section(init),
        "data": {"train": [{"name": "synthetic", "size": list(RENDER)}]},  # replaced by a RenderedSet
        "madis": {"enabled": True},
        "teacher": {"momentum": 0.99},
        "optim": {"lr": 1e-4, "batch_size": BATCH, "max_steps": steps, "warmup_steps": max(1, steps // 10),
                  "clip_grad": 1.0},
        "run": {"seed": seed, "log_every": 25, "val_every": 0, "ckpt_every": 0, "keep_last": 1, "num_workers": 0,
                "device": device},
    }


def train_start(out: Path, steps: int, device: str, init: str) -> Path:
    """Step 1: the starting model (``init`` re-pointed at decoder layers; baseline recipe, dense GT); reused
    when it exists."""
    import madis_stereo as ms
    from madis_stereo.data import AugmentConfig
    from madis_stereo.training import load_train_config, train
    from madis_stereo.training.data import TrainingDataset

    path = out / "start" / "start.safetensors"
    if path.is_file():
        return path
    repointed = out / "start" / "repointed.safetensors"  # ``init`` with its DPT on decoder layers, untrained there
    section = decoder_model_section(init)
    del section["init"]
    repointed.parent.mkdir(parents=True, exist_ok=True)
    ms.save_model(ms.load_model(init, config_overrides=section), repointed)
    cfg = base_config(steps, 0, device, str(repointed))
    cfg["madis"] = {"enabled": False}
    cfg["optim"].update(lr=2e-4, warmup_steps=max(1, steps // 20))
    dataset = TrainingDataset(RenderedSet(START_PAIRS, START_SEED, sparse=False), AugmentConfig(crop=CROP), 0)
    result = train(load_train_config(cfg), out_dir=out / "start" / "run", train_dataset=dataset)
    os.replace(result.checkpoint, path)
    return path


def evaluate(model: Any) -> dict[str, float]:
    import madis_stereo as ms
    from madis_stereo.app.demo import motorcycle

    val = RenderedSet(VAL_PAIRS, VAL_SEED, sparse=False)
    synth = [ms.stereo_metrics(ms.predict(model, s["left"], s["right"]).disparity, s["disparity"]) for s in val]
    left, right, gt = motorcycle(0.5)
    moto = ms.stereo_metrics(ms.predict(model, left, right).disparity, gt)
    return {"synthetic_epe": float(np.mean([m["epe"] for m in synth])),
            "synthetic_bad_2": float(np.mean([m["bad_2"] for m in synth])),
            "motorcycle_epe": moto["epe"], "motorcycle_bad_2": moto["bad_2"]}


def run_one(name: str, seed: int, steps: int, start: Path, out: Path, device: str) -> dict[str, Any]:
    """Fine-tune ``start`` with configuration ``name`` and ``seed``; evaluate; write ablation.json."""
    from madis_stereo.data import AugmentConfig
    from madis_stereo.training import load_train_config, train
    from madis_stereo.training.data import TrainingDataset

    cfg = base_config(steps, seed, device, str(start))
    for section, values in RUNS[name].items():
        cfg[section] = {**cfg[section], **values}
    dataset = TrainingDataset(RenderedSet(TRAIN_PAIRS, TRAIN_SEED, sparse=True), AugmentConfig(crop=CROP), seed)
    run_dir = out / f"{name}_s{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)  # an unfinished earlier attempt (no ablation.json)
    began = time.process_time()
    result = train(load_train_config(cfg), out_dir=run_dir, train_dataset=dataset)
    row = {"run": name, "seed": seed, "steps": result.step, "pairs": result.step * BATCH,
           "cpu_seconds": time.process_time() - began, **evaluate(result.engine.model.eval())}
    (run_dir / "ablation.json").write_text(json.dumps(row, indent=1))
    return row


# --- statistics ---------------------------------------------------------------------------------------
def mean_sd(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")


def paired(rows: dict[str, dict[int, dict]], a: str, b: str, metric: str) -> tuple[float, float, int]:
    """Mean of (a - b) over the seeds both finished, the half-width of its 95% CI (Student t), and n."""
    seeds = sorted(set(rows.get(a, {})) & set(rows.get(b, {})))
    diffs = [rows[a][s][metric] - rows[b][s][metric] for s in seeds]
    if len(diffs) < 2:
        return (float(np.mean(diffs)) if diffs else float("nan")), float("nan"), len(diffs)
    mean, sd = mean_sd(diffs)
    return mean, T_975.get(len(diffs) - 1, 1.96) * sd / math.sqrt(len(diffs)), len(diffs)


def compare(rows: dict, a: str, b: str, metric: str) -> str:
    """'a is lower/higher than b by X +- Y (beyond seed noise)' for a lower-is-better metric."""
    diff, half, n = paired(rows, a, b, metric)
    if math.isnan(diff):
        return "not measured"
    if math.isnan(half):
        return f"{diff:+.3f} (one seed: no noise estimate)"
    verdict = "beyond seed noise" if abs(diff) > half else "within seed noise"
    return f"{diff:+.3f} +- {half:.3f} ({verdict})"


def best_of(rows: dict, names: tuple[str, ...], metric: str) -> tuple[str | None, bool]:
    """The name with the lowest mean, and whether it beats every other beyond seed noise (paired CI)."""
    present = [n for n in names if rows.get(n)]
    if not present:
        return None, False
    best = min(present, key=lambda n: np.mean([r[metric] for r in rows[n].values()]))
    clear = all(paired(rows, best, other, metric)[0] + paired(rows, best, other, metric)[1] < 0
                for other in present if other != best)
    return best, clear and len(present) > 1


# --- report -------------------------------------------------------------------------------------------
def verdict(rows: dict) -> list[str]:
    lines = []
    metric = "synthetic_epe"
    if rows.get("madis_0.4") and rows.get("baseline"):
        diff, half, _ = paired(rows, "madis_0.4", "baseline", metric)
        if not math.isnan(half) and abs(diff) > half:
            word = "beats" if diff < 0 else "is worse than"
        else:
            word = "does not differ, beyond seed noise, from"
        lines.append(f"(a) At this scale MaDis (ratio 0.4, public-code teacher) {word} the baseline on the dense "
                     f"held-out synthetic pairs (EPE difference {compare(rows, 'madis_0.4', 'baseline', metric)}; "
                     f"on Motorcycle {compare(rows, 'madis_0.4', 'baseline', 'motorcycle_epe')}).")
    for key, names, what in (("b", TEACHERS, "teacher variant"), ("c", RATIOS, "mask ratio")):
        best, clear = best_of(rows, names, metric)
        if best is None:
            continue
        others = ", ".join(f"{LABELS[o]}: {compare(rows, o, best, metric)}" for o in names
                           if o != best and rows.get(o))
        strength = ("better than each other one beyond seed noise" if clear
                    else "the lowest mean, but not better than every other one beyond seed noise")
        lines.append(f"({key}) Best {what}: {LABELS[best]}, {strength} (synthetic EPE of the others minus "
                     f"it: {others}).")
    return lines


def markdown(rows: dict, constant: dict, start: dict, args: argparse.Namespace, wall: float | None) -> str:
    seeds = sorted({s for r in rows.values() for s in r})
    cpu = sum(r["cpu_seconds"] for runs in rows.values() for r in runs.values())
    intro = f"""# Ablation at small scale: sparse GT, small training set, seed noise measured

Produced by `benchmarks/ablation.py` (command at the end). **Budget**: one CPU thread; starting model
{args.start_steps} steps; every fine-tuning run exactly {args.steps} optimiser steps of batch {BATCH}
({args.steps * BATCH} training pairs); seeds {seeds}; {cpu / 60:.0f} CPU-minutes of fine-tuning in all
{'' if wall is None else f'({wall / 60:.0f} min of wall time on a shared 2-core machine)'}.

- **Starting model**: `{Path(args.start_from).name}` (`small` preset) with its DPT re-pointed at the last
  four decoder layers only, then {args.start_steps} steps of the baseline recipe (no masking, lr 2e-4, batch
  {BATCH}) on {START_PAIRS} rendered synthetic pairs with dense GT (seed {START_SEED}). (The `tiny` preset
  trained from scratch for 1500 steps stayed at the constant-prediction floor, so it could rank nothing.)
- **Fine-tuning set**: {TRAIN_PAIRS} other synthetic pairs ({RENDER[0]}x{RENDER[1]}, seed {TRAIN_SEED},
  disparities 0-{MAX_DISPARITY:.0f} px) with KITTI-like sparse GT: none in the top {GT_TOP_EMPTY:.0%} of the rows,
  a random {GT_KEEP:.0%} of the non-occluded pixels below (about {(1 - GT_TOP_EMPTY) * GT_KEEP:.0%} of the
  pixels in all), so the teacher's pseudo labels fill real gaps.
- **Recipe**: AdamW lr 1e-4 (10% warm-up, cosine to 0), clip 1.0, crop {CROP[0]}x{CROP[1]}, CroCo-Stereo
  augmentation, EMA momentum 0.99 (a {args.steps}-step run needs a short memory; the paper's 0.9999 averages
  over ~10k steps). All teachers start from the trained starting model. Masking without a teacher keeps GT
  weight 2 (MaDis counts GT pixels twice).
- **Evaluation** (never trained on): {VAL_PAIRS} held-out synthetic pairs (seed {VAL_SEED}, dense GT) and the
  real Middlebury Motorcycle pair at half resolution (370x250, tiled); EPE in px, bad-2 in %.
- **Noise**: mean +- sample standard deviation over the seeds; differences are paired by seed (same data
  order and augmentation) with a 95% confidence half-width (Student t); "beyond seed noise" = the interval
  excludes 0. The training set is fixed, so this is optimisation noise, not data-sampling noise.

## Verdict

"""
    lines = [intro + "\n".join(f"- {v}" for v in verdict(rows)) + "\n\n## Results\n"]
    head = "| run | seeds | synthetic EPE | synthetic bad-2 % | Motorcycle EPE | Motorcycle bad-2 % |"
    lines += [head, "|---|---|---|---|---|---|"]
    for label, row in ((constant["run"], constant), ("starting model (no fine-tuning)", start)):
        lines.append(f"| {label} | - | " + " | ".join(f"{row[m]:.2f}" for m in METRICS) + " |")
    for name in RUNS:
        runs = rows.get(name)
        if not runs:
            lines.append(f"| {LABELS[name]} | 0 | not run | | | |")
            continue
        cells = []
        for m in METRICS:
            mean, sd = mean_sd([r[m] for r in runs.values()])
            cells.append(f"{mean:.2f} +- {sd:.2f}" if not math.isnan(sd) else f"{mean:.2f}")
        lines.append(f"| {LABELS[name]} | {len(runs)} | " + " | ".join(cells) + " |")
    lines += ["", "Paired differences (row minus baseline, mean +- 95% half-width over seeds):", "",
              "| run | synthetic EPE | Motorcycle EPE |", "|---|---|---|"]
    for name in RUNS:
        if name != "baseline" and rows.get(name):
            lines.append(f"| {LABELS[name]} | {compare(rows, name, 'baseline', 'synthetic_epe')} | "
                         f"{compare(rows, name, 'baseline', 'motorcycle_epe')} |")
    argv = [a for a in sys.argv[1:] if a != "--report"]
    lines += ["", f"Command: `nice -n 10 python benchmarks/ablation.py {' '.join(argv)}`", ""]
    return "\n".join(lines)


def constant_row() -> dict[str, Any]:
    """The floor: every pixel predicted as the median GT disparity of the fine-tuning set."""
    from madis_stereo.app.demo import motorcycle
    from madis_stereo.evaluation.metrics import stereo_metrics

    train = RenderedSet(TRAIN_PAIRS, TRAIN_SEED, sparse=True)
    gt = np.concatenate([s["disparity"][np.isfinite(s["disparity"])] for s in train])
    value = float(np.median(gt))
    val = RenderedSet(VAL_PAIRS, VAL_SEED, sparse=False)
    synth = [stereo_metrics(np.full_like(s["disparity"], value), s["disparity"]) for s in val]
    moto = stereo_metrics(np.full_like(motorcycle(0.5)[2], value), motorcycle(0.5)[2])
    return {"run": f"constant {value:.1f} px (floor)", "synthetic_epe": float(np.mean([m["epe"] for m in synth])),
            "synthetic_bad_2": float(np.mean([m["bad_2"] for m in synth])), "motorcycle_epe": moto["epe"],
            "motorcycle_bad_2": moto["bad_2"]}


def load_rows(out: Path) -> dict[str, dict[int, dict]]:
    rows: dict[str, dict[int, dict]] = {}
    for path in sorted(out.glob("*_s*/ablation.json")):
        row = json.loads(path.read_text())
        if row["run"] in RUNS:
            rows.setdefault(row["run"], {})[row["seed"]] = row
    return rows


def elapsed(out: Path) -> float | None:
    """Wall time from the start of the starting model's run to the last finished fine-tuning run."""
    begin = out / "start" / "run" / "config.yaml"
    ends = [p.stat().st_mtime for p in out.glob("*_s*/ablation.json")]
    return max(ends) - begin.stat().st_mtime if begin.is_file() and ends else None


def report(args: argparse.Namespace) -> None:
    import madis_stereo as ms
    from madis_stereo.utils.files import atomic_write_bytes

    wall = elapsed(args.out)
    rows = load_rows(args.out)
    start = evaluate(ms.load_model(args.out / "start" / "start.safetensors"))
    table = markdown(rows, constant_row(), start, args, wall)
    print(table)
    if args.doc:
        args.doc.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(args.doc, table.encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60, help="optimiser steps of every fine-tuning run")
    parser.add_argument("--start-steps", type=int, default=300, help="baseline steps that make the starting model")
    parser.add_argument("--start-from", default=str(ROOT / "src/madis_stereo/weights/default.safetensors"),
                        help="checkpoint the starting model is made from (default: the bundled model)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per configuration (0..N-1)")
    parser.add_argument("--out", type=Path, default=Path("runs/ablation"))
    parser.add_argument("--doc", type=Path, help="write the report (markdown) to this file")
    parser.add_argument("--only", nargs="*", choices=list(RUNS), help="run only these configurations")
    parser.add_argument("--report", action="store_true", help="only rebuild the report from finished runs")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--one", nargs=2, metavar=("NAME", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    if args.one:
        start = args.out / "start" / "start.safetensors"
        print(json.dumps(run_one(args.one[0], int(args.one[1]), args.steps, start, args.out, args.device)))
        return
    if args.report:
        report(args)
        return
    began = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    train_start(args.out, args.start_steps, args.device, args.start_from)
    print(f"starting model ready ({time.perf_counter() - began:.0f} s)", file=sys.stderr, flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    names = args.only or list(RUNS)
    # seed-major order: an interrupted ablation still has every configuration at the first seeds
    for seed in range(args.seeds):
        for name in names:
            if (args.out / f"{name}_s{seed}" / "ablation.json").is_file():
                continue
            cmd = [sys.executable, __file__, "--one", name, str(seed), "--steps", str(args.steps),
                   "--out", str(args.out), "--device", args.device]
            with open(args.out / f"{name}_s{seed}.log", "w") as log:
                proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
            if proc.returncode:
                print(f"{name} seed {seed}: failed (see {args.out / f'{name}_s{seed}.log'})", file=sys.stderr)
                continue
            print(f"{name} seed {seed}: {proc.stdout.strip().splitlines()[-1]} "
                  f"({time.perf_counter() - began:.0f} s)", file=sys.stderr, flush=True)
    report(args)


if __name__ == "__main__":
    main()
