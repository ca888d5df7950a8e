"""benchmarks/gpu_speed.py, the prepared GPU measurement, run on the CPU at tiny sizes (it must work the first
time it meets a GPU: the device time of a session is short)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_speed.py"
TINY = ["--device", "cpu", "--preset", "tiny", "--size", "64", "128", "--batch", "2", "--runs", "1", "--warmup", "0",
        "--train-preset", "tiny", "--train-size", "64", "128", "--train-batch", "1", "--train-steps", "1",
        "--recipe-preset", "tiny", "--recipe-size", "64", "128", "--recipe-batches", "1,2", "--recipe-steps", "1"]


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, str(SCRIPT), *TINY, *args], capture_output=True, text=True, env=env,
                          timeout=300)


def rows(stdout: str) -> dict[str, str]:
    return {line.split("|")[1].strip(): line for line in stdout.splitlines() if line.startswith("| ")}


def test_every_section_measures_on_cpu():
    proc = run()
    assert proc.returncode == 0, proc.stderr
    table = rows(proc.stdout)
    assert "bf16 " in table["matrix-multiply peak"]
    # the model rows run in the precision this machine runs faster (bf16 on a GPU); the suite pins fp32
    assert "pairs/s" in table["forward eager, batch 2, 64x128, fp32"]
    assert "% of fp32 peak" in table["forward eager, batch 2, 64x128, fp32"]
    assert "pairs/s" in table["Predictor.predict_batch, 2 uint8 pairs 64x128, fp32"]  # the suite pins fp32
    for batch in (1, 2):
        assert "pairs/s" in table[f"recipe step tiny, batch {batch}, 64x128, fp32"]
    for state in ("on", "off"):
        assert "s/step" in table[f"MaDis train step tiny, batch 1, 64x128, fp32, checkpointing {state}"]
    assert "failed" not in proc.stdout and "skipped" not in proc.stdout


def test_sections_past_the_deadline_are_skipped():
    proc = run("--deadline", "0")
    assert proc.returncode == 0, proc.stderr
    skipped = [line for line in proc.stdout.splitlines() if "skipped: out of time" in line]
    assert len(skipped) == 6  # forward, predict_batch, two recipe batches, two training steps
