"""Run folders: one training process at a time (a lock naming the holder, recovered after a crash), no empty
folder after a failed start, and ``--resume`` of a finished run or with model overrides."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import time

import pytest
import torch
from test_training import train_losses, write_config
from tools_helpers import cli as cli_in_process
from toy_stereo import cli, subprocess_env, toy_config, write_toy_folder

from madis_stereo.errors import ConfigError, TrainingError
from madis_stereo.training import load_train_config, train
from madis_stereo.training.state import LOCK_NAME

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def toy_folder(tmp_path_factory) -> dict:
    return write_toy_folder(tmp_path_factory.mktemp("toy_folder"), 8)


def test_second_process_is_refused_naming_the_first_and_a_crash_leaves_no_lock(tmp_path, toy_folder, caplog):
    run = tmp_path / "run"
    config = write_config(tmp_path / "toy.yaml", data={"train": [toy_folder]}, optim={"max_steps": 100000},
                          run={"ckpt_every": 2, "log_every": 1})
    proc = subprocess.Popen(cli("train", str(config), "--out", str(run)), env=subprocess_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not ((run / "train_state.pt").exists() and max(train_losses(run), default=0) >= 2):
            assert proc.poll() is None, "the first run ended early"
            assert time.monotonic() < deadline, "the first run never reached step 2"
            time.sleep(0.02)
        assert json.loads((run / LOCK_NAME).read_text())["pid"] == proc.pid
        resumed = load_train_config(run / "config.yaml", ["optim.max_steps=3"])
        with pytest.raises(TrainingError, match=rf"{run} is in use by another training process \(pid {proc.pid} "):
            train(resumed, out_dir=run, resume=True)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    caplog.set_level(logging.INFO, logger="madis_stereo")
    state_step = torch.load(run / "train_state.pt", weights_only=True)["step"]
    result = train(load_train_config(run / "config.yaml", [f"optim.max_steps={state_step + 1}"]), out_dir=run,
                   resume=True)
    assert result.steps_trained == 1
    assert f"took over the lock of a run that ended without releasing it (pid {proc.pid}" in caplog.text
    assert (run / LOCK_NAME).read_text() == ""  # released cleanly


def test_failed_start_leaves_no_run_folder(tmp_path, toy_folder):
    cfg = load_train_config(toy_config(data={"train": [toy_folder]}, model={"init": str(tmp_path / "missing.pt")}))
    with pytest.raises(ConfigError, match="checkpoint not found"):
        train(cfg, out_dir=tmp_path / "new" / "run")
    assert not (tmp_path / "new" / "run").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    with pytest.raises(ConfigError):
        train(cfg, out_dir=mine)
    assert mine.is_dir()  # a folder the user made stays
    proc = cli_in_process("train", "--resume", tmp_path / "typo")
    assert proc.returncode == 2 and not (tmp_path / "typo").exists()


def test_resume_of_finished_run_does_nothing_and_model_overrides_are_refused(tmp_path, toy_folder):
    config = write_config(tmp_path / "toy.yaml", data={"train": [toy_folder]}, optim={"max_steps": 2},
                          run={"ckpt_every": 2})
    run = tmp_path / "run"
    assert cli_in_process("train", config, "--out", run).returncode == 0
    log_before = (run / "metrics.jsonl").read_text()
    proc = cli_in_process("train", "--resume", run)
    assert proc.returncode == 0, proc.stderr
    assert "nothing trained: the run already finished at step 2" in proc.stdout
    assert "already finished at step 2 (of 2): nothing to train" in proc.stderr
    assert "training 2 steps" not in proc.stderr
    assert (run / "metrics.jsonl").read_text() == log_before
    proc = cli_in_process("train", "--resume", run, "model.init=bundled", "model.rope_freq=10", "optim.max_steps=4")
    assert proc.returncode == 2
    assert ("model.init='bundled' (the run has None), model.rope_freq=10.0 (the run has 100.0) cannot apply"
            in proc.stderr)
    assert (run / "metrics.jsonl").read_text() == log_before
    proc = cli_in_process("train", "--resume", run, "optim.max_steps=3")
    assert proc.returncode == 0 and "trained 1 steps (now at step 3)" in proc.stdout
