"""Score a training run's final student on the real Motorcycle pair and write it as the bundled checkpoint.

    python scripts/bundle_model.py RUN_DIR OUT_DIR [--shards 2]

Writes OUT_DIR/default.safetensors (fp16 weights, provenance incl. the Motorcycle metrics in the header),
or with --shards N the same weights split over N files (for transfers with a per-file size limit; join
them with --join).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

import madis_stereo as ms
from madis_stereo.app.demo import MOTORCYCLE_MAX_DISPARITY, motorcycle
from madis_stereo.model.checkpoint import header_config, load_weights, read_metadata, read_weights
from madis_stereo.training.state import list_checkpoints


def latest_checkpoint(run_dir: Path) -> Path:
    ckpts = list_checkpoints(run_dir)
    if not ckpts:
        raise SystemExit(f"no ckpt_step*.safetensors in {run_dir}")
    return ckpts[-1][1]


def score(model: torch.nn.Module, device: str) -> dict:
    left, right, gt = motorcycle()
    start = time.perf_counter()
    pred = ms.predict(model, left, right, device=device, precision="bf16" if device == "cuda" else "fp32")
    seconds = time.perf_counter() - start
    metrics = ms.stereo_metrics(pred.disparity, gt)
    from madis_stereo.evaluation.baselines import sgbm_disparity

    sgbm = ms.stereo_metrics(sgbm_disparity(left, right, max_disparity=MOTORCYCLE_MAX_DISPARITY), gt)
    return {"motorcycle": {k: metrics[k] for k in ("epe", "bad_1", "bad_2", "bad_3", "d1")},
            "motorcycle_sgbm_bad_2": sgbm["bad_2"], "motorcycle_seconds": seconds}


def write_shards(model: torch.nn.Module, out: Path, shards: int, metadata: dict) -> None:
    """The file ``save_model`` writes, its tensors split over ``shards`` files that each keep its header."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    whole = ms.save_model(model, out / "default.safetensors", dtype=torch.float16, **metadata)
    with safe_open(str(whole), framework="pt") as fh:
        header = fh.metadata()
    state = read_weights(whole)
    whole.unlink()
    parts: list[dict[str, torch.Tensor]] = [{} for _ in range(shards)]
    for key in sorted(state, key=lambda k: -state[k].numel()):  # largest first, into the lightest shard
        min(parts, key=lambda p: sum(v.numel() for v in p.values()))[key] = state[key]
    for i, part in enumerate(parts):
        save_file(part, str(out / f"default.part{i}.safetensors"), metadata=header)


def join_shards(folder: Path, target: Path) -> None:
    parts = sorted(folder.glob("default.part*.safetensors"))
    header = read_metadata(parts[0])
    state: dict[str, torch.Tensor] = {}
    for p in parts:
        state.update(read_weights(p))
    model = ms.StereoModel(header_config(parts[0], header))
    load_weights(model, state, str(folder))
    ms.save_model(model, target, dtype=torch.float16, **header["metadata"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--shards", type=int, default=1)
    parser.add_argument("--join", action="store_true", help="join OUT shards from RUN_DIR into OUT_DIR file")
    args = parser.parse_args()
    if args.join:
        join_shards(args.run_dir, args.out_dir)
        return
    ckpt = latest_checkpoint(args.run_dir)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, meta = ms.load_model(ckpt, map_location=device, return_metadata=True)
    scores = score(model, device)
    print(json.dumps(scores), file=sys.stderr)
    meta.pop("train_config", None)
    metadata = {**meta, **scores, "source_checkpoint": ckpt.name, "torch": torch.__version__,
                "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu"}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    if args.shards > 1:
        write_shards(model, args.out_dir, args.shards, metadata)
    else:
        ms.save_model(model, args.out_dir / "default.safetensors", dtype=torch.float16, **metadata)


if __name__ == "__main__":
    main()
