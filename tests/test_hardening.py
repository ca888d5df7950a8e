"""Silent failures found in review (issue #14): each test here failed before its fix.

Validation metrics that are NaN, the best checkpoint across a resume, non-finite gradients, the CLI's error
handling, library calls that changed the caller's model, numerically safe tile blending, ONNX files without
our metadata, the certainty scale, the confidence colours and the run log on a failed start.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from tools_helpers import stereo_images
from toy_stereo import ToyStereo, batch_of, engine_for, toy_config

import madis_stereo as ms
from madis_stereo.errors import ConfigError
from madis_stereo.model.checkpoint import read_metadata
from madis_stereo.training import Engine, load_train_config, train
from madis_stereo.training import trainer as trainer_module
from madis_stereo.training.distributed import DistEnv
from madis_stereo.training.validation import validate

CPU = DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**changes) -> ms.StereoModel:
    torch.manual_seed(0)
    return ms.StereoModel(ms.ModelConfig.preset("tiny", crop=(64, 128), **changes))


# --- validation metrics and the best checkpoint ----------------------------------------------------------
class Scripted:
    """Stands in for ``validate``: returns the next scripted epe (or raises it when it is an exception)."""

    def __init__(self, *values):
        self.values = list(values)

    def __call__(self, *args, **kwargs):
        value = self.values.pop(0)
        if isinstance(value, BaseException):
            raise value
        return {"epe": value, "bad_3": 0.0}


class Crash(Exception):
    pass


def test_a_nan_first_validation_does_not_freeze_best(tmp_path, monkeypatch):
    monkeypatch.setattr(trainer_module, "validate", Scripted(math.nan, 2.0, 3.0))
    cfg = load_train_config(toy_config(optim={"max_steps": 3}, run={"val_every": 1, "ckpt_every": 0}))
    result = train(cfg, out_dir=tmp_path, train_dataset=ToyStereo(8), val_dataset=ToyStereo(2))
    assert result.best == {"metric": "epe", "value": 2.0, "step": 2}
    assert read_metadata(tmp_path / "best.safetensors")["metadata"]["metrics"]["epe"] == 2.0


class BlindOnOne(torch.nn.Module):
    """Predicts the GT shift of the toy pairs, except NaN everywhere for the pair whose first pixel is dark."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, left, right):
        b, _, h, w = left.shape
        disp = torch.full((b, 1, h, w), 5.0)
        disp[left[:, 0, 0, 0] < 0] = math.nan
        return ms.StereoOutput(disp, torch.zeros(b, 1, h, w))


def test_one_image_without_finite_predictions_does_not_make_the_mean_nan():
    items = []
    for value in (200, 10):  # bright first pixel: predicted; dark: all NaN
        item = ToyStereo(1)[0]
        item["left"][:, 0, 0] = value
        item["disparity"] = torch.full_like(item["disparity"], 5.0)
        items.append(item)
    metrics = validate(BlindOnOne(), items, CPU, crop=(64, 128), overlap=0.5, conf_mode="conf_expsigmoid_15_3")
    assert metrics["epe"] == 0.0  # the finite image; the blind one counts in invalid_pred and bad_*
    assert metrics["invalid_pred"] == 50.0 and metrics["bad_3"] == 50.0
    assert all(math.isfinite(v) for v in metrics.values())


def test_a_resume_never_overwrites_a_better_best(tmp_path, monkeypatch):
    cfg = load_train_config(toy_config(optim={"max_steps": 6}, run={"val_every": 1, "ckpt_every": 2}))
    # step 1: 5, step 2: 4 (checkpoint), step 3: 1 (best.safetensors), crash in step 4's validation
    monkeypatch.setattr(trainer_module, "validate", Scripted(5.0, 4.0, 1.0, Crash()))
    with pytest.raises(Crash):
        train(cfg, out_dir=tmp_path, train_dataset=ToyStereo(8), val_dataset=ToyStereo(2))
    assert read_metadata(tmp_path / "best.safetensors")["metadata"]["metrics"]["epe"] == 1.0
    # the resumed run (from step 2) validates steps 3..6 worse than the best seen before the crash
    monkeypatch.setattr(trainer_module, "validate", Scripted(2.0, 2.0, 2.0, 2.0))
    result = train(cfg, out_dir=tmp_path, resume=True, train_dataset=ToyStereo(8), val_dataset=ToyStereo(2))
    assert result.best == {"metric": "epe", "value": 1.0, "step": 3}
    meta = read_metadata(tmp_path / "best.safetensors")["metadata"]
    assert meta["metrics"]["epe"] == 1.0 and meta["steps"] == 3


# --- non-finite gradients, gradient clipping, the fp16 scaler -----------------------------------------------
def poison_gradients(engine: Engine) -> None:
    """A finite loss whose gradient is +inf in one student parameter."""
    param = next(p for n, p in engine.model.named_parameters() if p.requires_grad and n.startswith("head."))
    param.register_hook(lambda g: torch.full_like(g, math.inf))


def snapshot(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def unchanged(before: list[torch.Tensor], module: torch.nn.Module) -> bool:
    return all(torch.equal(a, b) for a, b in zip(before, module.parameters()))


def test_nonfinite_gradients_skip_the_update_and_the_ema_without_clipping():
    engine = engine_for()
    assert engine.cfg.optim.clip_grad is None and not engine.scaler.is_enabled()
    poison_gradients(engine)
    student, teacher = snapshot(engine.model), snapshot(engine.teacher.model)
    result = engine.step([batch_of(ToyStereo(2))], step=0, lr=1e-3)
    assert math.isfinite(result.losses["loss"])
    assert result.skipped and result.failed  # counts towards run.max_nonfinite
    assert unchanged(student, engine.model) and unchanged(teacher, engine.teacher.model)
    assert all(p.grad is None for p in engine.model.parameters())


def test_nonfinite_gradient_steps_are_logged_and_counted(tmp_path, monkeypatch, caplog):
    real_init = Engine.__init__

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        poison_gradients(self)

    monkeypatch.setattr(Engine, "__init__", init)
    cfg = load_train_config(toy_config(optim={"max_steps": 2}, run={"max_nonfinite": 5, "ckpt_every": 0}))
    with caplog.at_level(logging.WARNING, logger="madis_stereo"):
        train(cfg, out_dir=tmp_path, train_dataset=ToyStereo(8))
    assert "step 2 skipped: non-finite loss or gradients (2 so far)" in caplog.text
    state = torch.load(tmp_path / "train_state.pt", weights_only=True)
    assert state["nonfinite"] == 2


def test_clip_grad_bounds_the_applied_gradient_and_reports_the_norm_before_clipping():
    reference = engine_for()
    terms = reference.losses(batch_of(ToyStereo(2)), step=0)
    terms["loss"].backward()
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in reference.model.parameters()
                                                 if p.grad is not None])).item()
    clip = norm / 10
    engine = engine_for(optim={"clip_grad": clip})
    applied = []
    real_step = engine.optimizer.step

    def step(*args, **kwargs):
        grads = [p.grad.norm() for p in engine.model.parameters() if p.grad is not None]
        applied.append(torch.linalg.vector_norm(torch.stack(grads)).item())
        return real_step(*args, **kwargs)

    engine.optimizer.step = step
    result = engine.step([batch_of(ToyStereo(2))], step=0, lr=1e-3)
    assert not result.skipped
    assert result.grad_norm == pytest.approx(norm, rel=1e-4)
    assert applied[0] == pytest.approx(clip, rel=1e-3)


def test_fp16_gradient_scaler_path_skips_overflowing_steps_and_halves_the_scale():
    engine = engine_for()
    engine.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, enabled=True)  # fp16 itself needs CUDA
    good = engine.step([batch_of(ToyStereo(2))], step=0, lr=1e-3)
    assert not good.skipped and good.loss_scale == 2.0**10
    poison_gradients(engine)
    student, teacher = snapshot(engine.model), snapshot(engine.teacher.model)
    bad = engine.step([batch_of(ToyStereo(2))], step=1, lr=1e-3)
    assert bad.skipped and bad.overflow and not bad.failed  # the scaler's calibration, not a failure
    assert bad.loss_scale == 2.0**9
    assert unchanged(student, engine.model) and unchanged(teacher, engine.teacher.model)


# --- the command line's error handling ----------------------------------------------------------------
def run_info_raising(monkeypatch, capsys, error: BaseException) -> tuple[int, str]:
    from madis_stereo.app.cli import info, main

    def boom(args):
        raise error

    monkeypatch.setattr(info, "run", boom)
    code = main(["info", "x"])
    return code, capsys.readouterr().err


def test_cli_turns_our_errors_into_one_line(monkeypatch, capsys):
    for error in (ConfigError("optim.lr: expected a number"), ms.CheckpointError("x: not a checkpoint"),
                  ms.DataError("a.png: truncated"), ms.InputError("crop 0x0"),
                  ms.TrainingError("stopping"), FileNotFoundError("no such file: x")):
        code, err = run_info_raising(monkeypatch, capsys, error)
        assert code == 2 and err.strip().count("\n") == 0 and str(error) in err, (error, err)


@pytest.mark.parametrize("error", [ValueError("an internal bug"), RuntimeError("shape mismatch in a bug"),
                                   KeyError("x")])
def test_cli_lets_real_bugs_show_their_traceback(monkeypatch, capsys, error):
    with pytest.raises(type(error)):
        run_info_raising(monkeypatch, capsys, error)


@pytest.mark.parametrize("error", [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: you tried "
                 "to allocate 9000000000 bytes. Error code 12 (Cannot allocate memory)"),
    MemoryError(),
])
def test_cli_out_of_memory_says_what_to_change(monkeypatch, capsys, error):
    from madis_stereo.app.cli import EXIT_OUT_OF_MEMORY

    code, err = run_info_raising(monkeypatch, capsys, error)
    assert code == EXIT_OUT_OF_MEMORY != 2
    assert "out of memory" in err and "--tile-batch" in err and "--bf16" in err and "--crop" in err


# --- library calls leave the caller's model as it was -------------------------------------------------------
def test_predict_analysis_and_export_leave_the_callers_model_as_it_was(tmp_path):
    from madis_stereo.inference.attention import attention_distance
    from madis_stereo.inference.export import export_onnx

    left, right = stereo_images(64, 128)
    model = tiny().train()
    params = [p.data_ptr() for p in model.parameters()]
    ms.predict(model, left, right)
    assert model.training
    attention_distance(model, [(left, right)])
    assert model.training
    export_onnx(model, tmp_path / "m.onnx", crop=(64, 128), check=False)
    assert model.training
    model.eval()
    ms.predict(model, left, right)
    assert not model.training
    # another device: the predictor works on a copy and the caller's model stays where it is
    predictor = ms.Predictor(model.train(), device="meta")
    assert next(predictor.model.parameters()).device.type == "meta"
    assert all(p.device.type == "cpu" for p in model.parameters()) and model.training
    assert [p.data_ptr() for p in model.parameters()] == params


# --- tile blending ---------------------------------------------------------------------------------------
class Sure(torch.nn.Module):
    """Disparity 10 with a very low confidence logit (= very sure) in every tile."""

    def __init__(self, logit: float):
        super().__init__()
        self.logit = logit

    def forward(self, left, right):
        b, _, h, w = left.shape
        return ms.StereoOutput(torch.full((b, 1, h, w), 10.0), torch.full((b, 1, h, w), self.logit))


@pytest.mark.parametrize("logit", [-1000.0, 1000.0, -30.0])
def test_conf_expbeta_blending_stays_finite_for_extreme_logits(logit):
    left = torch.zeros(1, 3, 64, 200)  # three overlapping 64x128 windows
    disp, conf = ms.tiled_predict(Sure(logit), left, left, crop=(64, 128), overlap=0.5, conf_mode="conf_expbeta3")
    assert torch.isfinite(disp).all() and torch.allclose(disp, torch.full_like(disp, 10.0))
    assert torch.allclose(conf, torch.full_like(conf, logit))


def test_conf_expbeta_blending_weights_tiles_by_their_confidence():
    class TwoTiles(torch.nn.Module):
        def forward(self, left, right):
            b, _, h, w = left.shape
            first = left[:, 0, 0, 0] < 0.5
            disp = torch.where(first.view(b, 1, 1, 1), 1.0, 2.0).expand(b, 1, h, w)
            conf = torch.where(first.view(b, 1, 1, 1), -400.0, -399.0).expand(b, 1, h, w)  # exp(1200) = inf
            return ms.StereoOutput(disp, conf)

    left = torch.zeros(1, 3, 32, 96)
    left[:, 0, 0, 32] = 1.0
    disp, _ = ms.tiled_predict(TwoTiles(), left, left, crop=(32, 64), overlap=0.5, conf_mode="conf_expbeta1",
                               blend="croco")  # the confidence weights alone (the taper would add its own)
    # in the overlap the weights are e^400 : e^399 = e : 1, so d = (e * 1 + 1 * 2) / (e + 1)
    expected = (math.e + 2.0) / (math.e + 1.0)
    assert torch.allclose(disp[0, 0, :, 32:64], torch.full((32, 32), expected))


# --- ONNX metadata and the certainty scale ---------------------------------------------------------------
def test_certainty_uses_the_models_laplace_b():
    left, right = stereo_images(64, 128)
    model = tiny(laplace_b=1.5)
    pred = ms.predict(model, left, right)
    c = pred.confidence.astype(np.float64)
    assert np.allclose(pred.certainty, 1.0 / (1.0 + np.exp(c / 1.5)), atol=1e-6)
    assert pred.laplace_b == 1.5


def test_laplace_b_goes_from_the_training_recipe_into_the_saved_model(tmp_path):
    cfg = load_train_config(toy_config(optim={"max_steps": 1}, madis={"laplace_b": 2.0}))
    assert cfg.model.arch.laplace_b == 2.0
    result = train(cfg, out_dir=tmp_path, train_dataset=ToyStereo(4))
    assert ms.load_model(result.checkpoint).config.laplace_b == 2.0
    with pytest.raises(ConfigError, match="laplace_b"):
        load_train_config(toy_config(model={"laplace_b": 1.0}, madis={"laplace_b": 2.0}))


# --- visualisation, the run log, the synthetic renderer -------------------------------------------------
def test_confidence_colours_match_their_documentation():
    from madis_stereo.app.visualize import confidence_image

    rgb = confidence_image(np.array([[-5.0, 5.0]], np.float32), vmin=-5, vmax=5).astype(int)
    sure, unsure = rgb[0, 0], rgb[0, 1]
    assert sure[2] > sure[0] and unsure[0] > unsure[2]  # a low logit (sure) is blue, a high one red
    doc = " ".join(confidence_image.__doc__.split())
    assert "blue = confident" in doc and "warm = confident" not in doc


def test_run_log_is_closed_when_the_trainer_cannot_start(tmp_path, monkeypatch):
    from madis_stereo.training import runlog

    opened = []
    real_init = runlog.RunLogger.__init__

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        opened.append(self)

    def fail(path, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(runlog.RunLogger, "__init__", init)
    monkeypatch.setattr(trainer_module, "atomic_write_bytes", fail)
    cfg = load_train_config(toy_config())
    with pytest.raises(OSError):
        train(cfg, out_dir=tmp_path, train_dataset=ToyStereo(8))
    assert all(logger.file.closed for logger in opened)
