"""The README's Python API block runs as written (on the tiny preset instead of ViT-B, to stay fast)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image

README = Path(__file__).resolve().parents[1] / "README.md"


def api_block() -> str:
    text = README.read_text()
    section = text[text.index("## Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_python_api_block_runs(tmp_path, monkeypatch):
    code = api_block()
    assert '"vitb_basedec"' in code  # the substitution below must find its target
    code = code.replace('"vitb_basedec"', '"tiny"')
    rng = np.random.default_rng(0)
    for name in ("left.png", "right.png"):
        Image.fromarray(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)).save(tmp_path / name)
    monkeypatch.chdir(tmp_path)
    gen = torch.Generator().manual_seed(0)
    namespace = {
        "left": torch.randn(1, 3, 64, 96, generator=gen),
        "right": torch.randn(1, 3, 64, 96, generator=gen),
        "mask_left": torch.rand(1, 24, generator=gen) < 0.4,
        "mask_right": torch.rand(1, 24, generator=gen) < 0.4,
        "gt": np.full((64, 96), 4.0, dtype=np.float32),
    }
    exec(compile(code, str(README), "exec"), namespace)
    assert namespace["pred"].disparity.shape == (64, 96)
    assert namespace["out"].disparity.shape == (1, 1, 64, 96)
    assert namespace["m"].recon_left.shape[:2] == (1, 24)
    assert namespace["disp"].shape == (1, 1, 64, 96)
