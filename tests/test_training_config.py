"""TrainConfig: strict loading, overrides, round trip, recipes, schedule and the ``train`` CLI's errors."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import madis_stereo as ms
from madis_stereo.errors import ConfigError
from madis_stereo.training import build_student, load_train_config
from madis_stereo.training.config import TrainConfig
from madis_stereo.training.schedule import lr_at, param_groups

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
RECIPES = ("tiny_synthetic", "madis_vitb_basedec", "croco_stereo_baseline_vitb")


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "madis_stereo", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=120)


@pytest.mark.parametrize("name", RECIPES)
def test_recipes_load_and_round_trip(name):
    import yaml

    cfg = load_train_config(CONFIGS / f"{name}.yaml")
    assert TrainConfig.from_dict(yaml.safe_load(cfg.to_yaml())) == cfg


def test_paper_recipe_values():
    cfg = load_train_config(CONFIGS / "madis_vitb_basedec.yaml")
    arch = cfg.model.arch
    assert (arch.enc_embed_dim, arch.enc_depth, arch.dec_embed_dim, arch.dec_depth) == (768, 12, 768, 12)
    assert arch.hooks == (13, 16, 19, 23) and arch.crop == (352, 704)
    assert cfg.madis.enabled and cfg.madis.mask_ratio == 0.4 and cfg.teacher.momentum == 0.9999
    o = cfg.optim
    assert (o.lr, o.betas, o.weight_decay, o.batch_size, o.epochs, o.warmup_epochs) == (
        3e-5, (0.9, 0.95), 0.05, 6, 32, 1.0)
    baseline = load_train_config(CONFIGS / "croco_stereo_baseline_vitb.yaml")
    assert not baseline.madis.enabled and baseline.model.arch.hooks == (11, 15, 19, 23)


def test_overrides_and_unknown_keys():
    cfg = load_train_config(CONFIGS / "tiny_synthetic.yaml", ["optim.lr=1e-3", "model.dec_depth=2",
                                                                "model.dpt_hooks=[2,3,4,5]", "teacher.scope=encoder"])
    assert cfg.optim.lr == 1e-3 and cfg.model.arch.dec_depth == 2 and cfg.teacher.scope == "encoder"
    mixture = load_train_config(CONFIGS / "madis_vitb_basedec.yaml", ["data.train.1.root=/data/k15"])
    assert mixture.data.train[1]["root"] == "/data/k15" and mixture.data.train[0]["root"] == "data/sceneflow"
    with pytest.raises(ConfigError, match="not an index of a list of 3"):
        load_train_config(CONFIGS / "madis_vitb_basedec.yaml", ["data.train.3.root=/x"])
    for bad, name in (("optim.lrr=1", "'optim.lrr'"), ("model.enc_dept=3", "'model.enc_dept'"),
                      ("madis.weights.recon=2", "'madis.weights.recon'"), ("bogus=1", "'bogus'")):
        with pytest.raises(ConfigError, match=name):
            load_train_config(CONFIGS / "tiny_synthetic.yaml", [bad])
    for bad, message in (("optim.amp=fp8", "amp must be"), ("teacher.scope=decoder", "scope must be"),
                         ("madis.mask_ratio=1.0", "mask_ratio"), ("optim.lr=fast", "optim.lr: expected a number"),
                         ("optim.lr=-1", "^optim: lr and"), ("model.crop=[63,128]", "^model: crop")):
        with pytest.raises(ConfigError, match=message):
            load_train_config(CONFIGS / "tiny_synthetic.yaml", [bad])


def test_placeholder_init_fails_clearly(tmp_path):
    cfg = load_train_config(CONFIGS / "madis_vitb_basedec.yaml")
    with pytest.raises(ConfigError, match="model.init is not set"):
        build_student(cfg)
    cfg = load_train_config(CONFIGS / "madis_vitb_basedec.yaml", [f"model.init={tmp_path / 'missing.pth'}"])
    with pytest.raises(ConfigError, match="checkpoint not found"):
        build_student(cfg)


def test_init_bundled_loads_the_packaged_weights_and_checks_the_architecture(monkeypatch, tmp_path):
    from madis_stereo.model.checkpoint import default_model_path, read_weights
    from madis_stereo.training import trainer as trainer_module

    data = {"train": [{"name": "synthetic"}]}
    bundled = read_weights(default_model_path())
    for init in ("bundled", str(default_model_path())):
        student = build_student(load_train_config({"model": {"preset": "small", "init": init, "crop": [128, 256]},
                                                   "data": data}))
        assert student.training and student.config.crop == (128, 256)  # the crop may change, weights do not
        for key, value in student.state_dict().items():
            assert torch.equal(value, bundled[key].float()), key
    with pytest.raises(ConfigError, match=r"differs from the bundled model in enc_depth 2 \(bundled: 6\)"):
        build_student(load_train_config({"model": {"preset": "small", "init": "bundled", "enc_depth": 2},
                                         "data": data}))
    with pytest.raises(ConfigError, match="dec_embed_dim"):
        build_student(load_train_config({"model": {"preset": "tiny", "init": "bundled"}, "data": data}))
    monkeypatch.setattr(trainer_module, "default_model_path", lambda: tmp_path / "none.safetensors")
    with pytest.raises(ConfigError, match="no bundled model in this installation"):
        build_student(load_train_config({"model": {"preset": "small", "init": "bundled"}, "data": data}))


def test_init_from_croco_pretraining_and_from_ours(croco_dir, tmp_path):
    import json

    kwargs = json.loads((croco_dir / "croco_pretrain_tiny.json").read_text())["croco_kwargs"]
    model = {k: kwargs[k] for k in ("enc_embed_dim", "enc_depth", "enc_num_heads", "dec_embed_dim", "dec_depth",
                                    "dec_num_heads")}
    model.update(init=str(croco_dir / "croco_pretrain_tiny.pth"), dpt_hooks=[kwargs["enc_depth"]] * 4)
    cfg = load_train_config({"model": model, "data": {"train": [{"name": "synthetic"}]}})
    student = build_student(cfg)
    reference = ms.load_model(croco_dir / "croco_pretrain_tiny.pth", config_overrides=cfg.model.arch.to_dict())
    assert torch.equal(student.enc_blocks[0].attn.qkv.weight, reference.enc_blocks[0].attn.qkv.weight)
    ms.save_model(student, tmp_path / "ours.safetensors")
    again = build_student(load_train_config({**cfg.to_dict(), "model": {**cfg.to_dict()["model"],
                                                                         "init": str(tmp_path / "ours.safetensors")}}))
    assert all(torch.equal(a, b) for a, b in zip(student.state_dict().values(), again.state_dict().values()))
    wrong = {**cfg.to_dict()["model"], "init": str(tmp_path / "ours.safetensors"), "dec_embed_dim": 64,
             "dec_num_heads": 4}
    with pytest.raises(ms.CheckpointError):
        build_student(load_train_config({"model": wrong, "data": {"train": [{"name": "synthetic"}]}}))


def test_warmup_then_half_cosine():
    base = 3e-5
    assert lr_at(0, 100, 10, base) == 0.0
    assert lr_at(5, 100, 10, base) == pytest.approx(base / 2)
    assert lr_at(10, 100, 10, base) == pytest.approx(base)
    assert lr_at(55, 100, 10, base) == pytest.approx(base / 2)  # halfway through the cosine
    assert lr_at(99, 100, 10, base) == pytest.approx(base * 0.5 * (1 + math.cos(math.pi * 89 / 90)))
    assert lr_at(100, 100, 10, base) == pytest.approx(0.0, abs=1e-20)
    assert lr_at(0, 100, 0, base) == base


def test_warmup_stable_decay_shape():
    base, total = 5e-4, 1000
    lrs = [lr_at(step, total, 50, base, "wsd", 0.2) for step in range(total + 1)]
    assert lrs[:51] == pytest.approx([base * s / 50 for s in range(51)])  # linear warm-up from 0
    assert lrs[50:801] == pytest.approx([base] * 751)  # constant: the stable phase
    assert lrs[800:] == pytest.approx([base * (1000 - s) / 200 for s in range(800, 1001)])  # 200-step cool-down
    assert lrs[-1] == 0.0 and lr_at(total + 5, total, 50, base, "wsd", 0.2) == 0.0
    # the cool-down is a fraction of the run: a longer budget moves it, the stable rate stays the same
    assert lr_at(800, 2000, 50, base, "wsd", 0.2) == base and lr_at(1600, 2000, 50, base, "wsd", 0.2) == base
    assert lr_at(1800, 2000, 50, base, "wsd", 0.2) == pytest.approx(base / 2)
    # a run shorter than warm-up plus cool-down takes the smaller ramp; never above base
    short = [lr_at(s, 10, 8, base, "wsd", 0.5) for s in range(11)]
    assert max(short) < base and short[4] == pytest.approx(base / 2) and short[8] == pytest.approx(base * 2 / 5)
    with pytest.raises(ValueError, match="schedule must be one of"):
        lr_at(0, 10, 1, base, "linear")


def test_schedule_settings_are_checked():
    data = {"data": {"train": [{"name": "synthetic"}]}}
    with pytest.raises(ConfigError, match="schedule must be one of cosine, wsd"):
        load_train_config({**data, "optim": {"schedule": "step"}})
    with pytest.raises(ConfigError, match="cooldown_frac"):
        load_train_config({**data, "optim": {"schedule": "wsd", "cooldown_frac": 0}})
    assert load_train_config({**data, "optim": {"schedule": "wsd"}}).optim.cooldown_frac == 0.2


def test_no_weight_decay_on_biases_norms_and_mask_token():
    model = ms.StereoModel(ms.ModelConfig.preset("tiny"))
    model.head.fusion[3].rcu1.requires_grad_(False)
    decay, no_decay = param_groups(model.named_parameters(), 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    plain = {names[id(p)] for p in no_decay["params"]}
    decayed = {names[id(p)] for p in decay["params"]}
    assert "mask_token" in plain and "enc_blocks.0.norm1.weight" in plain and "head.out.4.bias" in plain
    assert "enc_blocks.0.attn.qkv.weight" in decayed and "head.layer_rn.0.weight" in decayed
    assert all(p.ndim > 1 for p in decay["params"])
    assert not any(n.startswith("head.fusion.3.rcu1") for n in plain | decayed)  # frozen: left out


def test_cli_rejects_unknown_key_by_name():
    out = cli("train", str(CONFIGS / "tiny_synthetic.yaml"), "optim.lrr=1", "--out", "unused")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "'optim.lrr'" in lines[0], out.stderr


def test_cli_needs_a_config_or_resume(tmp_path):
    out = cli("train")
    assert out.returncode == 2 and "CONFIG.yaml" in out.stderr
    out = cli("train", "--resume", str(tmp_path))
    assert out.returncode == 2 and "config.yaml" in out.stderr


def _budget_run(run_dir, monkeypatch, **optim):
    """A 20-second budgeted tiny run on a deterministic clock (0.1 s per reading: two readings per step)."""
    from madis_stereo.training import load_train_config, train
    from madis_stereo.training import trainer as trainer_module

    clock = iter(i * 0.1 for i in range(10**6))
    monkeypatch.setattr(trainer_module.time, "perf_counter", lambda: next(clock))
    cfg = load_train_config({
        "model": {"preset": "tiny", "crop": [32, 64], "dpt_hooks": [4, 5, 6, 7]},
        "data": {"train": [{"name": "synthetic", "size": [32, 64], "length": 64, "max_disparity": 8}]},
        "madis": {"enabled": False},
        "optim": {"lr": 1e-4, "batch_size": 1, "max_steps": 100000, "warmup_steps": 5, "time_budget_s": 20.0,
                  **optim},
        "run": {"num_workers": 0, "device": "cpu", "ckpt_every": 0, "log_every": 0},
    })
    return train(cfg, out_dir=run_dir)


def test_time_budget_fixes_the_run_length(tmp_path, monkeypatch):
    """A fixed compute budget: after the calibration steps the run length is fixed from the measured pace."""
    result = _budget_run(tmp_path / "run", monkeypatch)
    # two clock readings per step (0.2 s): ~6 s used by step 30, (20 * 0.97 - 6) / 0.2 ~ 67 more steps;
    # the run ends before the second fit at step 150
    assert 90 <= result.step <= 100
    assert result.checkpoint is not None and result.checkpoint.exists()


def test_wsd_cooldown_ends_where_the_time_budget_ends_the_run(tmp_path, monkeypatch):
    from madis_stereo.training.runlog import read_metrics

    result = _budget_run(tmp_path / "run", monkeypatch, schedule="wsd", cooldown_frac=0.25)
    lrs = [r["lr"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl", "train")]
    total, cool = result.step, round(0.25 * result.step)
    assert len(lrs) == total and 90 <= total <= 100
    assert lrs[:6] == pytest.approx([0, 2e-5, 4e-5, 6e-5, 8e-5, 1e-4])  # warm-up
    assert lrs[5 : total - cool + 1] == pytest.approx([1e-4] * (total - cool - 4))  # stable
    assert lrs[total - cool :] == pytest.approx([1e-4 * (cool - k) / cool for k in range(cool)])  # to 0
