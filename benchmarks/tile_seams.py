"""Tile seams: how much the disparity jumps across tile borders, against everywhere else, per blend mode.

Tiled prediction blends overlapping windows; where a window ends (or starts) inside the image, the blend
weight of that window changes abruptly, and so may the disparity: a seam. For each pair this script runs
the model once per window (the outputs are replayed for every blend mode, so all modes blend the very same
window predictions) and measures, on the blended disparity d:

- row jump at row r: mean over x of |d[r, x] - d[r - 1, x]|; column jump likewise;
- seam ratio: mean jump across the rows (columns) where a window starts or ends inside the image, divided
  by the mean jump across all other rows (columns). 1.0 = borders look like any other row; a visible
  seam gives a ratio well above 1. ``worst`` is the largest ratio of a single border line.

With ``--synthetic N`` it also scores N synthetic scenes with exact GT (EPE, bad-2), so that a blend that
hides seams by blurring would show up as lost accuracy.

    python benchmarks/tile_seams.py --pairs /path/to/stereodemo/datasets/oak-d --synthetic 8
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch

import madis_stereo as ms
from madis_stereo.app.pairs import find_pairs
from madis_stereo.data import SyntheticStereo, read_image
from madis_stereo.inference.tiling import BLEND_MODES, tile_offsets


class Replay(torch.nn.Module):
    """Runs ``model`` on the first pass over the windows and replays its outputs on later passes."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model, self.outputs, self.calls = model, [], 0
        self.config = model.config

    def forward(self, left, right):
        if self.calls < len(self.outputs):
            out = self.outputs[self.calls]
        else:
            out = self.model(left, right)
            self.outputs.append(out)
        self.calls += 1
        return out

    def rewind(self) -> None:
        self.calls = 0


def borders(size: int, window: int, overlap: float) -> list[int]:
    """Rows (columns) b where a window starts or ends inside the image: the jump is between b - 1 and b."""
    offsets = tile_offsets(size, window, overlap)
    return sorted({o for o in offsets if o > 0} | {o + window for o in offsets if o + window < size})


def seam_ratios(disparity: np.ndarray, crop: tuple[int, int], overlap: float) -> dict[str, float]:
    out: dict[str, float] = {}
    worst = 1.0
    for axis, name in ((0, "rows"), (1, "cols")):
        d = disparity if axis == 0 else disparity.T
        jumps = np.abs(np.diff(d.astype(np.float64), axis=0)).mean(axis=1)  # jumps[r - 1]: between r - 1 and r
        lines = [b - 1 for b in borders(d.shape[0], crop[axis], overlap)]
        if not lines:
            continue
        other = np.delete(jumps, lines).mean()
        out[name] = float(jumps[lines].mean() / other)
        worst = max(worst, float(jumps[lines].max() / other))
    out["worst"] = worst
    return out


def mean_ratios(ratios: list[dict[str, float]]) -> str:
    return " / ".join(f"{np.mean([r.get(k, np.nan) for r in ratios]):.2f}" for k in ("rows", "cols", "worst"))


def run_pair(predictor: ms.Predictor, replay: Replay, left: np.ndarray, right: np.ndarray,
             blends: list[str]) -> dict[str, np.ndarray]:
    replay.outputs, results = [], {}
    for blend in blends:
        replay.rewind()
        predictor.blend = blend
        results[blend] = predictor(left, right).disparity
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=Path, help="a folder of *_left / *_right images (e.g. stereodemo's oak-d)")
    parser.add_argument("--checkpoint", help="default: the bundled model")
    parser.add_argument("--overlap", type=float, default=0.7)
    parser.add_argument("--blends", default=",".join(BLEND_MODES))
    parser.add_argument("--synthetic", type=int, default=0, help="also score N synthetic 480x640 scenes with GT")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    blends = args.blends.split(",")
    model = ms.load_model(args.checkpoint) if args.checkpoint else ms.load_default_model()
    replay = Replay(model.eval())
    predictor = ms.Predictor(replay, overlap=args.overlap, device="cpu")
    crop = predictor.crop
    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch "
          f"{torch.__version__}; model {args.checkpoint or 'bundled'}, crop {crop[0]}x{crop[1]}, "
          f"overlap {args.overlap}")
    if args.pairs is not None:
        print("| pair | " + " | ".join(f"{b} rows / cols / worst" for b in blends) + " |", flush=True)
        print("|---|" + "---|" * len(blends), flush=True)
        totals: dict[str, list[dict[str, float]]] = {b: [] for b in blends}
        start = time.perf_counter()
        pairs = find_pairs([str(args.pairs), str(args.pairs)])
        for pair in pairs:
            left, right = read_image(pair.left), read_image(pair.right)
            results = run_pair(predictor, replay, left, right, blends)
            cells = []
            for blend in blends:
                ratios = seam_ratios(results[blend], crop, args.overlap)
                totals[blend].append(ratios)
                cells.append(" / ".join(f"{ratios.get(k, float('nan')):.2f}" for k in ("rows", "cols", "worst")))
            print(f"| {pair.name} | " + " | ".join(cells) + " |", flush=True)
        means = [mean_ratios(totals[b]) for b in blends]
        print("| **mean** | " + " | ".join(f"**{m}**" for m in means) + " |", flush=True)
        print(f"({len(pairs)} pairs, {time.perf_counter() - start:.0f} s)", flush=True)
    if args.synthetic:
        world = SyntheticStereo(size=(480, 640), max_disparity=64, seed=77)
        scores: dict[str, list[dict[str, float]]] = {b: [] for b in blends}
        seams: dict[str, list[dict[str, float]]] = {b: [] for b in blends}
        for i in range(args.synthetic):
            sample = world[i]
            results = run_pair(predictor, replay, sample["left"], sample["right"], blends)
            for blend in blends:
                scores[blend].append(ms.stereo_metrics(results[blend], sample["disparity"]))
                seams[blend].append(seam_ratios(results[blend], crop, args.overlap))
        print(f"\nsynthetic 480x640, {args.synthetic} scenes (seed 77, max_disparity 64):", flush=True)
        print("| blend | EPE | bad-2 % | seam rows / cols / worst |", flush=True)
        print("|---|---|---|---|", flush=True)
        for blend in blends:
            epe = np.mean([s["epe"] for s in scores[blend]])
            bad2 = np.mean([s["bad_2"] for s in scores[blend]])
            seam = mean_ratios(seams[blend])
            print(f"| {blend} | {epe:.3f} | {bad2:.2f} | {seam} |", flush=True)


if __name__ == "__main__":
    main()
