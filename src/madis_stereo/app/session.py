"""Training sessions of the bundled model that add up: continue it, score it, keep it only when it is better.

    python -m madis_stereo.app.session run --out OUT [--deadline-s 540] [key=value ...]   # on the GPU machine
    python -m madis_stereo.app.session adopt OUT                                           # here, afterwards

``run`` (``scripts/gpu_session.sh`` is the prepared command) does, inside one deadline:

1. start weights: the package's bundled weights, or, when an earlier call on this machine kept weights
   that descend from them, those (``--state-dir``; so the second call on a warm machine continues);
2. scores them ("before") on held-out synthetic pairs (seed :data:`HELDOUT_SEED`, never a training seed)
   and on the full Motorcycle pair: bad-2 and EPE, with OpenCV SGBM alongside;
3. trains the recipe (``configs/bundled_small.yaml``) from them for the time that is left, less what
   scoring and saving need; session ``n`` renders its training pairs with seed ``n`` and shuffles with
   ``run.seed = n``, so no two sessions see the same pairs; if the device renderer fails, training starts
   again with the CPU renderer in DataLoader workers (:data:`CPU_RENDERER`) for the time left;
4. scores the result, rounded to fp16 as it would ship ("after");
5. keeps it only when its bad-2 is lower on both sets: then writes it in :data:`SHARDS` files
   ``OUT/default.part{i}.safetensors`` (each under the device's 16 MiB per-file limit);
6. writes ``OUT/session.json`` (the record), ``OUT/session.log``, ``OUT/metrics.jsonl`` (the loss curve,
   thinned to about 10k lines) and ``OUT/config.yaml``, and appends the record to
   ``benchmarks/results/bundled_sessions.jsonl``.

``adopt`` (after the device's files came back) joins the shards into the package's weights when the
session kept them (refusing weights that do not continue the package's current ones) and appends the
record to the results file; adopting the same folder twice changes nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from madis_stereo.errors import CheckpointError, ConfigError, TrainingError
from madis_stereo.model.checkpoint import default_model_path, load_model, read_metadata, read_weights, save_model
from madis_stereo.utils.files import atomic_path, atomic_write_bytes

__all__ = ["HELDOUT_SEED", "SHARDS", "adopt", "is_better", "join_shards", "lineage", "main", "run_session",
           "write_shards"]

log = logging.getLogger(__name__)

HELDOUT_SEED = 1_000_003  # the held-out synthetic pairs; session n trains on seed n (1, 2, 3, ...)
FIRST_BURST_BATCH = 32  # the first bundled model predates session metadata; its batch (bundled_small_h200_config.yaml)
SHARDS = 2  # fp16 small preset: 24 MB in two files of 12 MB
MAX_BUNDLE_BYTES = 25_000_000
RECIPE = Path("configs/bundled_small.yaml")
RESULTS = Path("benchmarks/results/bundled_sessions.jsonl")
STATE_DIR = Path("/tmp/madis_session")
SHARD_GLOB = "default.part*.safetensors"
CPU_RENDERER = ["data.render_on_device=false"]  # the fallback when the device renderer fails
RECORD_NAME = "session.json"


# --- provenance -----------------------------------------------------------------------------------
def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def lineage(metadata: dict[str, Any]) -> dict[str, int]:
    """Sessions, optimiser steps and training pairs behind a bundled checkpoint (from its metadata)."""
    steps = int(metadata.get("steps", 0))
    return {"sessions": int(metadata.get("sessions", 1)), "steps_total": int(metadata.get("steps_total", steps)),
            "pairs_total": int(metadata.get("pairs_seen_total", steps * FIRST_BURST_BATCH))}


@dataclasses.dataclass
class Start:
    """The weights a session starts from and where they came from."""

    path: Path
    sha256: str
    chain: list[str]  # sha256 of the package's weights, then of each weights kept on this machine since


def start_weights(package: Path, state_dir: Path) -> Start:
    """The package's weights, or the last weights kept on this machine when they descend from them."""
    package_sha = sha256(package)
    latest, chain_file = state_dir / "latest.safetensors", state_dir / "chain.json"
    if chain_file.is_file() and latest.is_file():
        chain = json.loads(chain_file.read_text())
        if package_sha in chain and sha256(latest) == chain[-1]:
            log.info("continuing from %s (kept by an earlier call on this machine)", latest)
            return Start(latest, chain[-1], chain)
    return Start(package, package_sha, [package_sha])


# --- scoring --------------------------------------------------------------------------------------
Pair = tuple[np.ndarray, np.ndarray, np.ndarray]


def heldout_pairs(size: tuple[int, int], max_disparity: float, count: int) -> list[Pair]:
    """``count`` synthetic pairs of the held-out seed at ``size``, with their GT."""
    from madis_stereo.data.synthetic import SyntheticStereo

    data = SyntheticStereo(size=tuple(size), max_disparity=float(max_disparity), seed=HELDOUT_SEED, length=count,
                           occlusion_mask=False)
    return [(s["left"], s["right"], s["disparity"]) for s in data]


def _mean_metrics(predictions: list[np.ndarray], pairs: list[Pair]) -> dict[str, float]:
    from madis_stereo.evaluation.metrics import stereo_metrics

    rows = [stereo_metrics(pred, gt) for pred, (_, _, gt) in zip(predictions, pairs)]
    return {key: float(np.mean([r[key] for r in rows])) for key in ("bad_2", "epe", "bad_1", "bad_3", "d1")}


def score(model: torch.nn.Module, sets: dict[str, list[Pair]], device: torch.device) -> dict[str, dict]:
    """Mean per-pair metrics of ``model`` on each set (tiled prediction; bf16 on GPUs, fp32 on CPUs)."""
    from madis_stereo.inference.predictor import Predictor

    predictor = Predictor(model, device=device, precision="bf16" if device.type == "cuda" else "fp32")
    return {name: _mean_metrics([predictor(left, right).disparity for left, right, _ in pairs], pairs)
            for name, pairs in sets.items()}


def score_sgbm(sets: dict[str, list[Pair]], max_disparity: dict[str, float]) -> dict[str, dict]:
    from madis_stereo.evaluation.baselines import sgbm_disparity

    return {name: _mean_metrics([sgbm_disparity(left, right, max_disparity=max_disparity[name])
                                 for left, right, _ in pairs], pairs) for name, pairs in sets.items()}


def is_better(before: dict[str, dict], after: dict[str, dict]) -> tuple[bool, str]:
    """Kept only when bad-2 is lower on every set; the reason names each set's change."""
    changes = [f"{name} bad-2 {before[name]['bad_2']:.2f} -> {after[name]['bad_2']:.2f}" for name in before]
    better = all(after[name]["bad_2"] < before[name]["bad_2"] for name in before)
    return better, ("better on both: " if better else "not better on both: ") + ", ".join(changes)


# --- shards ---------------------------------------------------------------------------------------
def write_shards(checkpoint: Path, out_dir: Path, shards: int = SHARDS) -> list[Path]:
    """Split the tensors of one of our checkpoints over ``shards`` files that each keep its header."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(checkpoint), framework="pt") as fh:
        header = fh.metadata()
    state = read_weights(checkpoint)
    parts: list[dict[str, torch.Tensor]] = [{} for _ in range(shards)]
    for key in sorted(state, key=lambda k: -state[k].numel()):  # largest first, into the lightest shard
        min(parts, key=lambda p: sum(v.numel() for v in p.values()))[key] = state[key]
    paths = []
    for i, part in enumerate(parts):
        with atomic_path(out_dir / f"default.part{i}.safetensors") as tmp:
            save_file(part, str(tmp), metadata=header)
        paths.append(out_dir / f"default.part{i}.safetensors")
    return paths


def join_shards(parts: list[Path], target: Path) -> Path:
    """The checkpoint that :func:`write_shards` split, written (atomically) to ``target``."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    headers, state = [], {}
    for part in parts:
        with safe_open(str(part), framework="pt") as fh:
            headers.append(fh.metadata())
        state.update(read_weights(part))
    if any(h != headers[0] for h in headers):
        raise CheckpointError(f"{parts[0].parent}: the shards come from different checkpoints")
    with atomic_path(target) as tmp:
        save_file(state, str(tmp), metadata=headers[0])
    return target


# --- the session ----------------------------------------------------------------------------------
def _session_config(recipe: Path, overrides: list[str], init: Path, session: int, budget: float) -> Any:
    """The recipe with the session's start weights, seeds and time budget."""
    from madis_stereo.training.config import load_train_config
    from madis_stereo.utils.config import load_yaml

    data = load_yaml(recipe)
    for spec in (data.get("data") or {}).get("train") or []:
        if isinstance(spec, dict) and "seed" in spec:
            spec["seed"] = session  # fresh pairs every session
    data.setdefault("model", {})["init"] = str(init)
    data.setdefault("run", {})["seed"] = session
    data.setdefault("optim", {})["time_budget_s"] = budget
    return load_train_config(data, overrides)


def _loss_curve(metrics: Path, points: int = 20) -> list[float]:
    """Mean training loss in ``points`` equal parts of the run (the loss curve in the record)."""
    from madis_stereo.training.runlog import read_metrics

    losses = [r["loss"] for r in read_metrics(metrics, "train") if not r.get("skipped")]
    chunks = np.array_split(np.asarray(losses, dtype=np.float64), min(points, len(losses))) if losses else []
    return [round(float(c.mean()), 4) for c in chunks]


def _thin_metrics(source: Path, target: Path, max_lines: int = 10_000) -> None:
    """``metrics.jsonl`` with every k-th training line (all others kept), at most about ``max_lines`` lines:
    a GPU session logs tens of thousands of steps, and the device returns files of up to 16 MiB."""
    lines = source.read_text().splitlines()
    every = -(-len(lines) // max_lines)
    kept = [line for i, line in enumerate(lines) if i % every == 0 or '"kind": "train"' not in line]
    atomic_write_bytes(target, "".join(line + "\n" for line in kept).encode())


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def run_session(out: Path, recipe: Path = RECIPE, overrides: list[str] | None = None, deadline_s: float = 540.0,
                package: Path | None = None, state_dir: Path = STATE_DIR, heldout: int = 64,
                motorcycle_scale: float = 1.0, results: Path | None = RESULTS,
                reserve_s: float = 20.0) -> dict[str, Any]:
    """One session (see the module docstring); returns its record."""
    from madis_stereo.app.demo import MOTORCYCLE_MAX_DISPARITY, motorcycle
    from madis_stereo.training.distributed import pick_device
    from madis_stereo.training.trainer import train

    started = time.monotonic()
    out, state_dir = Path(out), Path(state_dir)
    package = Path(package) if package is not None else default_model_path()
    if not package.is_file():
        raise ConfigError(f"no bundled weights to continue: {package} is missing")
    if not Path(recipe).is_file():
        raise ConfigError(f"recipe not found: {recipe} (run from the repository root, or pass --recipe)")
    out.mkdir(parents=True, exist_ok=True)
    state_dir.mkdir(parents=True, exist_ok=True)
    start = start_weights(package, state_dir)
    model, meta = load_model(start.path, return_metadata=True)
    past = lineage(meta)
    session = past["sessions"] + 1
    probe = _session_config(recipe, list(overrides or []), start.path, session, 1.0)
    device = pick_device(probe.run.device, 0)
    crop = tuple(probe.model.arch.crop)
    max_disp = float(probe.data.train[0].get("max_disparity", 96)) if probe.data.train else 96.0
    left, right, gt = motorcycle(motorcycle_scale)
    sets = {"synthetic": heldout_pairs(crop, max_disp, heldout), "motorcycle": [(left, right, gt)]}
    sgbm = score_sgbm(sets, {"synthetic": max_disp, "motorcycle": MOTORCYCLE_MAX_DISPARITY * motorcycle_scale})
    scoring = time.monotonic()
    before = score(model, sets, device)
    scoring = time.monotonic() - scoring
    del model  # training loads the start weights itself
    log.info("session %d starts from %s: %s (SGBM %s)", session, start.path, before, sgbm)

    def time_left() -> float:
        """Seconds training may take: after it come scoring (on a warm GPU, no longer than the first, cold
        one) and saving (``reserve_s``)."""
        return deadline_s - (time.monotonic() - started) - (scoring + reserve_s)

    budget = time_left()
    if budget < 1:
        raise ConfigError(f"--deadline-s {deadline_s:g} leaves no time to train ({budget:.0f} s after scoring)")
    cfg = _session_config(recipe, list(overrides or []), start.path, session, budget)
    run_dir = state_dir / "run"
    shutil.rmtree(run_dir, ignore_errors=True)  # each call trains afresh from the start weights
    train_start = time.monotonic()
    fallback = None
    try:
        result = train(cfg, out_dir=run_dir)
    except Exception as err:  # the device renderer has no GPU mileage yet: do not lose the session to it
        if not cfg.data.render_on_device:
            raise
        fallback = f"{type(err).__name__}: {err}"
        log.exception("the device renderer failed; training again with the CPU renderer in DataLoader workers")
        if time_left() < 1:
            raise
        cfg = _session_config(recipe, [*(overrides or []), *CPU_RENDERER], start.path, session, time_left())
        shutil.rmtree(run_dir, ignore_errors=True)
        train_start = time.monotonic()
        result = train(cfg, out_dir=run_dir)
    train_seconds = time.monotonic() - train_start
    o = cfg.optim
    batch = o.batch_size * o.accum_steps
    pairs_run = result.step * batch
    total = {"sessions": session, "steps_total": past["steps_total"] + result.step,
             "pairs_seen_total": past["pairs_total"] + pairs_run}

    candidate = run_dir / "candidate.safetensors"
    metadata = {"recipe": "croco_stereo_baseline" if not cfg.madis.enabled else "madis", "steps": result.step,
                **total, "dataset": list(cfg.data.train), "parent_sha256": start.sha256,
                "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
                "device": _device_name(device), "torch": torch.__version__}
    save_model(result.engine.model, candidate, dtype=torch.float16, **metadata)
    shipped = load_model(candidate)
    after = score(shipped, sets, device)
    kept, reason = is_better(before, after)
    log.info("after %d steps (%d pairs): %s; %s", result.step, pairs_run, after, reason)
    record = {
        "id": datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ"),
        "date": metadata["date"], "device": metadata["device"], "torch": torch.__version__,
        "recipe": str(recipe), "data": list(cfg.data.train), "session": session, "steps": result.step,
        "batch": batch, "pairs_run": pairs_run, "pairs_total": total["pairs_seen_total"],
        "steps_total": total["steps_total"], "train_seconds": round(train_seconds, 1),
        "pairs_per_s": round(pairs_run / max(train_seconds, 1e-9), 1),
        "loss_curve": _loss_curve(run_dir / "metrics.jsonl"),
        "before": before, "after": after, "sgbm": sgbm, "heldout_pairs": heldout,
        "motorcycle_scale": motorcycle_scale, "renderer": "device" if cfg.data.render_on_device else "cpu",
        "fallback": fallback, "kept": kept, "reason": reason, "start_sha256": start.sha256,
        "weights_sha256": sha256(candidate) if kept else None,
    }
    if kept:
        size = candidate.stat().st_size
        if size > MAX_BUNDLE_BYTES:
            raise CheckpointError(f"{candidate}: {size / 1e6:.1f} MB, over the {MAX_BUNDLE_BYTES / 1e6:.0f} MB limit")
        final = dict(metadata, motorcycle=after["motorcycle"], synthetic_heldout=after["synthetic"],
                     motorcycle_sgbm_bad_2=sgbm["motorcycle"]["bad_2"])
        save_model(shipped, candidate, dtype=torch.float16, **final)  # the scores into the header
        record["weights_sha256"] = sha256(candidate)
        write_shards(candidate, out)
        with atomic_path(state_dir / "latest.safetensors") as tmp:
            shutil.copyfile(candidate, tmp)
        atomic_write_bytes(state_dir / "chain.json", json.dumps(start.chain + [record["weights_sha256"]]).encode())
    if (run_dir / "config.yaml").is_file():
        shutil.copyfile(run_dir / "config.yaml", out / "config.yaml")
    if (run_dir / "metrics.jsonl").is_file():
        _thin_metrics(run_dir / "metrics.jsonl", out / "metrics.jsonl")
    atomic_write_bytes(out / RECORD_NAME, (json.dumps(record, indent=1) + "\n").encode())
    if results is not None:
        append_record(results, record)
    return record


# --- adopting a session's output here -------------------------------------------------------------
def append_record(results: Path, record: dict[str, Any]) -> bool:
    """Append ``record`` as one JSON line (atomically); False when a record with its id is already there."""
    results = Path(results)
    lines = results.read_text().splitlines() if results.is_file() else []
    if any(json.loads(line).get("id") == record["id"] for line in lines if line.strip()):
        return False
    results.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(results, "".join(line + "\n" for line in [*lines, json.dumps(record)]).encode())
    return True


def adopt(folder: Path, package: Path | None = None, results: Path = RESULTS) -> str:
    """Bring a session's output (a fetched ``$OUT``) into this checkout; returns what it did."""
    folder = Path(folder)
    package = Path(package) if package is not None else default_model_path()
    if not (folder / RECORD_NAME).is_file():
        raise ConfigError(f"{folder}: no {RECORD_NAME} (not the output folder of a session)")
    record = json.loads((folder / RECORD_NAME).read_text())
    done = []
    if record["kept"]:
        current = sha256(package)
        if current == record["weights_sha256"]:
            done.append("the package already holds these weights")
        elif current != record["start_sha256"]:
            raise CheckpointError(
                f"{folder}: these weights continue {record['start_sha256'][:12]}, but {package} is "
                f"{current[:12]}; adopt the earlier session's folder first (sessions adopt in order)")
        else:
            parts = sorted(folder.glob(SHARD_GLOB))
            if not parts:
                raise CheckpointError(f"{folder}: the session kept its weights but no {SHARD_GLOB} came back")
            joined = join_shards(parts, folder / "joined.safetensors")
            if sha256(joined) != record["weights_sha256"]:
                raise CheckpointError(f"{folder}: the joined shards differ from the weights the session kept")
            load_model(joined)  # loads: complete and consistent
            with atomic_path(package) as tmp:
                shutil.copyfile(joined, tmp)
            joined.unlink()
            meta = read_metadata(package)["metadata"]
            done.append(f"{package} replaced: session {meta['sessions']}, {meta['pairs_seen_total']} pairs in total, "
                        f"Motorcycle bad-2 {meta['motorcycle']['bad_2']:.2f}")
    else:
        done.append("weights not kept: the package is unchanged")
    done.append(f"record appended to {results}" if append_record(results, record) else f"record already in {results}")
    return "; ".join(done)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m madis_stereo.app.session", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train, score and keep-or-not (on the GPU machine)")
    run.add_argument("overrides", nargs="*", metavar="key=value", help="recipe overrides")
    run.add_argument("--out", type=Path, required=True, help="output folder ($OUT on the device)")
    run.add_argument("--recipe", type=Path, default=RECIPE)
    run.add_argument("--deadline-s", type=float, default=540.0, help="seconds for the whole session")
    run.add_argument("--weights", type=Path, default=None, help="the bundled weights (default: the package's)")
    run.add_argument("--state-dir", type=Path, default=STATE_DIR, help="what a later call on this machine continues")
    run.add_argument("--heldout", type=int, default=64, help="held-out synthetic pairs")
    run.add_argument("--motorcycle-scale", type=float, default=1.0)
    run.add_argument("--results", type=Path, default=RESULTS)
    run.add_argument("--reserve-s", type=float, default=20.0, help="seconds kept for saving after training")
    take = sub.add_parser("adopt", help="bring a session's fetched output into this checkout")
    take.add_argument("folder", type=Path)
    take.add_argument("--weights", type=Path, default=None, help="the bundled weights (default: the package's)")
    take.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    try:
        if args.command == "adopt":
            print(adopt(args.folder, args.weights, args.results))
            return 0
        args.out.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(args.out / "session.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        logging.basicConfig(level=logging.INFO, handlers=[handler, logging.StreamHandler()], force=True)
        record = run_session(args.out, args.recipe, args.overrides, args.deadline_s, args.weights, args.state_dir,
                             args.heldout, args.motorcycle_scale, args.results, args.reserve_s)
        print(json.dumps({k: record[k] for k in ("session", "steps", "pairs_run", "pairs_total", "kept", "reason")}))
        return 0
    except (ConfigError, CheckpointError, TrainingError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
