"""The console: number formatting, the progress line, and a short training seen through a pseudo-terminal
and through a pipe."""

from __future__ import annotations

import io
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from toy_stereo import toy_config, write_toy_folder

from madis_stereo.utils.console import Progress, duration, metric_rows, sig, summary

ROOT = Path(__file__).resolve().parents[1]


def test_sig_and_duration():
    assert [sig(v) for v in (3.218198289191548, 0.012345, 1234.5, 4.5e-5, 0.0, 7)] == \
        ["3.22", "0.0123", "1234", "4.50e-05", "0", "7"]
    assert [duration(s) for s in (5, 83, 3723, float("nan"))] == ["0:05", "1:23", "1:02:03", "?"]
    assert summary("done", [("steps", 12), ("epe", 3.218198)]) == "done\n  steps  12\n  epe    3.22"


def test_metric_rows_show_best_so_far():
    rows = metric_rows({"epe": 3.2181, "d1": 45.04}, {"epe": (2.9, 50), "d1": (45.04, 100)})
    assert rows == [{"metric": "epe", "value": "3.22", "best": "2.9 (step 50)"},
                    {"metric": "d1", "value": "45", "best": "45 (step 100)"}]


def test_progress_draws_only_on_a_terminal():
    plain = io.StringIO()
    p = Progress(10, desc="train", stream=plain)
    for _ in range(10):
        p.update(1, loss=2.5)
    p.close()
    assert plain.getvalue() == ""  # a StringIO is not a terminal
    forced = io.StringIO()
    p = Progress(10, desc="train", items_per_step=4, item_unit="pairs", stream=forced, enabled=True)
    p.update(1, loss=2.5)
    p.close()
    out = forced.getvalue()
    assert out.startswith("\r\x1b[K") and out.endswith("\n")
    assert re.search(r"train  1/10 \[##\s+\]  10% \| .* pairs/s \| ETA .* \| loss 2\.5", out)


@pytest.fixture(scope="module")
def toy_run_config(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("console")
    folder = write_toy_folder(root / "data", 4)
    cfg = toy_config(data={"train": [folder], "val": folder},
                     optim={"max_steps": 4}, run={"log_every": 2, "val_every": 2, "ckpt_every": 0})
    path = root / "toy.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _env() -> dict:
    paths = [str(ROOT / "src"), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "OMP_NUM_THREADS": "1", "COLUMNS": "120"}


def _train_command(config: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "madis_stereo", "train", str(config), "--out", str(out)]


def test_training_under_a_terminal_shows_progress_table_and_summary(toy_run_config, tmp_path):
    main, child = pty.openpty()
    proc = subprocess.Popen(_train_command(toy_run_config, tmp_path / "run"), stdin=child, stdout=child,
                            stderr=child, env=_env(), close_fds=True)
    os.close(child)
    chunks = []
    while True:
        try:
            data = os.read(main, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(main)
    assert proc.wait(timeout=300) == 0
    out = b"".join(chunks).decode()
    assert re.search(r"\r\x1b\[Ktrain  \d/4 \[#*\s*\]\s+\d+% \| [\d.?]+ pairs/s \| ETA [\d:?]+ \| loss \d", out), out
    assert "train  4/4" in out
    assert re.search(r"metric\s+value\s+best", out) and re.search(r"\nepe\s+[\d.]+\s+[\d.]+ \(step [24]\)", out)
    assert "training finished" in out and "best checkpoint" in out and "metrics.jsonl" in out
    assert not re.search(r"step \d/4  loss", out)  # the per-step log lines are the bar's job here
    assert (tmp_path / "run" / "metrics.jsonl").read_text().count('"kind": "train"') == 4  # logs unchanged


def test_training_without_a_terminal_prints_plain_lines(toy_run_config, tmp_path):
    done = subprocess.run(_train_command(toy_run_config, tmp_path / "run"), env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    err = done.stderr
    assert "\r" not in err and "\x1b" not in err
    assert [int(s) for s in re.findall(r"step (\d)/4  loss", err)] == [2, 4]
    assert re.search(r"pairs/s  ETA", err)
    assert "validation at step 2" in err and "training finished" in err
