"""docs/WALKTHROUGH.md end to end at tiny sizes: make a synthetic folder dataset, evaluate the bundled model on
it, fine-tune the bundled model by name for a few steps, evaluate again, predict on a *_left/*_right folder.

The commands are the walkthrough's, with sizes and step counts shrunk (and the tiles at the images' size).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tools_helpers import cli

pytestmark = pytest.mark.usefixtures("one_thread")

RECIPE = Path(__file__).resolve().parents[1] / "configs" / "finetune_bundled.yaml"
SIZE = ("64", "128")
FOLDER = ["--dataset", "folder", "--set", "disparity='disparity/*.pfm'", "--crop", *SIZE, "--device", "cpu"]


def _ok(proc):
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_walkthrough_end_to_end(tmp_path):
    data = tmp_path / "data"
    # 1. a synthetic folder dataset (training and held-out scenes), written with the new command
    for name, count, seed in (("synth", 4, 0), ("synth_test", 2, 1)):
        _ok(cli("data", "make-synthetic", "--layout", "folder", "--out", data / name, "--count", count,
                "--size", *SIZE, "--set", "max_disparity=16", "--set", f"seed={seed}"))
    # 2. the bundled model on the held-out scenes
    _ok(cli("evaluate", "--root", data / "synth_test", *FOLDER, "--out", tmp_path / "before.json"))
    before = json.loads((tmp_path / "before.json").read_text())
    assert before["checkpoint"] == "bundled default" and len(before["per_image"]) == 2
    # 3. fine-tune the bundled model by name for a few steps
    run = tmp_path / "runs" / "finetune"
    train = _ok(cli("train", RECIPE, "--out", run, f"data.train.0.root={data / 'synth'}",
                    f"data.val.root={data / 'synth_test'}", f"model.crop=[{SIZE[0]},{SIZE[1]}]",
                    "optim.max_steps=2", "optim.warmup_steps=1", "run.device=cpu"))
    assert "trained 2 steps" in train.stdout and (run / "best.safetensors").is_file()
    # 4. evaluate the fine-tuned model on the same scenes
    _ok(cli("evaluate", "--checkpoint", run / "best.safetensors", "--root", data / "synth_test", *FOLDER,
            "--out", tmp_path / "after.json"))
    after = json.loads((tmp_path / "after.json").read_text())
    assert after["aggregate"]["all/epe"] != before["aggregate"]["all/epe"]  # the weights did change
    # 5. predict on a folder of *_left / *_right images (left and right in one folder)
    _ok(cli("data", "make-synthetic", "--layout", "pairs", "--out", data / "pairs", "--count", 2, "--size", *SIZE))
    _ok(cli("predict", data / "pairs", data / "pairs", "-o", tmp_path / "preds", "--checkpoint",
            run / "best.safetensors", "--crop", *SIZE, "--device", "cpu", "--legend"))
    assert sorted(p.name for p in (tmp_path / "preds").iterdir()) == ["0000_left_color.png", "0001_left_color.png"]
