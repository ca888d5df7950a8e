"""The paper's ablations at small scale, in a data-scarce setting, with one fixed compute budget per run.

Runs: (a) CroCo-Stereo baseline (no masking, no teacher), (b) masking only (reconstruction losses, no
teacher), (c) MaDis (masking + EMA teacher), (d) MaDis with mask ratios 0.2 / 0.6, (e) MaDis with the
encoder-only teacher of the public code. Every run trains the ``tiny`` preset (DPT on decoder layers only),
or with ``--init`` fine-tunes a trained checkpoint, from the same seed for the same wall-clock budget on
one CPU thread, on the same small fixed training set of synthetic pairs whose ground truth is sparse
(non-occluded pixels only, then a random 40% of them, like LiDAR ground truth), so that the teacher's
pseudo labels fill real gaps. Evaluation: held-out synthetic pairs (dense GT) and the real Middlebury
Motorcycle pair at half resolution.

docs/ablation.md (fine-tuning the bundled model) and docs/ablation_scratch.md (tiny from scratch):

    python benchmarks/ablation.py --budget 720 --init src/madis_stereo/weights/default.safetensors
           --out runs/ablation_ft --doc docs/ablation.md
    python benchmarks/ablation.py --budget 720 --out runs/ablation --doc docs/ablation_scratch.md
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

RUNS: dict[str, dict[str, Any]] = {
    "a_baseline": {"madis": {"enabled": False}},
    # GT weight 2: MaDis counts GT pixels twice (GT loss + GT part of the distillation loss); without a
    # teacher the same GT weight remains.
    "b_masking_only": {"madis": {"enabled": True, "mask_ratio": 0.4, "weights": {"gt": 2.0, "distill": 0.0}}},
    "c_madis_0.4": {"madis": {"enabled": True, "mask_ratio": 0.4}},
    "d_madis_0.2": {"madis": {"enabled": True, "mask_ratio": 0.2}},
    "d_madis_0.6": {"madis": {"enabled": True, "mask_ratio": 0.6}},
    "e_madis_encoder_teacher": {"madis": {"enabled": True, "mask_ratio": 0.4}, "teacher": {"scope": "encoder"}},
}
TRAIN_PAIRS, VAL_PAIRS, SEED = 96, 24, 0
CROP = (128, 256)
RENDER = (144, 288)
MAX_DISPARITY = 32.0
GT_KEEP = 0.4


class ScarceSparseSet:
    """A fixed set of rendered synthetic pairs (cached) whose GT keeps ``GT_KEEP`` of the non-occluded pixels."""

    def __init__(self, count: int, seed: int) -> None:
        from madis_stereo.data import build_dataset

        self.source = build_dataset({"name": "synthetic", "size": list(RENDER), "length": count, "seed": seed,
                                     "max_disparity": MAX_DISPARITY})
        self.cache: dict[int, dict] = {}
        for i in range(count):  # render up front, so that the budget's pace is the training pace
            self[i]

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict:
        if index not in self.cache:
            sample = dict(self.source[index])
            keep = np.random.default_rng([SEED, index]).random(sample["disparity"].shape) < GT_KEEP
            keep &= sample["nonocc"]
            sample["disparity"] = np.where(keep, sample["disparity"], np.inf).astype(np.float32)
            self.cache[index] = sample
        return self.cache[index]


def model_section(init: str | None) -> dict[str, Any]:
    """tiny from scratch (DPT on decoder layers), or the architecture of ``init`` at the ablation crop."""
    if init is None:
        return {"preset": "tiny", "crop": list(CROP), "dpt_hooks": [4, 5, 6, 7]}
    from madis_stereo.model.checkpoint import read_metadata

    return {**read_metadata(init)["config"], "crop": list(CROP), "init": str(init)}


def train_config(name: str, budget: float, init: str | None = None) -> dict[str, Any]:
    base = {
        "model": model_section(init),
        "data": {"train": [{"name": "synthetic", "size": list(RENDER)}]},  # replaced by ScarceSparseSet
        "madis": {"enabled": True},
        "teacher": {"scope": "full", "momentum": 0.995},
        "optim": {"lr": 5e-4, "batch_size": 4, "max_steps": 100000, "warmup_steps": 50, "clip_grad": 1.0,
                  "time_budget_s": budget},
        "run": {"seed": SEED, "log_every": 50, "val_every": 0, "ckpt_every": 0, "keep_last": 1, "num_workers": 0,
                "device": "cpu"},
    }
    if init is not None:  # fine-tuning a trained model: a gentler learning rate
        base["optim"].update(lr=1e-4, warmup_steps=20)
    for section, values in RUNS[name].items():
        base[section] = {**base[section], **values}
    return base


def evaluate(model: Any) -> dict[str, float]:
    import madis_stereo as ms
    from madis_stereo.app.demo import motorcycle
    from madis_stereo.data import build_dataset

    val = build_dataset({"name": "synthetic", "size": list(CROP), "length": VAL_PAIRS, "seed": 12345,
                         "max_disparity": MAX_DISPARITY})
    synth = [ms.stereo_metrics(ms.predict(model, s["left"], s["right"]).disparity, s["disparity"]) for s in val]
    left, right, gt = motorcycle(0.5)
    moto = ms.stereo_metrics(ms.predict(model, left, right).disparity, gt)
    return {"synthetic_epe": float(np.mean([m["epe"] for m in synth])),
            "synthetic_bad_2": float(np.mean([m["bad_2"] for m in synth])),
            "motorcycle_epe": moto["epe"], "motorcycle_bad_2": moto["bad_2"]}


def run_one(name: str, budget: float, out: Path, init: str | None = None) -> dict[str, Any]:
    """Train and evaluate one configuration in this process (one thread)."""
    import torch

    torch.set_num_threads(1)
    from madis_stereo.data import AugmentConfig
    from madis_stereo.training import load_train_config, train
    from madis_stereo.training.data import TrainingDataset
    from madis_stereo.training.runlog import read_metrics

    cfg = load_train_config(train_config(name, budget, init))
    dataset = TrainingDataset(ScarceSparseSet(TRAIN_PAIRS, SEED), AugmentConfig(crop=CROP), SEED)
    start = time.perf_counter()
    result = train(cfg, out_dir=out / name, train_dataset=dataset)
    seconds = time.perf_counter() - start
    records = read_metrics(out / name / "metrics.jsonl", kind="train")
    gt = np.array([r["gt"] for r in records])
    tail = gt[int(len(gt) * 0.8):]
    row = {"run": name, "steps": result.step, "train_seconds": seconds, "final_gt_loss": float(tail.mean()),
           "loss_spread": float(tail.std()), **evaluate(result.engine.model.eval())}
    (out / name / "ablation.json").write_text(json.dumps(row, indent=1))
    return row


SETUP = """# Ablation at small scale (data-scarce)

Produced by `benchmarks/ablation.py` (command at the end). Every run {what} from seed {seed} on one CPU
thread for the same wall-clock budget ({budget:.0f} s; two runs at a time on a 2-core machine), AdamW
{optim} (cosine to 0 at the budget), batch 4, crop
{crop[0]}x{crop[1]}, CroCo-Stereo augmentation, EMA momentum 0.995 (a short run needs a short memory; the
paper's 0.9999 averages over ~10k steps). Training set: {train} synthetic pairs ({render[0]}x{render[1]}, seed
{seed}, disparities 0-{maxd:.0f} px) whose GT keeps {keep:.0%} of the non-occluded pixels (sparse, like LiDAR
GT), so the teacher's pseudo labels fill real gaps. Evaluation: {val} held-out synthetic pairs (seed 12345,
dense GT) and the real Middlebury Motorcycle pair at half resolution (370x250), tiled prediction; bad-2 in %,
missing = error. "spread" is the standard deviation of the GT loss over the last 20% of the steps
(training stability). Masking-only keeps GT weight 2 (MaDis counts GT pixels twice).

"""


def markdown(rows: list[dict[str, Any]], command: str, budget: float, init: str | None) -> str:
    if init is None:
        what, optim = "trains the `tiny` preset (DPT on decoder layers [4, 5, 6, 7])", "lr 5e-4 (50 warm-up steps)"
    else:
        what = (f"fine-tunes `{Path(init).name}` (all runs start from these weights, and so does the "
                "teacher; its DPT hooks are kept, encoder hooks see zeros at masked slots)")
        optim = "lr 1e-4 (20 warm-up steps)"
    intro = SETUP.format(what=what, optim=optim, seed=SEED, budget=budget, crop=CROP, train=TRAIN_PAIRS,
                         render=RENDER, maxd=MAX_DISPARITY, keep=GT_KEEP, val=VAL_PAIRS)
    head = ("| run | steps | synthetic EPE | synthetic bad-2 % | Motorcycle (1/2 res) EPE | Motorcycle bad-2 % "
            "| GT loss (last 20%) | spread (std) |\n|---|---|---|---|---|---|---|---|")
    lines = [head]

    def loss(value: float) -> str:
        return "-" if math.isnan(value) else f"{value:.3f}"

    for r in rows:
        lines.append(f"| {r['run']} | {r['steps']} | {r['synthetic_epe']:.2f} | {r['synthetic_bad_2']:.1f} | "
                     f"{r['motorcycle_epe']:.2f} | {r['motorcycle_bad_2']:.1f} | {loss(r['final_gt_loss'])} | "
                     f"{loss(r['loss_spread'])} |")
    return intro + "\n".join(lines) + f"\n\nCommand: `{command}`\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=480.0, help="training seconds per run (default 480)")
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel, one CPU thread each")
    parser.add_argument("--out", type=Path, default=Path("runs/ablation"))
    parser.add_argument("--doc", type=Path, help="write the table (markdown) to this file")
    parser.add_argument("--only", nargs="*", help="run only these configurations")
    parser.add_argument("--report", action="store_true", help="only rebuild the table from finished runs in --out")
    parser.add_argument("--init", help="fine-tune this checkpoint instead of training tiny from scratch")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.budget, args.out, args.init)), flush=True)
        return
    names = args.only or list(RUNS)
    if args.report:
        rows = {n: json.loads((args.out / n / "ablation.json").read_text()) for n in names
                if (args.out / n / "ablation.json").is_file()}
        report(names, rows, args)
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    pending, running, rows = list(names), [], {}
    args.out.mkdir(parents=True, exist_ok=True)
    while pending or running:
        while pending and len(running) < args.jobs:
            name = pending.pop(0)
            log = open(args.out / f"{name}.log", "w")
            cmd = [sys.executable, __file__, "--one", name, "--budget", str(args.budget), "--out", str(args.out)]
            cmd += ["--init", str(args.init)] if args.init else []
            running.append((name, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=env)))
        time.sleep(2)
        for name, proc in list(running):
            if proc.poll() is None:
                continue
            running.remove((name, proc))
            out = [ln for ln in proc.stdout.read().splitlines() if ln.startswith("{")]
            if proc.returncode or not out:
                print(f"{name}: failed (see {args.out / (name + '.log')})", file=sys.stderr)
                continue
            rows[name] = json.loads(out[-1])
            print(f"{name}: {rows[name]}", file=sys.stderr, flush=True)
    report(names, rows, args)


def constant_row() -> dict[str, Any]:
    """The floor: every pixel predicted as the median GT disparity of the training set."""

    class Constant:
        config = SimpleNamespace(crop=CROP, conf_mode="conf_expsigmoid_15_3")

        def __init__(self, value: float) -> None:
            self.value = value

        def __call__(self, left: Any, right: Any) -> Any:
            import torch

            from madis_stereo.model.network import StereoOutput

            b, _, h, w = left.shape
            return StereoOutput(torch.full((b, 1, h, w), self.value), torch.zeros(b, 1, h, w))

        def to(self, device: Any) -> Constant:
            return self

        def eval(self) -> Constant:
            return self

        def parameters(self) -> Any:
            return iter(())

    train = ScarceSparseSet(TRAIN_PAIRS, SEED)
    gt = np.concatenate([train[i]["disparity"][np.isfinite(train[i]["disparity"])] for i in range(len(train))])
    value = float(np.median(gt))
    return {"run": f"constant {value:.1f} px (floor)", "steps": 0, "final_gt_loss": float("nan"),
            "loss_spread": float("nan"), **evaluate(Constant(value))}


def report(names: list[str], rows: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    ordered = [constant_row()]
    if args.init:
        import madis_stereo as ms

        start = ms.load_model(args.init, config_overrides={"crop": list(CROP)})
        ordered.append({"run": "start (no fine-tuning)", "steps": 0, "final_gt_loss": float("nan"),
                        "loss_spread": float("nan"), **evaluate(start)})
    ordered += [rows[n] for n in names if n in rows]
    argv = [a for a in sys.argv[1:] if a != "--report"]
    table = markdown(ordered, " ".join(["python", "benchmarks/ablation.py", *argv]), args.budget, args.init)
    print(table)
    if args.doc:
        args.doc.parent.mkdir(parents=True, exist_ok=True)
        args.doc.write_text(table)


if __name__ == "__main__":
    main()
