"""The GPU session's prepared command, run on the CPU with a tiny recipe and a few seconds of training.

First call (the command line of ``scripts/gpu_session.sh``; the script itself runs in a slow test): a random
tiny model is continued (on the CPU renderer: the device renderer is made to fail), gets better on both sets
and is kept (shards in OUT). Second call on the same "machine" (state folder) with ``optim.lr=0``, on the
device renderer (here on the CPU): it continues from the first call's weights, cannot get better, and is
not kept. Then ``adopt`` brings both outputs
into a package copy in order, and refuses weights that do not continue the package's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import madis_stereo as ms
from madis_stereo.app import session as S
from madis_stereo.errors import CheckpointError, ConfigError
from madis_stereo.inference.precision import cpu_model
from madis_stereo.utils.files import sha256_of

ROOT = Path(__file__).resolve().parents[1]
TINY = """
model: {preset: tiny, crop: [32, 64], dpt_hooks: [4, 5, 6, 7], init: bundled}
data:
  train: [{name: synthetic, size: [32, 64], length: 100000, seed: 0, max_disparity: 8, occlusion_mask: false,
           atlas_tiles: 4, atlas_tile_size: 64}]
  render_on_device: true
  augment: {scale_prob: 0}
madis: {enabled: false}
optim: {lr: 1.0e-3, batch_size: 4, max_steps: 100000, warmup_steps: 3, schedule: wsd, cooldown_frac: 0.2}
run: {log_every: 0, ckpt_every: 0, keep_last: 1, num_workers: 0, device: cpu}
"""
SMALL_SETS = ["--heldout", "3", "--motorcycle-scale", "0.1", "--reserve-s", "1"]


def tiny_package(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    model = ms.StereoModel(ms.ModelConfig.preset("tiny", crop=(32, 64), dpt_hooks=(4, 5, 6, 7)))
    return ms.save_model(model, path, dtype=torch.float16, steps=0, sessions=0, pairs_seen_total=0)


def test_keep_only_when_better_on_both_sets():
    before = {"synthetic": {"bad_2": 40.0}, "motorcycle": {"bad_2": 30.0}}
    assert S.is_better(before, {"synthetic": {"bad_2": 39.0}, "motorcycle": {"bad_2": 29.9}})[0]
    assert not S.is_better(before, {"synthetic": {"bad_2": 39.0}, "motorcycle": {"bad_2": 30.0}})[0]
    kept, reason = S.is_better(before, {"synthetic": {"bad_2": 41.0}, "motorcycle": {"bad_2": 10.0}})
    assert not kept and reason == "not better on both: synthetic bad-2 40.00 -> 41.00, motorcycle bad-2 30.00 -> 10.00"


def test_lineage_of_the_first_bundled_model_counts_its_burst():
    assert S.lineage({"steps": 1960}) == {"sessions": 1, "steps_total": 1960, "pairs_total": 62720}
    meta = {"steps": 10, "sessions": 3, "steps_total": 5000, "pairs_seen_total": 160000}
    assert S.lineage(meta) == {"sessions": 3, "steps_total": 5000, "pairs_total": 160000}


def test_metrics_are_thinned_for_the_trip_back_keeping_every_validation(tmp_path):
    lines = [{"kind": "train", "step": i} for i in range(1, 26)] + [{"kind": "val", "step": 25, "epe": 1.0}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    S._thin_metrics(tmp_path / "m.jsonl", tmp_path / "thin.jsonl", max_lines=10)
    kept = [json.loads(line) for line in (tmp_path / "thin.jsonl").read_text().splitlines()]
    assert [r["step"] for r in kept if r["kind"] == "train"] == [1, 4, 7, 10, 13, 16, 19, 22, 25]
    assert kept[-1] == lines[-1]


def test_session_keeps_or_not_continues_on_a_warm_machine_and_adopts_in_order(tmp_path, monkeypatch):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY)
    package = tiny_package(tmp_path / "package.safetensors", 0)
    state, results = tmp_path / "state", tmp_path / "r.jsonl"
    start_sha = sha256_of(package)
    args = [*SMALL_SETS, "--recipe", str(recipe), "--weights", str(package), "--state-dir", str(state),
            "--results", str(results)]
    # first call: the command line of the prepared command (scripts/gpu_session.sh, tested below), with a
    # device renderer whose training process dies at its third batch (as on a fatal CUDA error): the session
    # trains on with the CPU renderer in DataLoader workers
    monkeypatch.setenv(S.FAULT_ENV, "crash@2")
    out1 = tmp_path / "out1"
    # (max_steps ends these runs long before their time budget: the same steps on a busy or an idle CPU; a
    # 90 s deadline was overrun once while a training job ran beside the suite on 2 cores)
    assert S.main(["run", "--out", str(out1), "--deadline-s", "180", *args, "optim.max_steps=12"]) == 0
    first = json.loads((out1 / "session.json").read_text())
    assert first["renderer"] == "cpu" and first["fallback"] == "killed by SIGABRT", first["attempts"]
    steps = [(a["renderer"], a["ok"], a["steps"]) for a in first["attempts"]]
    assert steps == [("device", False, 2), ("cpu", True, 12)]
    assert first["status"] == "done" and first["attempts"][1]["pairs_per_s"] > 0
    monkeypatch.undo()
    assert first["kept"] and first["reason"].startswith("better on both"), first["reason"]
    assert first["session"] == 1 and first["steps"] == 12 and first["pairs_run"] == 48
    assert first["pairs_total"] == first["pairs_run"] and first["start_sha256"] == start_sha
    assert first["device"] == f"cpu: {cpu_model()}, {os.cpu_count()} cores"  # which CPU made its pairs/s
    for name in ("synthetic", "motorcycle"):
        assert first["after"][name]["bad_2"] < first["before"][name]["bad_2"]
        assert set(first["sgbm"][name]) >= {"bad_2", "epe"}
    assert first["data"][0]["seed"] == 1 and S.HELDOUT_SEED != 1  # session 1 trains on seed 1
    shards = sorted(out1.glob("default.part*.safetensors"))
    assert len(shards) == S.SHARDS
    assert {"session.log", "metrics.jsonl", "config.yaml"} <= {p.name for p in out1.iterdir()}
    assert [json.loads(line)["id"] for line in results.read_text().splitlines()] == [first["id"]]
    assert sha256_of(package) == start_sha  # the package is replaced here, by adopt, not on the device

    # second call on the same machine: continues from the kept weights; lr 0 cannot improve them
    out2 = tmp_path / "out2"
    second = S.run_session(out2, recipe, ["optim.lr=0", "optim.max_steps=4"], deadline_s=180, package=package,
                           state_dir=state, heldout=3, motorcycle_scale=0.1, results=None, reserve_s=1)
    assert second["session"] == 2 and second["start_sha256"] == first["weights_sha256"]
    assert second["renderer"] == "device" and second["fallback"] is None
    assert not second["kept"] and second["after"] == second["before"] and second["weights_sha256"] is None
    assert second["pairs_total"] == first["pairs_total"] + second["pairs_run"]
    assert not list(out2.glob("default.part*"))

    # adopt here: out2 continues weights the package does not hold yet
    assert "not kept" in S.adopt(out2, package, results)
    message = S.adopt(out1, package, results)
    assert "replaced: session 1" in message and sha256_of(package) == first["weights_sha256"]
    model, meta = ms.load_model(package, return_metadata=True)
    assert meta["pairs_seen_total"] == first["pairs_total"] and meta["parent_sha256"] == start_sha
    assert meta["device"] == first["device"]
    assert meta["motorcycle"]["bad_2"] == pytest.approx(first["after"]["motorcycle"]["bad_2"])
    assert "already holds" in S.adopt(out1, package, results) and "already in" in S.adopt(out1, package, results)
    assert len(results.read_text().splitlines()) == 2
    other = tiny_package(tmp_path / "other.safetensors", 1)
    with pytest.raises(CheckpointError, match="adopt the earlier session's folder first"):
        S.adopt(out1, other, tmp_path / "r2.jsonl")
    (out1 / "session.json").unlink()
    with pytest.raises(ConfigError, match="no session.json"):
        S.adopt(out1, package, results)


@pytest.mark.slow
def test_the_prepared_command_runs_a_session(tmp_path):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY)
    package = tiny_package(tmp_path / "package.safetensors", 0)
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable,
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    args = [*SMALL_SETS, "--recipe", str(recipe), "--weights", str(package), "--state-dir", str(tmp_path / "state"),
            "--results", str(tmp_path / "r.jsonl")]
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_session.sh"), "12", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    console = (out / "console.log").read_text()
    assert done.returncode == 0 and "session exit 0" in console, console[-3000:]
    record = json.loads((out / "session.json").read_text())
    assert record["kept"] and len(list(out.glob("default.part*.safetensors"))) == S.SHARDS
    assert len(list(out.iterdir())) <= 8  # the device returns at most 8 files


def test_a_cpu_session_waits_longer_for_its_child_than_a_gpu_one():
    # a 2-core Zen 3 needs more than the GPU's 120 s for the first step of a batch of 16: a CPU session that used
    # the GPU limits killed a healthy child (2026-12-01)
    assert S.watch_limits(torch.device("cuda")) == (S.FIRST_STEP_S, S.STALL_S)
    first, stall = S.watch_limits(torch.device("cpu"))
    assert first >= 5 * S.FIRST_STEP_S and stall >= 5 * S.STALL_S
    assert S.watch_limits(torch.device("cpu"), 7.0, 3.0) == (7.0, 3.0)
    assert S.watch_limits(torch.device("cuda"), None, 3.0) == (S.FIRST_STEP_S, 3.0)


@pytest.mark.slow
def test_a_hung_or_out_of_memory_device_renderer_falls_back_and_the_record_says_so(tmp_path, monkeypatch):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(TINY)
    package = tiny_package(tmp_path / "package.safetensors", 0)
    common = dict(package=package, heldout=3, motorcycle_scale=0.1, results=None, reserve_s=1)
    # hangs at its fourth batch, after a checkpoint at step 2: killed by the watchdog; the CPU renderer
    # continues from that checkpoint, so the steps add up
    monkeypatch.setenv(S.FAULT_ENV, "hang@3")
    hung = S.run_session(tmp_path / "out1", recipe, ["optim.max_steps=5", "run.ckpt_every=2"], deadline_s=120,
                         state_dir=tmp_path / "s1", stall_s=6, **common)
    device, cpu = hung["attempts"]
    assert device["error"].startswith("hung: no new step for 6 s (after step 3)") and device["checkpoint_step"] == 2
    assert cpu["ok"] and cpu["init"].endswith("salvaged.safetensors") and cpu["steps"] == 5
    assert hung["renderer"] == "cpu" and hung["steps"] == 7 and hung["fallback"] == device["error"]
    # out of memory at the first batch: the child reports the error; the fallback starts from the start weights
    monkeypatch.setenv(S.FAULT_ENV, "oom@0")
    oom = S.run_session(tmp_path / "out2", recipe, ["optim.max_steps=3"], deadline_s=120, state_dir=tmp_path / "s2",
                        **common)
    assert oom["fallback"].startswith("OutOfMemoryError: CUDA out of memory") and oom["steps"] == 3
    assert oom["attempts"][1]["init"] == str(package) and oom["status"] == "done"
    # a session that cannot train at all still leaves a record that says why
    monkeypatch.setenv(S.FAULT_ENV, "bogus")
    with pytest.raises(ConfigError):
        S.run_session(tmp_path / "out3", tmp_path / "missing.yaml", deadline_s=60, state_dir=tmp_path / "s3",
                      **common)
    failed = json.loads((tmp_path / "out3" / "session.json").read_text())
    assert failed["status"] == "failed" and "recipe not found" in failed["error"] and not failed["kept"]
