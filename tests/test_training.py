"""The training step and loop: masks, gradients, non-finite guard, learning, exact kill-and-resume, DDP."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from toy_stereo import ToyStereo, batch_of, cli, engine_for, subprocess_env, toy_config

import madis_stereo as ms
from madis_stereo.errors import ConfigError, TrainingError
from madis_stereo.model.masking import visible_index
from madis_stereo.training import Engine, StepResult, load_train_config, train
from madis_stereo.training.distributed import DistEnv
from madis_stereo.training.engine import mask_generator, step_masks
from madis_stereo.training.runlog import read_metrics
from madis_stereo.training.state import load_train_state
from madis_stereo.training.trainer import BUDGET_FIT_STEPS

ROOT = Path(__file__).resolve().parents[1]
TOY = Path(__file__).resolve().parent / "toy_stereo.py"
CPU = DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
# One intra-op thread: on a shared CPU, OpenMP threads waiting for each other make tiny steps 20x slower,
# and the exact-resume comparisons need the same thread count in every run (subprocesses: subprocess_env).
pytestmark = pytest.mark.usefixtures("one_thread")


def write_config(path: Path, **sections) -> Path:
    path.write_text(yaml.safe_dump(toy_config(**sections)))
    return path


def train_losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run_dir / "metrics.jsonl", "train")}


# --- masks --------------------------------------------------------------------------------------------
def test_step_masks_counts_independence_and_determinism():
    left, right = step_masks(mask_generator(0, 0, 5, 0), batch=8, num_tokens=32, ratio=0.4)
    assert left.shape == right.shape == (8, 32)
    assert (left.sum(1) == 12).all() and (right.sum(1) == 12).all()  # int(0.4 * 32)
    rows = {tuple(r.tolist()) for r in torch.cat((left, right))}
    assert len(rows) == 16  # every view of every sample drawn independently
    again = step_masks(mask_generator(0, 0, 5, 0), 8, 32, 0.4)
    assert torch.equal(left, again[0]) and torch.equal(right, again[1])
    for other in (mask_generator(0, 0, 6, 0), mask_generator(0, 1, 5, 0), mask_generator(0, 0, 5, 1),
                  mask_generator(1, 0, 5, 0)):
        assert not torch.equal(left, step_masks(other, 8, 32, 0.4)[0])


def test_masked_pixels_cannot_reach_visible_encoder_tokens_of_either_view():
    model = ms.StereoModel(ms.ModelConfig.preset("tiny", dpt_hooks=(4, 5, 6, 7)))
    left, right = (torch.randn(2, 3, 64, 64).requires_grad_() for _ in range(2))
    mask_l, mask_r = step_masks(mask_generator(0, 0, 0, 0), 2, 16, 0.4)
    enc = model.encode(left, right, mask_l, mask_r)
    (enc.left.sum() + enc.right.sum()).backward()
    for image, mask in ((left, mask_l), (right, mask_r)):
        per_patch = ms.model.network.patchify(image.grad.abs(), 16).sum(-1)  # [B, N] gradient mass per patch
        assert (per_patch[mask] == 0).all()
        assert (per_patch[~mask] > 0).all()
    assert enc.keep_left.shape == (2, 16 - 6) and torch.equal(enc.keep_left, visible_index(mask_l))


# --- one step -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("madis", [True, False])
def test_every_trainable_parameter_gets_a_gradient(madis):
    engine = engine_for(madis={"enabled": madis})
    terms = engine.losses(batch_of(ToyStereo(2)), step=0)
    assert set(terms) == ({"loss", "gt", "pseudo", "recon_left", "recon_right"} if madis else {"loss", "gt"})
    terms["loss"].backward()
    missing = [n for n, p in engine.model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    expected = {"head.fusion.3.rcu1"} | (set() if madis else {"mask_token", "recon_head"})
    assert {n.rsplit(".", 2)[0] if n.startswith("head") else n.split(".")[0] for n in engine.frozen} == expected
    assert (engine.teacher is not None) == madis


def test_total_is_the_weighted_sum_of_the_terms():
    """The total of a mixed weighting equals the same mix of the totals of runs that weight one term each
    (same model, batch and masks), so each term's place in the sum is checked without restating the sum."""
    names = ("gt", "distill", "recon_left", "recon_right")

    def total(**weights):
        engine = engine_for(madis={"weights": {n: weights.get(n, 0.0) for n in names}})
        with torch.no_grad():
            return engine.losses(batch_of(ToyStereo(2)), step=0)["loss"]

    alone = {n: total(**{n: 1.0}) for n in names}
    assert all(v > 0 for v in alone.values())
    mixed = total(gt=2.0, distill=0.5, recon_left=3.0, recon_right=0.0)
    assert torch.allclose(mixed, 2 * alone["gt"] + 0.5 * alone["distill"] + 3 * alone["recon_left"])
    assert torch.allclose(total(gt=1.0, distill=1.0, recon_left=1.0, recon_right=1.0), sum(alone.values()))


def test_teacher_runs_only_when_some_gt_is_missing(monkeypatch):
    engine = engine_for()
    calls = []
    real = engine.teacher.encode
    monkeypatch.setattr(engine.teacher, "encode", lambda *a: calls.append(1) or real(*a))
    sparse = batch_of(ToyStereo(2))
    dense = dict(sparse, disparity=torch.nan_to_num(sparse["disparity"], posinf=3.0))
    with torch.no_grad():
        t = engine.losses(dense, step=0)
        assert calls == [] and t["pseudo"] == 0  # no GT-less pixel: the pseudo-label term is exactly 0
        t = engine.losses(sparse, step=0)
        assert calls == [1] and t["pseudo"] > 0


def distill_grads(**teacher) -> tuple[Engine, dict[str, torch.Tensor]]:
    """Gradients of the distillation term alone (other weights 0) on a sparse-GT toy batch, step 0."""
    engine = engine_for(madis={"weights": {"gt": 0.0, "distill": 1.0, "recon_left": 0.0, "recon_right": 0.0}},
                        teacher=teacher)
    engine.losses(batch_of(ToyStereo(2)), step=0)["loss"].backward()
    grads = {n: p.grad.clone() for n, p in engine.model.named_parameters() if p.grad is not None}
    assert all(p.grad is None for p in engine.teacher.model.parameters())  # the teacher never learns by gradient
    return engine, grads


def group(name: str) -> str:
    return name.split(".")[0]


def test_public_code_teacher_trains_the_student_decoder_and_head_through_the_pseudo_labels():
    engine, public = distill_grads()  # the default: scope encoder, detach false
    assert engine.teacher.scope == "encoder" and engine.teacher.labels_carry_gradient
    _, detached = distill_grads(detach=True)
    assert set(public) == set(detached)
    # the pseudo-label path adds gradient exactly where the student decodes the teacher's (unmasked) features
    changed = {group(n) for n in public if not torch.allclose(public[n], detached[n], atol=1e-12, rtol=0)}
    assert changed == {"decoder_embed", "dec_blocks", "dec_norm", "head"}
    for name in public:
        if group(name) in ("patch_embed", "enc_blocks", "enc_norm", "mask_token", "recon_head"):
            assert torch.equal(public[name], detached[name]), name


def test_detached_and_full_teachers_send_no_gradient_through_the_labels():
    _, detached = distill_grads(detach=True)
    _, full = distill_grads(scope="full")
    # at step 0 the full teacher is an exact copy of the student, so its constant labels equal the detached
    # ones: the same gradients, and none of them come from the label path
    assert set(full) == set(detached)
    assert all(torch.allclose(full[n], detached[n], atol=1e-7) for n in full)
    # without finite-GT-free pixels there is no label path at all; with them, detaching changes the gradient
    # only where the student's prediction d is trained (everything that feeds the masked forward)
    assert {group(n) for n in detached} >= {"patch_embed", "enc_blocks", "decoder_embed", "dec_blocks", "head"}


def test_teacher_labels_start_at_start_step_and_it_copies_the_student_until_then(monkeypatch):
    engine = engine_for(teacher={"scope": "full", "start_step": 2})
    calls = []
    real = engine.teacher.encode
    monkeypatch.setattr(engine.teacher, "encode", lambda *a: calls.append(1) or real(*a))
    for step in range(3):
        result = engine.step([batch_of(ToyStereo(2))], step=step, lr=1e-3)
        assert not result.skipped
        if step < 2:  # after steps 0 and 1 the teacher equals the student; its labels were not used
            assert calls == []
            assert all(torch.equal(t, s) for t, s in zip(engine.teacher.model.parameters(),
                                                         engine.model.parameters()))
    assert calls == [1]  # step 2 used the labels, and the EMA then started to lag
    assert not all(torch.equal(t, s) for t, s in zip(engine.teacher.model.parameters(), engine.model.parameters()))


def test_full_teacher_refuses_an_untrained_head(tmp_path):
    from madis_stereo.errors import ConfigError
    from madis_stereo.training import build_student

    with pytest.raises(ConfigError, match="teacher.scope=full would distil from the untrained DPT head"):
        build_student(load_train_config(toy_config(teacher={"scope": "full"})))
    build_student(load_train_config(toy_config(teacher={"scope": "full", "start_step": 100})))
    pretrain = ROOT / "tests" / "fixtures" / "croco" / "croco_pretrain_tiny.pth"
    meta = ms.load_model(pretrain).config.to_dict()
    model = {**meta, "crop": [64, 128], "dpt_hooks": [meta["enc_depth"] + i for i in range(meta["dec_depth"])][-4:],
             "init": str(pretrain)}
    with pytest.raises(ConfigError, match="no trained stereo head"):
        build_student(load_train_config({**toy_config(teacher={"scope": "full"}), "model": model}))
    # a trained stereo checkpoint may start a full teacher at once
    stereo = tmp_path / "stereo.safetensors"
    ms.save_model(ms.StereoModel(load_train_config(toy_config()).model.arch), stereo)
    build_student(load_train_config(toy_config(teacher={"scope": "full"}, model={"init": str(stereo)})))


def test_nonfinite_loss_skips_the_update_and_the_ema():
    engine = engine_for()
    batch = batch_of(ToyStereo(2))
    batch["left"] = batch["left"].float()
    batch["left"][0, 0, 0, 0] = float("nan")
    before = [p.detach().clone() for p in engine.model.parameters()]
    teacher = [p.detach().clone() for p in engine.teacher.model.parameters()]
    result = engine.step([batch], step=0, lr=1e-3)
    assert result.skipped and not torch.isfinite(torch.tensor(result.losses["loss"]))
    assert all(torch.equal(a, b) for a, b in zip(before, engine.model.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(teacher, engine.teacher.model.parameters()))
    assert all(p.grad is None for p in engine.model.parameters())
    good = engine.step([batch_of(ToyStereo(2))], step=1, lr=1e-3)
    assert not good.skipped
    assert not all(torch.equal(a, b) for a, b in zip(teacher, engine.teacher.model.parameters()))


def test_fp16_scaler_calibration_skips_do_not_count_as_failures():
    assert not StepResult({}, 0.0, skipped=True, overflow=True, loss_scale=32768.0).failed
    assert StepResult({}, 0.0, skipped=True, overflow=True, loss_scale=0.5).failed  # overflows even unscaled
    assert StepResult({}, 0.0, skipped=True).failed  # non-finite loss
    assert not StepResult({}, 0.0, skipped=False).failed


class NaNImages(ToyStereo):
    def __getitem__(self, index):
        item = super().__getitem__(index)
        item["left"] = item["left"].float().fill_(float("nan"))
        return item


def test_training_stops_after_too_many_nonfinite_steps(tmp_path):
    cfg = load_train_config(toy_config(run={"max_nonfinite": 3}))
    with pytest.raises(TrainingError, match=r"3 steps had non-finite losses.*max_nonfinite=3"):
        train(cfg, out_dir=tmp_path, train_dataset=NaNImages(8))
    assert [r["skipped"] for r in read_metrics(tmp_path / "metrics.jsonl", "train")] == [True, True, True]


def test_bf16_autocast_step_runs_on_cpu():
    engine = engine_for(optim={"amp": "bf16"})
    result = engine.step([batch_of(ToyStereo(2))], step=0, lr=1e-4)
    assert not result.skipped and all(torch.isfinite(torch.tensor(v)) for v in result.losses.values())
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        engine_for(optim={"amp": "fp16"})


@pytest.mark.parametrize("bf16_gflops, expected", [(6.0, None), (220.0, torch.bfloat16)])
def test_amp_auto_trains_in_bf16_only_where_this_cpu_runs_it_faster(tmp_path, monkeypatch, bf16_gflops, expected):
    # a Zen 3 runs bf16 products at a fifth of its fp32 rate, a Zen 4 at twice: the bundled recipe's amp=auto must
    # follow the (cached) probe of the machine at hand
    import json

    from madis_stereo.inference import precision

    monkeypatch.setenv("MADIS_STEREO_HOME", str(tmp_path))
    monkeypatch.delenv(precision.ENV_PRECISION, raising=False)
    entry = {"fp32": 30.0, "fp32_onednn": 28.0, "bf16": bf16_gflops}
    precision.cache_file().write_text(json.dumps({precision.machine_key(): entry}))
    engine = engine_for(optim={"amp": "auto"})
    assert engine.amp_dtype == expected
    result = engine.step([batch_of(ToyStereo(2))], step=0, lr=1e-4)
    assert not result.skipped
    assert engine_for(optim={"amp": "none"}).amp_dtype is None  # explicit modes ignore the probe


def test_gradient_accumulation_matches_one_big_batch():
    data = ToyStereo(4, max_disparity=1)  # equal valid-pixel counts: the mean of means is the overall mean
    grads = {}

    def capture(name, engine):
        params = [p for g in engine.optimizer.param_groups for p in g["params"]]
        engine.optimizer.step = lambda *a, **k: grads.setdefault(name, [p.grad.clone() for p in params])

    one = engine_for(optim={"batch_size": 4}, madis={"enabled": False})
    two = engine_for(optim={"batch_size": 2, "accum_steps": 2}, madis={"enabled": False})
    capture("one", one)
    capture("two", two)
    r1 = one.step([batch_of(data, (0, 1, 2, 3))], 0, 1e-3)
    r2 = two.step([batch_of(data, (0, 1)), batch_of(data, (2, 3))], 0, 1e-3)
    assert r1.losses["gt"] == pytest.approx(r2.losses["gt"], rel=1e-5)
    for a, b in zip(grads["one"], grads["two"]):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-6)


def test_activation_checkpointing_gives_the_same_step():
    grads = {}
    calls = []

    def capture(name, engine):
        params = [p for g in engine.optimizer.param_groups for p in g["params"]]
        engine.optimizer.step = lambda *a, **k: grads.setdefault(name, [p.grad.clone() for p in params])

    plain = engine_for()
    recompute = engine_for(optim={"activation_checkpointing": True})
    assert recompute.model.activation_checkpointing and not plain.model.activation_checkpointing
    capture("plain", plain)
    capture("recompute", recompute)
    block = recompute.model.enc_blocks[0]
    block.register_forward_pre_hook(lambda *_: calls.append(torch.is_grad_enabled()))
    batch = batch_of(ToyStereo(2))
    r1, r2 = plain.step([batch], 0, 1e-3), recompute.step([batch], 0, 1e-3)
    assert r1.losses == pytest.approx(r2.losses, rel=1e-5)
    for a, b in zip(grads["plain"], grads["recompute"]):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
    assert calls.count(True) == 2  # the student's block ran twice under autograd: forward and recomputation


# --- the loop -------------------------------------------------------------------------------------------
def test_tiny_training_loss_falls_and_teacher_trails_the_student(tmp_path):
    recipe = ROOT / "configs" / "tiny_synthetic.yaml"
    cfg = load_train_config(recipe, ["optim.max_steps=30", "optim.batch_size=2", "data.train.0.length=32",
                                     "data.val.length=2", "run.val_every=15", "run.ckpt_every=0",
                                     "run.num_workers=0", "run.device=cpu"])
    result = train(cfg, out_dir=tmp_path)
    losses = [r["loss"] for r in read_metrics(tmp_path / "metrics.jsonl", "train")]
    assert len(losses) == 30
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.75 * first, (first, last)
    # the teacher differs from the student, and has moved from the initial weights towards it
    torch.manual_seed(cfg.run.seed)
    init = ms.StereoModel(cfg.model.arch).state_dict()
    student = result.engine.model.state_dict()
    teacher = result.engine.teacher.model.state_dict()

    def distance(a, b):
        return sum(float((a[k] - b[k]).pow(2).sum()) for k in student)

    assert distance(teacher, student) > 0
    assert distance(teacher, student) < distance(init, student)
    assert distance(teacher, init) > 0
    # run folder contents
    names = {p.name for p in tmp_path.iterdir()}
    assert {"config.yaml", "metrics.jsonl", "train_state.pt", "ckpt_step30.safetensors", "best.safetensors"} <= names
    assert any(n.startswith("events.out.tfevents") for n in names)
    vals = read_metrics(tmp_path / "metrics.jsonl", "val")
    assert [v["step"] for v in vals] == [15, 30] and all("epe" in v and "bad_2" in v for v in vals)
    model, meta = ms.load_model(tmp_path / "ckpt_step30.safetensors", return_metadata=True)
    assert meta["steps"] == 30 and meta["recipe"] == "madis" and "epe" in meta["metrics"]
    assert load_train_config(tmp_path / "config.yaml") == cfg


def _device_rendered(*overrides: str):
    recipe = ROOT / "configs" / "tiny_synthetic.yaml"
    return load_train_config(recipe, ["data.render_on_device=true", "data.val=null", "optim.batch_size=2",
                                      "data.train.0.atlas_tiles=4", "data.train.0.atlas_tile_size=32",
                                      "run.ckpt_every=0", "run.device=cpu", *overrides])


def test_render_on_device_trains_the_tiny_preset_and_resumes_on_the_same_batches(tmp_path):
    result = train(_device_rendered("optim.max_steps=2", "data.augment={scale_prob: 0}"), out_dir=tmp_path / "trained")
    losses = train_losses(tmp_path / "trained").values()
    assert result.step == 2 and all(torch.isfinite(torch.tensor(v)) for v in losses)
    # with lr 0 the loss of a step depends only on its batch (and masks): a resumed run sees the same batches
    train(_device_rendered("optim.max_steps=4", "optim.lr=0"), out_dir=tmp_path / "full")
    train(_device_rendered("optim.max_steps=2", "optim.lr=0"), out_dir=tmp_path / "part")
    train(_device_rendered("optim.max_steps=4", "optim.lr=0"), out_dir=tmp_path / "part", resume=True)
    full, resumed = train_losses(tmp_path / "full"), train_losses(tmp_path / "part")
    assert [resumed[k] for k in (3, 4)] == [full[k] for k in (3, 4)]
    assert len(set(full.values())) == 4  # every step saw a new batch


def test_render_on_device_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="scale_prob to 0"):
        train(_device_rendered("data.augment={}"), out_dir=tmp_path / "a")
    with pytest.raises(ConfigError, match="must equal model.crop"):
        train(_device_rendered("data.train.0.size=[32,64]"), out_dir=tmp_path / "b")
    two = _device_rendered()
    two = load_train_config({**two.to_dict(), "data": {**two.to_dict()["data"], "train": list(two.data.train) * 2}})
    with pytest.raises(ConfigError, match="exactly one"):
        train(two, out_dir=tmp_path / "c")


def test_checkpoint_rotation_and_fresh_run_protection(tmp_path):
    cfg = load_train_config(toy_config(optim={"max_steps": 8}, run={"ckpt_every": 2, "keep_last": 2}))
    train(cfg, out_dir=tmp_path, train_dataset=ToyStereo(8))
    assert sorted(p.name for p in tmp_path.glob("ckpt_step*")) == ["ckpt_step6.safetensors", "ckpt_step8.safetensors"]
    state = load_train_state(tmp_path / "train_state.pt")
    assert state["step"] == 8 and state["checkpoint"] == "ckpt_step8.safetensors"
    with pytest.raises(ValueError, match="already holds a training run"):
        train(cfg, out_dir=tmp_path, train_dataset=ToyStereo(8))


def test_resume_takes_a_new_max_steps_and_reports_a_corrupt_checkpoint(tmp_path):
    base = {"max_steps": BUDGET_FIT_STEPS[0], "warmup_steps": 2}
    cfg = load_train_config(toy_config(optim=base, run={"log_every": 10, "ckpt_every": 0}))
    train(cfg, out_dir=tmp_path, train_dataset=ToyStereo(8))
    longer = load_train_config(toy_config(optim={**base, "max_steps": BUDGET_FIT_STEPS[0] + 2},
                                          run={"log_every": 10, "ckpt_every": 0}))
    assert train(longer, out_dir=tmp_path, resume=True, train_dataset=ToyStereo(8)).step == BUDGET_FIT_STEPS[0] + 2
    ckpt = tmp_path / f"ckpt_step{BUDGET_FIT_STEPS[0] + 2}.safetensors"
    ckpt.write_bytes(ckpt.read_bytes()[:-100])
    with pytest.raises(ms.CheckpointError, match="truncated or corrupt"):
        train(longer, out_dir=tmp_path, resume=True, train_dataset=ToyStereo(8))


def test_worker_processes_give_the_same_run_across_epochs(tmp_path, toy_folder):
    losses = {}
    for workers in (0, 2):
        cfg = load_train_config(toy_config(data={"train": [toy_folder]}, optim={"max_steps": 10},
                                           run={"num_workers": workers, "ckpt_every": 0}))
        train(cfg, out_dir=tmp_path / str(workers))  # 16 pairs, batch 2: 8 steps per epoch
        losses[workers] = train_losses(tmp_path / str(workers))
    assert len(losses[0]) == 10 and losses[2] == losses[0]


def test_kill_and_resume_continues_the_same_loss_curve(tmp_path, toy_folder):
    steps = 20
    sections = {"data": {"train": [toy_folder]}, "optim": {"max_steps": steps},
                "run": {"ckpt_every": 4, "keep_last": 2}}
    reference = train(load_train_config(toy_config(**sections)), out_dir=tmp_path / "ref")
    expected = train_losses(reference.run_dir)
    assert sorted(expected) == list(range(1, steps + 1))

    run = tmp_path / "run"
    config = write_config(tmp_path / "toy.yaml", **sections)
    proc = subprocess.Popen(cli("train", str(config), "--out", str(run)), env=subprocess_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not ((run / "train_state.pt").exists() and max(train_losses(run), default=0) >= 5):
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "the run never reached step 5"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    state = load_train_state(run / "train_state.pt")  # every file under its final name is complete
    killed_at = state["step"]
    assert 4 <= killed_at < steps and killed_at % 4 == 0
    for ckpt in run.glob("ckpt_step*.safetensors"):
        ms.load_model(ckpt)

    resumed = subprocess.run(cli("train", "--resume", str(run)), env=subprocess_env(), capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"at step {killed_at}" in resumed.stderr
    got = train_losses(run)
    assert sorted(got) == list(range(1, steps + 1))  # no duplicated or missing steps in the log
    assert got == expected  # bit-identical losses, before and after the kill
    assert not list(run.glob(".*.tmp"))


def test_two_process_gloo_training_keeps_ranks_identical(tmp_path, toy_folder):
    config = write_config(tmp_path / "toy.yaml", data={"train": [toy_folder]}, optim={"max_steps": 4},
                          run={"ckpt_every": 0})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(TOY), str(config), "--out", str(tmp_path / "run"), "--dump", str(tmp_path / "dump")]
    done = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [torch.load(tmp_path / "dump" / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for part in ("student", "teacher"):
        a, b = ranks[0][part], ranks[1][part]
        assert a.keys() == b.keys() and a
        assert all(torch.equal(a[k], b[k]) for k in a), part
    assert any(not torch.equal(ranks[0]["student"][k], ranks[0]["teacher"][k]) for k in ranks[0]["teacher"])
    # only rank 0 wrote the run folder; both ranks' losses went into one averaged curve
    assert len(read_metrics(tmp_path / "run" / "metrics.jsonl", "train")) == 4
    assert (tmp_path / "run" / "ckpt_step4.safetensors").is_file()
