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
   ``run.seed = n``, so no two sessions see the same pairs. Training runs in a child process (a CUDA
   fatal error, a crash or an out-of-memory kills only the child) watched for progress: no first step
   within ``--first-step-s`` or no new step for ``--stall-s`` seconds counts as a hang and the child is
   killed. If the device renderer fails, training continues with the CPU renderer in DataLoader workers
   (:data:`CPU_RENDERER`) for the time left, from the failed run's last checkpoint when it left one;
4. scores the result, rounded to fp16 as it would ship ("after");
5. keeps it only when its bad-2 is lower on both sets: then writes it in :data:`SHARDS` files
   ``OUT/default.part{i}.safetensors`` (each under the device's 16 MiB per-file limit);
6. writes ``OUT/session.json`` (the record; a provisional one from the first minute on, updated at each
   phase, and one that names the error when the session fails), ``OUT/session.log``,
   ``OUT/metrics.jsonl`` (the loss curve, thinned to about 10k lines) and ``OUT/config.yaml``, and appends the record to
   ``benchmarks/results/bundled_sessions.jsonl``.

``adopt`` (after the device's files came back) joins the shards into the package's weights when the
session kept them (refusing weights that do not continue the package's current ones) and appends the
record to the results file; adopting the same folder twice changes nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from madis_stereo.errors import CheckpointError, ConfigError, TrainingError, first_line
from madis_stereo.model.checkpoint import default_model_path, load_model, read_metadata, read_weights, save_model
from madis_stereo.utils.files import atomic_path, atomic_write_bytes, sha256_of

__all__ = ["HELDOUT_SEED", "SHARDS", "adopt", "is_better", "join_shards", "lineage", "main", "run_session",
           "write_shards"]

log = logging.getLogger("madis_stereo.app.session")  # not __main__ under python -m: the script greps for it

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
LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
FIRST_STEP_S = 120.0  # a training child without a first step after this long (imports, CUDA, atlas, render) hangs
STALL_S = 90.0  # ... or without a new step for this long
# On a CPU a step of the recipe's batch takes 8 s (Zen 4) to a minute or more (a 2-core Zen 3 without bf16), and its
# first step waits for the first batch's rendering too: a CPU session waits this long before it calls its child hung.
CPU_FIRST_STEP_S = 900.0
CPU_STALL_S = 600.0
EXIT_GRACE_S = 30.0  # a child still running this long after its time budget is killed
CHILD_START_S = 10.0  # what a child spends before its trainer starts the budget clock (imports, CUDA, atlas)
MIN_FALLBACK_S = 30.0  # the CPU-renderer fallback only starts with at least this much training time left
FAULT_ENV = "MADIS_SESSION_FAULT"  # test hook: "crash@N", "hang@N" or "oom@N" breaks the device renderer at batch N


# --- provenance -----------------------------------------------------------------------------------
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
    package_sha = sha256_of(package)
    latest, chain_file = state_dir / "latest.safetensors", state_dir / "chain.json"
    if chain_file.is_file() and latest.is_file():
        chain = json.loads(chain_file.read_text())
        if package_sha in chain and sha256_of(latest) == chain[-1]:
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
    """The GPU's name, or "cpu: " and the CPU's (with family and model numbers) and core count: every
    session's pairs/s belongs with the machine that ran it."""
    from madis_stereo.inference.precision import cpu_model

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu: {cpu_model()}, {os.cpu_count()} cores"


# --- training in a watched child process ---------------------------------------------------------
@dataclasses.dataclass
class Attempt:
    """One training child: which renderer, from which weights, how it ended."""

    renderer: str
    init: str
    ok: bool = False
    steps: int = 0
    seconds: float = 0.0
    first_step_s: float | None = None
    pairs_per_s: float | None = None
    error: str | None = None
    checkpoint: str | None = None  # the last checkpoint it left (the final one when ok)
    checkpoint_step: int = 0


def _child_env() -> dict[str, str]:
    """The environment of a training child: this package first on its path, one thread per process."""
    src = str(Path(__file__).resolve().parents[2])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p),
            "PYTHONUNBUFFERED": "1"}


def _kill(proc: subprocess.Popen) -> None:
    """End the child and its DataLoader workers (its own process group): TERM, then KILL after 10 s."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 30.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "did not end, even after SIGKILL"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def watch_limits(device: torch.device, first_step_s: float | None = None,
                 stall_s: float | None = None) -> tuple[float, float]:
    """The hung-child limits (first step, new step) for ``device``: the given ones, else the device's defaults
    (a CPU step can take a minute where a GPU step takes a second)."""
    cpu = device.type == "cpu"
    return (first_step_s if first_step_s is not None else CPU_FIRST_STEP_S if cpu else FIRST_STEP_S,
            stall_s if stall_s is not None else CPU_STALL_S if cpu else STALL_S)


def train_watched(cfg: Any, run_dir: Path, until: float, batch: int, first_step_s: float = FIRST_STEP_S,
                  stall_s: float = STALL_S, poll_s: float = 1.0) -> Attempt:
    """Train ``cfg`` into ``run_dir`` in a child process that must end by ``until`` (``time.time()``).

    The child is killed when it makes no first step within ``first_step_s``, no new step within ``stall_s``
    (steps are counted in its ``metrics.jsonl``) or runs ``EXIT_GRACE_S`` past ``until``. Returns how it
    went; never raises for the child's failures.
    """
    renderer = "device" if cfg.data.render_on_device else "cpu"
    attempt = Attempt(renderer, str(cfg.model.init))
    shutil.rmtree(run_dir, ignore_errors=True)
    config, result_path = run_dir.parent / "child_config.yaml", run_dir.parent / "child_result.json"
    atomic_write_bytes(config, cfg.to_yaml().encode())
    result_path.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "madis_stereo.app.session", "train-child", "--config", str(config),
           "--run-dir", str(run_dir), "--until", f"{until:.3f}", "--result", str(result_path)]
    log.info("training with the %s renderer in a child process for %.0f s", renderer, until - time.time())
    started = time.monotonic()
    proc = subprocess.Popen(cmd, env=_child_env(), start_new_session=True)
    metrics, offset, steps = run_dir / "metrics.jsonl", 0, 0
    first = last = None  # monotonic times of the first and the latest new step
    reported, next_report, hung = False, 60.0, None
    finished, stuck = None, False  # when the child wrote its result; whether it then failed to exit

    def count_steps(now: float) -> None:
        """Count the training lines the child appended to its metrics.jsonl since the last look."""
        nonlocal offset, steps, first, last
        if not metrics.is_file() or metrics.stat().st_size <= offset:
            return
        with open(metrics, "rb") as fh:
            fh.seek(offset)
            chunk = fh.read()
        chunk = chunk[: chunk.rfind(b"\n") + 1]  # whole lines only
        offset += len(chunk)
        new = chunk.count(b'"kind": "train"')
        if new:
            steps, last = steps + new, now
            if first is None:
                first = now
                attempt.first_step_s = round(now - started, 1)
                log.info("%s renderer: first step %.0f s after the child started", renderer, now - started)

    try:
        while proc.poll() is None:
            time.sleep(poll_s)
            now = time.monotonic()
            count_steps(now)
            if first is not None and steps > 1 and (not reported and now - first >= 10 or now - started >= next_report):
                rate = (steps - 1) * batch / max(last - first, 1e-9)
                log.info("%s renderer %s: %d steps, %.0f pairs/s since the first step (%.0f s in)", renderer,
                         "works" if not reported else "progress", steps, rate, now - started)
                reported, next_report = True, max(next_report, now - started) + 60.0
            if result_path.is_file():  # done, exiting (CUDA teardown), which must not take long either
                finished = finished if finished is not None else now
                if now - finished > EXIT_GRACE_S:
                    stuck = True
                    log.error("the %s-renderer training child has not exited %.0f s after it finished; killing it",
                              renderer, EXIT_GRACE_S)
                    _kill(proc)
                    break
            elif first is None and now - started > first_step_s:
                hung = f"hung: no first step within {first_step_s:.0f} s"
            elif last is not None and now - last > stall_s:
                hung = f"hung: no new step for {stall_s:.0f} s (after step {steps})"
            if hung is None and time.time() > until + EXIT_GRACE_S:
                hung = f"still running {EXIT_GRACE_S:.0f} s past its time budget (step {steps})"
            if hung:
                log.error("the %s-renderer training child is %s; killing it", renderer, hung)
                _kill(proc)
                break
    finally:  # the session itself ends (an error, SIGTERM from its timeout): the child goes with it
        if proc.poll() is None:
            _kill(proc)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:  # stuck in the driver even after SIGKILL: go on without it
        log.error("the %s-renderer training child (pid %d) did not end after SIGKILL", renderer, proc.pid)
    attempt.seconds = round(time.monotonic() - started, 1)
    count_steps(time.monotonic())
    outcome = json.loads(result_path.read_text()) if result_path.is_file() else {}
    if "step" in outcome and hung is None and (proc.returncode == 0 or stuck):
        attempt.ok, attempt.steps = True, int(outcome["step"])
        attempt.checkpoint, attempt.checkpoint_step = outcome["checkpoint"], attempt.steps
    else:
        attempt.error = hung or outcome.get("error") or _exit_reason(proc.returncode)
        attempt.steps = steps
        from madis_stereo.training.state import list_checkpoints

        saved = list_checkpoints(run_dir) if run_dir.is_dir() else []
        if saved:
            attempt.checkpoint_step, attempt.checkpoint = saved[-1][0], str(saved[-1][1])
    if steps > 1 and first is not None and last is not None and last - first > 1:  # start-up left out
        attempt.pairs_per_s = round((steps - 1) * batch / (last - first), 1)
    elif attempt.steps:
        attempt.pairs_per_s = round(attempt.steps * batch / attempt.seconds, 1)
    log.info("the %s-renderer child ended after %.0f s: %s", renderer, attempt.seconds,
             "ok" if attempt.ok else attempt.error)
    return attempt


def _inject_fault(spec: str) -> None:
    """The test hook of :data:`FAULT_ENV`: the device renderer crashes, hangs or runs out of memory at batch N."""
    kind, _, at = spec.partition("@")
    if kind not in ("crash", "hang", "oom"):
        raise ConfigError(f"{FAULT_ENV}={spec}: expected crash@N, hang@N or oom@N")
    from madis_stereo.training import trainer

    build = trainer.build_device_batches

    def faulty(*args: Any, **kwargs: Any) -> Any:
        batches = build(*args, **kwargs)
        real = batches.batch

        def batch(index: int) -> Any:
            if index >= int(at or 0):
                if kind == "crash":
                    os.abort()  # as a fatal CUDA error would end the process
                if kind == "hang":
                    time.sleep(1e6)
                raise torch.OutOfMemoryError(f"CUDA out of memory ({FAULT_ENV}={spec})")
            return real(index)

        batches.batch = batch
        return batches

    trainer.build_device_batches = faulty


def train_child(config: Path, run_dir: Path, until: float, result: Path) -> int:
    """The child of :func:`train_watched`: train, then write the final step and checkpoint (or the error)."""
    from madis_stereo.training.config import load_train_config
    from madis_stereo.training.trainer import train

    try:
        cfg = load_train_config(config, [f"optim.time_budget_s={max(1.0, until - time.time() - CHILD_START_S):.1f}"])
        if os.environ.get(FAULT_ENV) and cfg.data.render_on_device:
            _inject_fault(os.environ[FAULT_ENV])
        done = train(cfg, out_dir=run_dir)
        outcome: dict[str, Any] = {"step": done.step, "checkpoint": str(done.checkpoint)}
    except Exception as err:  # noqa: BLE001 (any failure is reported to the parent, which decides)
        log.exception("training failed")
        outcome = {"error": f"{type(err).__name__}: {first_line(err)}"}
    atomic_write_bytes(result, json.dumps(outcome).encode())
    return 0 if "step" in outcome else 3


def _write_record(out: Path, record: dict[str, Any]) -> None:
    atomic_write_bytes(out / RECORD_NAME, (json.dumps(record, indent=1) + "\n").encode())


def run_session(out: Path, recipe: Path = RECIPE, overrides: list[str] | None = None, deadline_s: float = 540.0,
                package: Path | None = None, state_dir: Path = STATE_DIR, heldout: int = 64,
                motorcycle_scale: float = 1.0, results: Path | None = RESULTS, reserve_s: float = 20.0,
                started_at: float | None = None, first_step_s: float | None = None,
                stall_s: float | None = None) -> dict[str, Any]:
    """One session (see the module docstring); returns its record. ``started_at`` (``time.time()``): when the
    deadline started (the prepared command's start; default now). ``first_step_s`` and ``stall_s`` (the hung
    child's limits) default by device (:func:`watch_limits`). Whatever happens, ``OUT/session.json`` says how far
    the session got (``status``: running, done or failed, with the error)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    record: dict[str, Any] = {"id": now.strftime("%Y%m%dT%H%M%SZ"), "date": now.strftime("%Y-%m-%d"),
                              "status": "running", "phase": "start", "kept": False, "torch": torch.__version__,
                              "recipe": str(recipe), "attempts": []}
    try:
        _run(record, out, recipe, list(overrides or []), deadline_s, package, Path(state_dir), heldout,
             motorcycle_scale, reserve_s, started_at if started_at is not None else time.time(), first_step_s,
             stall_s)
    except BaseException as err:
        record.update(status="failed", kept=False, error=f"{type(err).__name__}: {first_line(err)}")
        _write_record(out, record)
        raise
    if results is not None:
        append_record(results, record)
    return record


def _run(record: dict[str, Any], out: Path, recipe: Path, overrides: list[str], deadline_s: float,
         package: Path | None, state_dir: Path, heldout: int, motorcycle_scale: float, reserve_s: float,
         started_at: float, first_step_s: float | None, stall_s: float | None) -> None:
    from madis_stereo.app.demo import MOTORCYCLE_MAX_DISPARITY, motorcycle
    from madis_stereo.training.distributed import pick_device

    deadline = started_at + deadline_s  # time.time() by which everything is written

    def phase(name: str) -> None:
        record["phase"] = name
        _write_record(out, record)

    phase("start")
    package = Path(package) if package is not None else default_model_path()
    if not package.is_file():
        raise ConfigError(f"no bundled weights to continue: {package} is missing")
    if not Path(recipe).is_file():
        raise ConfigError(f"recipe not found: {recipe} (run from the repository root, or pass --recipe)")
    state_dir.mkdir(parents=True, exist_ok=True)
    start = start_weights(package, state_dir)
    model, meta = load_model(start.path, return_metadata=True)
    past = lineage(meta)
    session = past["sessions"] + 1
    probe = _session_config(recipe, overrides, start.path, session, 1.0)
    device = pick_device(probe.run.device, 0)
    record.update(session=session, start_sha256=start.sha256, device=_device_name(device),
                  heldout_pairs=heldout, motorcycle_scale=motorcycle_scale)
    first_step_s, stall_s = watch_limits(device, first_step_s, stall_s)
    crop = tuple(probe.model.arch.crop)
    max_disp = float(probe.data.train[0].get("max_disparity", 96)) if probe.data.train else 96.0
    left, right, gt = motorcycle(motorcycle_scale)
    sets = {"synthetic": heldout_pairs(crop, max_disp, heldout), "motorcycle": [(left, right, gt)]}
    phase("scoring before")
    record["sgbm"] = score_sgbm(sets, {"synthetic": max_disp,
                                       "motorcycle": MOTORCYCLE_MAX_DISPARITY * motorcycle_scale})
    scoring = time.monotonic()
    record["before"] = score(model, sets, device)
    scoring = time.monotonic() - scoring
    del model  # training loads the start weights itself, in its own process
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the training child needs the memory
    log.info("session %d starts from %s: %s (SGBM %s); scoring took %.1f s", session, start.path,
             record["before"], record["sgbm"], scoring)

    def until() -> float:
        """When training must end: after it come scoring (on a warm GPU, no longer than the first, cold one)
        and saving (``reserve_s``)."""
        return deadline - scoring - reserve_s

    if until() - time.time() < 1:
        raise ConfigError(f"--deadline-s {deadline_s:g} leaves no time to train "
                          f"({until() - time.time():.0f} s after scoring)")
    run_dir = state_dir / "run"
    cfg = _session_config(recipe, overrides, start.path, session, until() - time.time())
    o = cfg.optim
    batch = o.batch_size * o.accum_steps
    attempts = [train_watched(cfg, run_dir, until(), batch, first_step_s, stall_s)]
    record["attempts"] = [dataclasses.asdict(a) for a in attempts]
    phase("trained" if attempts[0].ok else "training failed")
    base_steps = 0  # steps behind the weights the fallback started from, beyond the start weights
    if not attempts[0].ok and cfg.data.render_on_device:
        init = start.path
        if attempts[0].checkpoint:  # continue what the failed run reached rather than start over
            init = state_dir / "salvaged.safetensors"
            shutil.copyfile(attempts[0].checkpoint, init)
            attempts[0].checkpoint = str(init)
        left_s = until() - time.time()
        if left_s >= MIN_FALLBACK_S:
            base_steps = attempts[0].checkpoint_step if attempts[0].checkpoint else 0
            log.warning("the device renderer failed (%s); training on with the CPU renderer in DataLoader "
                        "workers for %.0f s from %s", attempts[0].error, left_s, init)
            cfg = _session_config(recipe, [*overrides, *CPU_RENDERER], init, session, left_s)
            attempts.append(train_watched(cfg, run_dir, until(), batch, first_step_s, stall_s))
            record["attempts"] = [dataclasses.asdict(a) for a in attempts]
            phase("trained" if attempts[-1].ok else "training failed")
        else:
            log.warning("the device renderer failed (%s) and %.0f s are left: no fallback", attempts[0].error, left_s)
    final = attempts[-1]
    if final.checkpoint is None and attempts[0].checkpoint:
        final, base_steps = attempts[0], 0  # the fallback left nothing: the failed run's last checkpoint
    record["fallback"] = attempts[0].error if len(attempts) > 1 else None
    record["renderer"] = final.renderer
    if final.checkpoint is None:
        raise TrainingError("no training run left a checkpoint: "
                            + "; ".join(f"{a.renderer} renderer: {a.error}" for a in attempts))
    steps = base_steps + final.checkpoint_step
    pairs_run = steps * batch
    train_seconds = sum(a.seconds for a in attempts)
    total = {"sessions": session, "steps_total": past["steps_total"] + steps,
             "pairs_seen_total": past["pairs_total"] + pairs_run}
    record.update(data=list(cfg.data.train), steps=steps, batch=batch, pairs_run=pairs_run,
                  pairs_total=total["pairs_seen_total"], steps_total=total["steps_total"],
                  train_seconds=round(train_seconds, 1), pairs_per_s=round(pairs_run / max(train_seconds, 1e-9), 1),
                  loss_curve=_loss_curve(run_dir / "metrics.jsonl"))
    phase("scoring after")

    candidate = state_dir / "candidate.safetensors"
    metadata = {"recipe": "croco_stereo_baseline" if not cfg.madis.enabled else "madis", "steps": steps,
                **total, "dataset": list(cfg.data.train), "parent_sha256": start.sha256,
                "date": record["date"], "device": record["device"], "torch": torch.__version__}
    save_model(load_model(final.checkpoint), candidate, dtype=torch.float16, **metadata)
    shipped = load_model(candidate)
    after = score(shipped, sets, device)
    kept, reason = is_better(record["before"], after)
    log.info("after %d steps (%d pairs): %s; %s", steps, pairs_run, after, reason)
    record.update(after=after, reason=reason, weights_sha256=None)
    if kept:
        size = candidate.stat().st_size
        if size > MAX_BUNDLE_BYTES:
            raise CheckpointError(f"{candidate}: {size / 1e6:.1f} MB, over the {MAX_BUNDLE_BYTES / 1e6:.0f} MB limit")
        final_meta = dict(metadata, motorcycle=after["motorcycle"], synthetic_heldout=after["synthetic"],
                          motorcycle_sgbm_bad_2=record["sgbm"]["motorcycle"]["bad_2"])
        save_model(shipped, candidate, dtype=torch.float16, **final_meta)  # the scores into the header
        record["weights_sha256"] = sha256_of(candidate)
        write_shards(candidate, out)
        with atomic_path(state_dir / "latest.safetensors") as tmp:
            shutil.copyfile(candidate, tmp)
        atomic_write_bytes(state_dir / "chain.json", json.dumps(start.chain + [record["weights_sha256"]]).encode())
    if (run_dir / "config.yaml").is_file():
        shutil.copyfile(run_dir / "config.yaml", out / "config.yaml")
    if (run_dir / "metrics.jsonl").is_file():
        _thin_metrics(run_dir / "metrics.jsonl", out / "metrics.jsonl")
    record.update(kept=kept, status="done", seconds=round(time.time() - started_at, 1))
    phase("done")
    log.info("session done in %.0f s of its %.0f s deadline", time.time() - started_at, deadline_s)


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
        current = sha256_of(package)
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
            if sha256_of(joined) != record["weights_sha256"]:
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
    run.add_argument("--started-at", type=float, default=None,
                     help="when the deadline started (Unix time; default now: the prepared command passes its start)")
    run.add_argument("--first-step-s", type=float, default=None,
                     help=f"a training child without a first step after this long is killed "
                          f"(default {FIRST_STEP_S:g} s on a GPU, {CPU_FIRST_STEP_S:g} s on a CPU)")
    run.add_argument("--stall-s", type=float, default=None,
                     help=f"a training child without a new step for this long is killed "
                          f"(default {STALL_S:g} s on a GPU, {CPU_STALL_S:g} s on a CPU)")
    child = sub.add_parser("train-child", help="(internal) the training child process of `run`")
    child.add_argument("--config", type=Path, required=True)
    child.add_argument("--run-dir", type=Path, required=True)
    child.add_argument("--until", type=float, required=True)
    child.add_argument("--result", type=Path, required=True)
    take = sub.add_parser("adopt", help="bring a session's fetched output into this checkout")
    take.add_argument("folder", type=Path)
    take.add_argument("--weights", type=Path, default=None, help="the bundled weights (default: the package's)")
    take.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    try:
        if args.command == "adopt":
            print(adopt(args.folder, args.weights, args.results))
            return 0
        fmt = logging.Formatter(LOG_FORMAT)
        if args.command == "train-child":  # logs to the parent's stderr (console.log)
            logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, force=True)
            code = train_child(args.config, args.run_dir, args.until, args.result)
            if code:  # after a CUDA error the interpreter's teardown can hang: the result is written, leave now
                logging.shutdown()
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
            return code
        args.out.mkdir(parents=True, exist_ok=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds: the child is killed, the record written
        handlers = [logging.FileHandler(args.out / "session.log"), logging.StreamHandler()]
        for handler in handlers:
            handler.setFormatter(fmt)
        logging.basicConfig(level=logging.INFO, handlers=handlers, force=True)
        record = run_session(args.out, args.recipe, args.overrides, args.deadline_s, args.weights, args.state_dir,
                             args.heldout, args.motorcycle_scale, args.results, args.reserve_s, args.started_at,
                             args.first_step_s, args.stall_s)
        print(json.dumps({k: record.get(k) for k in ("session", "renderer", "fallback", "steps", "pairs_run",
                                                      "pairs_per_s", "pairs_total", "kept", "reason")}))
        return 0
    except (ConfigError, CheckpointError, TrainingError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
