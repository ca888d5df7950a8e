"""Faults a training run must survive: pre-emption signals, a full disk, unreadable training images."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from toy_stereo import ToyStereo, cli, subprocess_env, toy_config, write_toy_folder

import madis_stereo as ms
from madis_stereo.app.cli import EXIT_PREEMPTED
from madis_stereo.errors import DataError, TrainingError
from madis_stereo.training import load_train_config, train
from madis_stereo.training.runlog import read_metrics
from madis_stereo.training.state import load_train_state

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


def train_losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run_dir / "metrics.jsonl", "train")}


# --- pre-emption --------------------------------------------------------------------------------------------
def run_and_signal(cmd: list[str], run: Path, send: Callable[[subprocess.Popen], None], at_step: int = 3,
                   timeout: float = 120, group: bool = False) -> subprocess.CompletedProcess:
    """Start a training command writing into ``run``, call ``send(process)`` once ``at_step`` steps are
    logged, wait for it to stop."""
    proc = subprocess.Popen(cmd, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=group)
    try:
        deadline = time.monotonic() + timeout
        while max(train_losses(run), default=0) < at_step:
            assert proc.poll() is None, "the run ended before the signal: " + proc.stderr.read()[-2000:]
            assert time.monotonic() < deadline, f"the run never reached step {at_step}"
            time.sleep(0.01)
        send(proc)
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def start_and_signal(run: Path, config: Path, signum: int, group: bool = False) -> subprocess.CompletedProcess:
    """Start ``madis-stereo train``, send ``signum`` once a few steps are logged, wait for it to stop."""
    def send(proc: subprocess.Popen) -> None:
        if group:  # what a terminal's Ctrl-C does: the whole foreground group, data-loader workers included
            os.killpg(proc.pid, signum)
        else:
            proc.send_signal(signum)

    return run_and_signal(cli("train", str(config), "--out", str(run)), run, send, group=group)


def test_sigterm_saves_a_checkpoint_and_the_resumed_run_continues_exactly(tmp_path, toy_folder):
    steps = 12
    sections = {"data": {"train": [toy_folder]}, "optim": {"max_steps": steps},
                "run": {"ckpt_every": 100, "keep_last": 2}}  # no periodic checkpoint: only the signal's
    expected = train_losses(train(load_train_config(toy_config(**sections)), out_dir=tmp_path / "ref").run_dir)

    run = tmp_path / "run"
    config = tmp_path / "toy.yaml"
    config.write_text(yaml.safe_dump(toy_config(**sections)))
    done = start_and_signal(run, config, signal.SIGTERM)
    assert done.returncode == EXIT_PREEMPTED == 75, done.stderr[-2000:]
    stopped_at = load_train_state(run / "train_state.pt")["step"]
    assert 3 <= stopped_at < steps
    assert f"stopped by SIGTERM at step {stopped_at}" in done.stderr
    assert f"madis-stereo train --resume {run}" in done.stderr
    assert sorted(train_losses(run)) == list(range(1, stopped_at + 1))  # the step in flight was finished
    ms.load_model(run / f"ckpt_step{stopped_at}.safetensors")

    resumed = subprocess.run(cli("train", "--resume", str(run)), env=subprocess_env(), capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert train_losses(run) == expected  # bit-identical to the run that was never stopped


@pytest.mark.parametrize("signum", [pytest.param(signal.SIGUSR1, marks=pytest.mark.slow), signal.SIGINT])
def test_sigusr1_and_ctrl_c_stop_the_same_way_with_data_workers(tmp_path, toy_folder, signum):
    sections = {"data": {"train": [toy_folder]}, "optim": {"max_steps": 200},
                "run": {"ckpt_every": 100, "num_workers": 2}}
    config = tmp_path / "toy.yaml"
    config.write_text(yaml.safe_dump(toy_config(**sections)))
    run = tmp_path / "run"
    done = start_and_signal(run, config, signum, group=True)
    assert done.returncode == EXIT_PREEMPTED, done.stderr[-2000:]
    stopped_at = load_train_state(run / "train_state.pt")["step"]
    assert f"stopped by {signal.Signals(signum).name} at step {stopped_at}" in done.stderr
    assert "--resume" in done.stderr and "Traceback" not in done.stderr
    assert (run / f"ckpt_step{stopped_at}.safetensors").is_file()


def _worker_of_rank(agent_pid: int, rank: int) -> int:
    """The pid of the torchrun worker of ``rank`` under ``agent_pid`` (Linux /proc: parent chain and RANK)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            parents, pid = set(), int(entry.name)
            while pid > 1 and pid not in parents:
                parents.add(pid)
                pid = int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if agent_pid in parents and int(entry.name) != agent_pid and f"RANK={rank}".encode() in environ:
            return int(entry.name)
    raise AssertionError(f"no worker of rank {rank} under torchrun {agent_pid}")


@pytest.mark.skipif(not Path("/proc/self/environ").is_file(), reason="finds the rank's process through /proc")
def test_two_ranks_stop_at_the_same_step_when_only_one_is_signalled_and_resume_exactly(tmp_path, toy_folder):
    steps = 10
    sections = {"data": {"train": [toy_folder]}, "optim": {"max_steps": steps}, "run": {"ckpt_every": 100}}
    config = tmp_path / "toy.yaml"
    config.write_text(yaml.safe_dump(toy_config(**sections)))

    def torchrun(*args: str) -> list[str]:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                "-m", "madis_stereo", *args]

    reference = subprocess.run(torchrun("train", str(config), "--out", str(tmp_path / "ref")), env=subprocess_env(),
                               capture_output=True, text=True, timeout=300)
    assert reference.returncode == 0, reference.stderr[-2000:]
    expected = train_losses(tmp_path / "ref")
    assert sorted(expected) == list(range(1, steps + 1))

    run = tmp_path / "run"
    # what a node's pre-emption notice can do: reach one rank only
    done = run_and_signal(torchrun("train", str(config), "--out", str(run)), run,
                          lambda proc: os.kill(_worker_of_rank(proc.pid, 1), signal.SIGTERM), at_step=2, timeout=180)
    err = done.stderr
    assert done.returncode != 0  # torchrun reports the workers' exit status 75 as a failure
    assert f"exitcode  : {EXIT_PREEMPTED}" in err or f"exitcode: {EXIT_PREEMPTED}" in err, err[-3000:]
    stopped_at = load_train_state(run / "train_state.pt")["step"]
    assert 2 <= stopped_at < steps
    assert f"stopped by SIGTERM at step {stopped_at}" in err and f"--resume {run}" in err
    assert sorted(train_losses(run)) == list(range(1, stopped_at + 1))  # rank 0 finished the same step, no more

    resumed = subprocess.run(torchrun("train", "--resume", str(run)), env=subprocess_env(), capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert train_losses(run) == expected  # bit-identical to the two-rank run that was never stopped


RACE = """
import sys
import torch
from madis_stereo.training import distributed as D

sys.setswitchinterval(1000.0)  # the main thread keeps the GIL unless it blocks: what makes the race likely
env = D.setup("cpu")
model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(3, 3))  # the group then outlives destroy


def stop_flag():  # the trainer's last collective before it stops: its tensor dies in Python at once
    return D.all_reduce_max(torch.tensor([1.0]), env).item()


stop_flag()
D.teardown(env)
"""


@pytest.mark.slow
def test_a_rank_exits_with_its_own_status_after_its_last_collective(tmp_path):
    # a gloo worker thread frees a finished collective's tensors after the caller has the result; without
    # teardown's pause about one launch in five aborted at interpreter shutdown (exit -6, "terminate called")
    script = tmp_path / "race.py"
    script.write_text(RACE)
    for attempt in range(16):
        done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                               str(script)], env=subprocess_env(), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"launch {attempt}: {done.stderr[-1500:]}"


# --- a full disk --------------------------------------------------------------------------------------------
@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names open files through /proc")
@pytest.mark.parametrize("victim", ["ckpt_step4", "train_state"])
def test_disk_full_while_saving_keeps_the_previous_checkpoint_usable(tmp_path, monkeypatch, victim):
    from madis_stereo.utils import files as fileio

    real_fsync = fileio.os.fsync
    writes = {"train_state": 0}

    def fsync(fd):  # the atomic writer's flush of its temporary file: where a full disk shows
        name = os.readlink(f"/proc/self/fd/{fd}")
        if "train_state" in name:
            writes["train_state"] += 1
        if victim in name and (victim != "train_state" or writes["train_state"] == 2):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(fileio.os, "fsync", fsync)
    cfg = load_train_config(toy_config(optim={"max_steps": 6}, run={"ckpt_every": 2}))
    with pytest.raises(TrainingError) as caught:
        train(cfg, out_dir=tmp_path, train_dataset=ToyStereo(8))
    message = str(caught.value)
    assert "step 4" in message and "No space left on device" in message
    assert "checkpoint of step 2" in message and f"madis-stereo train --resume {tmp_path}" in message
    state = load_train_state(tmp_path / "train_state.pt")
    assert state["step"] == 2 and state["checkpoint"] == "ckpt_step2.safetensors"
    ms.load_model(tmp_path / "ckpt_step2.safetensors")
    assert not (tmp_path / "ckpt_step4.safetensors").exists()  # a model without its state is removed
    assert not list(tmp_path.glob(".*.tmp"))

    monkeypatch.setattr(fileio.os, "fsync", real_fsync)  # space freed: the run resumes and finishes
    result = train(cfg, out_dir=tmp_path, resume=True, train_dataset=ToyStereo(8))
    assert result.step == 6 and sorted(train_losses(tmp_path)) == list(range(1, 7))


# --- unreadable training images -------------------------------------------------------------------------------
@pytest.fixture()
def broken_folder(tmp_path) -> tuple[dict, Path]:
    spec = write_toy_folder(tmp_path / "data", 8)
    bad = tmp_path / "data" / "left" / "0005.png"
    bad.write_bytes(bad.read_bytes()[:200])  # truncated mid-stream
    return spec, bad


def test_a_corrupt_training_image_is_named_with_data_workers(tmp_path, broken_folder):
    spec, bad = broken_folder
    cfg = load_train_config(toy_config(data={"train": [spec]}, optim={"max_steps": 8},
                                       run={"num_workers": 2, "ckpt_every": 0}))
    with pytest.raises(DataError) as caught:
        train(cfg, out_dir=tmp_path / "run")
    message = str(caught.value)
    assert str(bad) in message and "truncated or corrupt" in message
    assert "DataLoader worker" not in message and "\n" not in message
    assert "data.skip_bad_samples=true" in message  # how to go on without it


def test_the_train_command_reports_the_file_in_one_line(tmp_path, broken_folder):
    spec, bad = broken_folder
    config = tmp_path / "toy.yaml"
    config.write_text(yaml.safe_dump(toy_config(data={"train": [spec]}, run={"num_workers": 1})))
    done = subprocess.run(cli("train", str(config), "--out", str(tmp_path / "run")), env=subprocess_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert str(bad) in done.stderr and "Traceback" not in done.stderr


def test_bad_samples_are_skipped_and_counted_when_asked(tmp_path, broken_folder, caplog):
    spec, bad = broken_folder
    cfg = load_train_config(toy_config(data={"train": [spec], "skip_bad_samples": True},
                                       optim={"max_steps": 8}, run={"num_workers": 2, "ckpt_every": 0}))
    result = train(cfg, out_dir=tmp_path / "run")  # 8 pairs, batch 2: two epochs, the bad pair read in each
    assert result.step == 8 and result.bad_samples == 2
    assert "2 unreadable training samples were skipped" in caplog.text
