"""The training loop: data order, schedule, logging, validation, checkpoints and exact resume.

Run folder: ``config.yaml`` (resolved config), ``metrics.jsonl``, TensorBoard events,
``ckpt_step{N}.safetensors`` (the last ``run.keep_last``), ``best.safetensors`` (best validation) and
``train_state.pt`` (everything else needed to resume). Only rank 0 writes.

Stopping: SIGTERM, SIGUSR1 (what clusters send before pre-empting a job or at its time limit) and SIGINT
(Ctrl-C) let the current step finish, write a checkpoint and raise :class:`TrainingInterrupted`, which says
how to resume (``madis-stereo train`` then exits with status 75). A second Ctrl-C stops at once. A checkpoint
that cannot be written (disk full) stops the run with a :class:`TrainingError`; the previous checkpoint and
``train_state.pt`` stay as they were.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from madis_stereo.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    TrainingError,
    TrainingInterrupted,
    resume_hint,
)
from madis_stereo.model.checkpoint import (
    default_model_path,
    header_config,
    load_weights,
    read_metadata,
    read_weights,
    save_model,
)
from madis_stereo.model.network import StereoModel
from madis_stereo.model.registry import BUNDLED_NAMES, MODELS, is_url, load_model
from madis_stereo.training import distributed as D
from madis_stereo.training import state as S
from madis_stereo.training.config import TrainConfig
from madis_stereo.training.data import (
    build_device_batches,
    build_train_dataset,
    build_val_dataset,
    worker_error_message,
    worker_init_fn,
)
from madis_stereo.training.engine import BASELINE_TOTAL, LOSS_TERMS, MADIS_TOTAL, Engine, StepResult
from madis_stereo.training.progress import TrainConsole
from madis_stereo.training.rendering import DeviceBatches
from madis_stereo.training.runlog import RunLogger
from madis_stereo.training.schedule import lr_at
from madis_stereo.training.teacher import check_teacher_start
from madis_stereo.training.validation import validate
from madis_stereo.utils.files import atomic_write_bytes

__all__ = ["CONFIG_NAME", "TrainResult", "Trainer", "build_student", "train"]

log = logging.getLogger(__name__)

CONFIG_NAME = "config.yaml"
BEST_NAME = "best.safetensors"
# With a time budget the run length is fitted from the measured pace at these steps (the pace counted from
# step BUDGET_PACE_START, after data-loader start-up, or from the previous fit); fixed after the last one.
BUDGET_PACE_START = 10
BUDGET_FIT_STEPS = (30, 150)
BUDGET_MARGIN = 0.97  # leave room for the final validation and checkpoint


# Signals that stop training cleanly (the step in flight finishes and is saved).
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGUSR1", "SIGINT") if hasattr(signal, name))


@dataclass
class TrainResult:
    """What a finished run leaves: its folder, final step, last checkpoint, best validation, the engine and how
    many steps this call trained (0 when a resumed run had already finished)."""

    run_dir: Path
    step: int
    checkpoint: Path | None
    best: dict[str, Any] | None
    engine: Engine
    steps_trained: int = 0
    bad_samples: int = 0  # unreadable training samples skipped (data.skip_bad_samples)


def build_student(cfg: TrainConfig) -> StereoModel:
    """The student of ``model.arch``: random (seeded by the caller) or loaded from ``model.init``
    (``bundled`` or ``default``: the package's weights, whose architecture the model section must match).

    Refuses (ConfigError) a full-network teacher that would start from the student's untrained head.
    """
    model, head_trained = _initial_student(cfg)
    if cfg.madis.enabled:
        check_teacher_start(cfg.teacher.scope, cfg.teacher.start_step, head_trained, cfg.model.init)
    return model.train()


def _initial_student(cfg: TrainConfig) -> tuple[StereoModel, bool]:
    """(student, whether its DPT head is trained): random init and CroCo v2 pretraining have a new head."""
    init = cfg.model.init
    if init is None:
        return StereoModel(cfg.model.arch), False
    if init.startswith("<") or not init.strip():
        raise ConfigError(f"model.init is not set ({init}); pass model.init= a CroCo v2 pretraining checkpoint "
                          "(e.g. the registered name CroCo_V2_ViTBase_BaseDecoder, a URL or a path), one of ours, "
                          "or bundled (the package's weights)")
    if init in BUNDLED_NAMES or (Path(init).is_file() and Path(init).resolve() == default_model_path().resolve()):
        return _bundled_student(cfg), True
    if not is_url(init) and init not in MODELS and not Path(init).is_file():
        raise ConfigError(f"model.init: checkpoint not found: {init} (a path, URL or registered name)")
    model, metadata = load_model(init, config_overrides=cfg.model.arch.to_dict(), return_metadata=True)
    if model.config != cfg.model.arch:
        raise CheckpointError(f"{init}: its architecture does not match the model section of the config")
    log.info("student initialised from %s", init)
    return model, metadata.get("source") != "croco_pretrain"


def _bundled_student(cfg: TrainConfig) -> StereoModel:
    """The bundled weights in a student of ``model.arch``; every field but ``crop`` (the training and tiling
    window, which any crop can change) must equal the bundled model's."""
    path = default_model_path()
    if not path.is_file():
        raise ConfigError(f"model.init=bundled: no bundled model in this installation ({path} is missing)")
    bundled = header_config(path, read_metadata(path)).to_dict()
    ours = cfg.model.arch.to_dict()
    differ = [f"{key} {ours[key]} (bundled: {bundled[key]})" for key in ours
              if key != "crop" and ours[key] != bundled[key]]
    if differ:
        raise ConfigError(f"model.init=bundled: the model section differs from the bundled model in "
                          f"{', '.join(differ)}; use model.preset: small without field changes")
    model = StereoModel(cfg.model.arch)
    load_weights(model, read_weights(path), str(path))
    log.info("student initialised from the bundled weights (%s)", path)
    return model.train()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Trainer:
    """Runs one training run in one process (one rank of a torchrun job)."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, env: D.DistEnv, train_dataset: Dataset | DeviceBatches,
                 val_dataset: Dataset | None = None, resume: bool = False) -> None:
        self.cfg, self.run_dir, self.env = cfg, Path(run_dir), env
        self.train_dataset, self.val_dataset = train_dataset, val_dataset
        seed_everything(cfg.run.seed)
        student = StereoModel(cfg.model.arch) if resume else build_student(cfg)
        self.engine = Engine(student, cfg, env)
        self.sampler = D.ResumableSampler(train_dataset, env, cfg.run.seed)
        self.loader: DataLoader | None = None
        self.steps_per_epoch, self.total_steps, self.warmup_steps = self._plan()
        self.cfg_total_steps, self.cfg_warmup_steps = self.total_steps, self.warmup_steps
        self.step = self.epoch = self.position = self.nonfinite = 0
        self.best: dict[str, Any] | None = None
        self.last_val: dict[str, float] = {}
        self.last_saved = -1
        self.console: TrainConsole | None = None  # set by fit()
        self.started = time.perf_counter()
        self.pace_mark = (self.started, 0)
        self.budget_fixed = self.cfg.optim.time_budget_s is None
        self.stop_signal: int | None = None
        if resume:
            self._resume()
        if env.is_main:
            atomic_write_bytes(self.run_dir / CONFIG_NAME, cfg.to_yaml().encode())
        self.logger = RunLogger(self.run_dir, env.is_main, self.step if resume else None)  # last: nothing can
        # fail after it opens its files, so a failed construction leaves none open

    def _plan(self) -> tuple[int, int, int]:
        o = self.cfg.optim
        per_epoch = self.sampler.num_samples // (o.batch_size * o.accum_steps)  # this rank's indices per epoch
        if per_epoch < 1:
            raise ConfigError(f"the training set ({len(self.train_dataset)} items) is smaller than one step "
                              f"(batch_size {o.batch_size} x accum_steps {o.accum_steps} x {self.env.world_size} "
                              "processes)")
        total = o.max_steps if o.max_steps is not None else o.epochs * per_epoch
        warmup = o.warmup_steps if o.warmup_steps is not None else round(o.warmup_epochs * per_epoch)
        return per_epoch, total, min(warmup, total)

    # --- the loop ---------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        """Train to ``total_steps`` (validating and checkpointing on the way); return the result.

        A resumed run that has already reached ``total_steps`` trains nothing and says so.
        """
        if self.step >= self.total_steps:
            self.logger.close()
            log.warning("%s already finished at step %d (of %d): nothing to train; to train longer, resume with "
                        "optim.max_steps=N above %d", self.run_dir, self.step, self.total_steps, self.step)
            last = self.run_dir / S.checkpoint_name(self.step)
            return TrainResult(self.run_dir, self.step, last if self.env.is_main else None, self.best, self.engine,
                               steps_trained=0)
        first_step = self.step
        log.info("training %d steps (%d per epoch, warm-up %d) in %s", self.total_steps, self.steps_per_epoch,
                 self.warmup_steps, self.run_dir)
        if self.env.is_main:
            names = LOSS_TERMS if self.cfg.madis.enabled else {"gt": LOSS_TERMS["gt"]}
            log.info("loss terms: %s; %s", "; ".join(f"{k} = {v}" for k, v in names.items()),
                     MADIS_TOTAL if self.cfg.madis.enabled else BASELINE_TOTAL)
        o = self.cfg.optim
        self.console = TrainConsole(self.total_steps, self.step, o.batch_size * o.accum_steps * self.env.world_size,
                                    self.cfg.run.log_every, self.env.is_main, o.time_budget_s)
        last = None
        try:
            with self._stop_signals():
                while self.step < self.total_steps:
                    for micro_batches in self._epoch_batches():
                        self._train_step(micro_batches)
                        if self.step >= self.total_steps:
                            break
                        self._stop_if_asked()
                    if self.position >= self.steps_per_epoch:
                        self.epoch, self.position = self.epoch + 1, 0
                if self.last_saved != self.step:
                    self._checkpoint()
                last = self.run_dir / S.checkpoint_name(self.step) if self.env.is_main else None
        finally:
            self.console.finish(self.step, self.run_dir, last, self.best, self.logger.writer is not None)
            self.logger.close()
            self._report_bad_samples()
            self.loader = None  # stops its persistent workers
        return TrainResult(self.run_dir, self.step, last, self.best, self.engine, steps_trained=self.step - first_step,
                           bad_samples=self._bad_samples())

    # --- stopping on a signal ---------------------------------------------------------------------
    @contextlib.contextmanager
    def _stop_signals(self) -> Iterator[None]:
        """While training, STOP_SIGNALS only ask for a stop after the current step (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def ask(signum: int, frame: Any) -> None:
            if self.stop_signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl-C: stop now
            self.stop_signal = signum
            log.warning("%s received: stopping after step %d (checkpoint, then exit)",
                        signal.Signals(signum).name, self.step + 1)

        previous = {s: signal.signal(s, ask) for s in STOP_SIGNALS}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _stop_if_asked(self) -> None:
        """After a step: when a stop signal came (to any rank), save this step and raise TrainingInterrupted."""
        flag = torch.tensor([float(self.stop_signal or 0)])
        if self.env.distributed:  # every rank stops at the same step (the signal may reach them apart)
            flag = D.all_reduce_max(flag.to(self.env.device), self.env).cpu()
        if not flag.item():
            return
        if self.last_saved != self.step:
            self._checkpoint()
        raise TrainingInterrupted(self.run_dir, self.step, signal.Signals(int(flag.item())).name)

    def _bad_samples(self) -> int:
        return int(getattr(self.train_dataset, "bad_samples", 0))

    def _report_bad_samples(self) -> None:
        if self._bad_samples() and self.env.is_main:
            log.warning("%d unreadable training samples were skipped (data.skip_bad_samples)", self._bad_samples())

    def _epoch_batches(self) -> Iterator[list[dict[str, Any]]]:
        """Groups of ``accum_steps`` micro-batches for the rest of the current epoch."""
        o = self.cfg.optim
        self.sampler.set_position(self.epoch, self.position * o.batch_size * o.accum_steps)
        if isinstance(self.train_dataset, DeviceBatches):  # rendered on the device: batch n is a function of n
            for _ in range(self.steps_per_epoch - self.position):
                yield [self.train_dataset.batch(self.step * o.accum_steps + i) for i in range(o.accum_steps)]
            return
        if hasattr(self.train_dataset, "set_epoch"):
            self.train_dataset.set_epoch(self.epoch)
        if self.loader is None:  # built once: its worker processes persist across epochs
            workers = self.cfg.run.num_workers
            self.loader = DataLoader(self.train_dataset, batch_size=o.batch_size, sampler=self.sampler,
                                     drop_last=True, num_workers=workers, pin_memory=self.env.device.type == "cuda",
                                     worker_init_fn=worker_init_fn if workers else None,
                                     persistent_workers=workers > 0)
        batches = iter(self.loader)
        for _ in range(self.steps_per_epoch - self.position):
            try:
                group = [next(batches) for _ in range(o.accum_steps)]
            except DataError as err:  # raised again in this process by a DataLoader worker: keep its message
                raise DataError(worker_error_message(err)) from None
            except Exception:
                if self.stop_signal is None:
                    raise
                self._stop_if_asked()  # a stop signal sent to the whole group also ended the data workers
                raise
            yield group

    def _fit_budget(self) -> None:
        """Set ``total_steps`` so that the run ends within ``optim.time_budget_s`` (same on every rank)."""
        now = time.perf_counter()
        pace = (now - self.pace_mark[0]) / max(1, self.step - self.pace_mark[1])
        fits = int((self.cfg.optim.time_budget_s * BUDGET_MARGIN - (now - self.started)) / pace)
        total = torch.tensor(float(max(self.step + 1, min(self.cfg_total_steps, self.step + fits))))
        D.broadcast_from_main(total, self.env)
        self.total_steps = int(total.item())
        self.warmup_steps = min(self.cfg_warmup_steps, self.total_steps)
        self.pace_mark = (now, self.step)
        self.budget_fixed = self.step >= BUDGET_FIT_STEPS[-1]
        log.info("time budget %.0f s: %.3f s per step lately, the run ends at step %d",
                 self.cfg.optim.time_budget_s, pace, self.total_steps)

    def _train_step(self, micro_batches: list[dict[str, Any]]) -> None:
        if not self.budget_fixed and self.step == BUDGET_PACE_START:
            self.pace_mark = (time.perf_counter(), self.step)
        if not self.budget_fixed and self.step in BUDGET_FIT_STEPS:
            self._fit_budget()
        start = time.perf_counter()
        o = self.cfg.optim
        lr = lr_at(self.step, self.total_steps, self.warmup_steps, o.lr, o.schedule, o.cooldown_frac)
        result = self.engine.step(micro_batches, self.step, lr)
        self.step += 1
        self.position += 1
        self._record(result, time.perf_counter() - start)
        self.console.step(self.step, self.total_steps, result.losses, result.lr)
        self._guard_nonfinite(result)
        run = self.cfg.run
        final = self.step >= self.total_steps
        if self.val_dataset is not None and ((run.val_every and self.step % run.val_every == 0) or final):
            self._validate()
        if (run.ckpt_every and self.step % run.ckpt_every == 0) or final:
            self._checkpoint()

    def _record(self, result: StepResult, seconds: float) -> None:
        record = {"kind": "train", "step": self.step, "epoch": self.epoch, "lr": result.lr, **result.losses,
                  "time": seconds, "skipped": result.skipped}
        if result.grad_norm is not None:
            record["grad_norm"] = result.grad_norm
        if result.loss_scale is not None:
            record["loss_scale"] = result.loss_scale
        log_now = self.cfg.run.log_every and self.step % self.cfg.run.log_every == 0
        self.logger.write(record, scalars=bool(log_now))

    def _guard_nonfinite(self, result: StepResult) -> None:
        if result.skipped and not result.failed:
            log.info("step %d skipped by the fp16 gradient scaler (loss scale now %g)", self.step, result.loss_scale)
        if not result.failed:
            return
        self.nonfinite += 1
        log.warning("step %d skipped: non-finite loss or gradients (%d so far)", self.step, self.nonfinite)
        if self.nonfinite >= self.cfg.run.max_nonfinite:
            raise TrainingError(
                f"stopping at step {self.step}: {self.nonfinite} steps had non-finite losses or gradients "
                f"(run.max_nonfinite={self.cfg.run.max_nonfinite}); try a lower optim.lr, optim.clip_grad, "
                "or optim.amp=bf16 instead of fp16"
            )

    # --- validation and checkpoints ----------------------------------------------------------------
    def _validate(self) -> None:
        arch = self.cfg.model.arch
        metrics = validate(self.engine.model, self.val_dataset, self.env, arch.crop, self.cfg.data.val_overlap,
                           arch.conf_mode, self.engine.autocast())
        self.last_val = metrics
        self.logger.write({"kind": "val", "step": self.step, **metrics})
        key = self.cfg.run.best_metric
        self.console.validation(self.step, metrics, key)
        value = metrics.get(key)
        if value is None or not math.isfinite(value):
            if self.env.is_main:
                log.warning("validation at step %d has no finite %s; the best checkpoint stays as it is", self.step,
                            key)
            return
        if self.best is None or value < self.best["value"]:
            self.best = {"metric": key, "value": value, "step": self.step}
            if self.env.is_main:  # the best value travels with the file, so a resume can never lose it
                with self._saving(f"{BEST_NAME} of step {self.step}", self.last_saved):
                    save_model(self.engine.model, self.run_dir / BEST_NAME, best=self.best, **self._provenance())

    def _provenance(self) -> dict[str, Any]:
        return {"recipe": "madis" if self.cfg.madis.enabled else "croco_stereo_baseline", "steps": self.step,
                "epoch": self.epoch, "dataset": list(self.cfg.data.train), "metrics": self.last_val,
                "train_config": self.cfg.to_dict()}

    def _checkpoint(self) -> None:
        """Student checkpoint, then train_state.pt pointing at it, then rotation (crash-safe order)."""
        previous, self.last_saved = self.last_saved, self.step
        if not self.env.is_main:
            return
        name = S.checkpoint_name(self.step)
        with self._saving(f"the checkpoint of step {self.step}", previous, self.run_dir / name):
            save_model(self.engine.model, self.run_dir / name, **self._provenance())
            state = {"version": 1, "step": self.step, "total_steps": self.total_steps, "epoch": self.epoch,
                     "position": self.position,
                     "checkpoint": name, "engine": self.engine.state_dict(), "rng": S.capture_rng(),
                     "best": self.best, "nonfinite": self.nonfinite, "world_size": self.env.world_size}
            S.save_train_state(self.run_dir / S.STATE_NAME, state)
        S.rotate_checkpoints(self.run_dir, self.cfg.run.keep_last, protect=name)

    @contextlib.contextmanager
    def _saving(self, what: str, previous: int, partial: Path | None = None) -> Iterator[None]:
        """Turn a failed write (disk full, ...) into a TrainingError saying what is still intact.

        The writes are atomic, so the files of the last checkpoint are untouched; ``partial`` (a file written
        before the failure that nothing refers to) is removed to give the space back.
        """
        try:
            yield
        except OSError as err:
            if partial is not None:
                partial.unlink(missing_ok=True)
            kept = (f"the checkpoint of step {previous} and {S.STATE_NAME} are intact" if previous >= 0
                    else "no checkpoint was saved before")
            raise TrainingError(f"cannot write {what} in {self.run_dir} ({err.strerror or err}); {kept}: free "
                                f"space, then {resume_hint(self.run_dir)}") from err

    def _resume(self) -> None:
        state = S.load_train_state(self.run_dir / S.STATE_NAME)
        ckpt = self.run_dir / state["checkpoint"]
        load_weights(self.engine.model, read_weights(ckpt), str(ckpt))
        self.engine.load_state_dict(state["engine"])
        S.restore_rng(state["rng"])
        self.step, self.epoch, self.position = state["step"], state["epoch"], state["position"]
        self.best = _best_of(self.cfg.run.best_metric, state["best"], self._saved_best())
        self.nonfinite, self.last_saved = state["nonfinite"], state["step"]
        if self.cfg.optim.time_budget_s is not None and state["step"] >= BUDGET_FIT_STEPS[0]:
            # the length the budget fixed (otherwise the config's max_steps / epochs, which may have changed)
            self.total_steps, self.budget_fixed = state["total_steps"], True
            self.warmup_steps = min(self.cfg_warmup_steps, self.total_steps)
        if state["world_size"] != self.env.world_size:
            log.warning("resuming a %d-process run with %d processes: the data order after step %d differs",
                        state["world_size"], self.env.world_size, self.step)
        if self.env.is_main:
            S.remove_stale_temp_files(self.run_dir)
        log.info("resumed %s at step %d (epoch %d)", self.run_dir, self.step, self.epoch)

    def _saved_best(self) -> dict[str, Any] | None:
        """The best value stored in ``best.safetensors`` (which may be newer than ``train_state.pt``)."""
        path = self.run_dir / BEST_NAME
        if not path.is_file():
            return None
        try:
            return read_metadata(path)["metadata"].get("best")
        except CheckpointError as err:
            log.warning("ignoring the best value of %s (%s)", path, err)
            return None


def _best_of(metric: str, *candidates: dict[str, Any] | None) -> dict[str, Any] | None:
    """The lowest finite best record for ``metric`` among ``candidates`` (None when there is none)."""
    usable = [c for c in candidates if isinstance(c, dict) and c.get("metric") == metric
              and isinstance(c.get("value"), (int, float)) and math.isfinite(c["value"])]
    return min(usable, key=lambda c: c["value"], default=None)


def prepare_run_dir(cfg: TrainConfig, out_dir: str | Path | None) -> tuple[Path, bool]:
    """The run folder (created when missing) and whether this call created it."""
    chosen = out_dir if out_dir is not None else cfg.run.out_dir
    if chosen is None:
        raise ConfigError("no run folder: pass --out DIR or set run.out_dir")
    run_dir = Path(chosen)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"run folder {run_dir} is a file")
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir, created


def check_run_dir(cfg: TrainConfig, run_dir: Path, resume: bool) -> None:
    """A run to resume must be there and keep its model; a fresh run must not overwrite one."""
    has_state = (run_dir / S.STATE_NAME).is_file()
    if resume and not has_state:
        raise CheckpointError(f"cannot resume: {run_dir / S.STATE_NAME} not found")
    if not resume and has_state:
        raise ConfigError(f"{run_dir} already holds a training run; resume it with --resume {run_dir} "
                          "or choose another --out")
    saved_path = run_dir / CONFIG_NAME
    if resume and saved_path.is_file():
        from madis_stereo.training.config import load_train_config

        saved = load_train_config(saved_path).to_dict()["model"]
        given = cfg.to_dict()["model"]
        changed = [f"model.{k}={given.get(k)!r} (the run has {saved.get(k)!r})"
                   for k in sorted(set(saved) | set(given)) if saved.get(k) != given.get(k)]
        if changed:
            raise ConfigError(f"--resume {run_dir}: the model of a run is fixed by its checkpoints, so "
                              f"{', '.join(changed)} cannot apply; drop the model override(s) or start a new run "
                              f"with model.init={run_dir}/best.safetensors")


def train(cfg: TrainConfig, out_dir: str | Path | None = None, resume: bool = False,
          train_dataset: Dataset | DeviceBatches | None = None, val_dataset: Dataset | None = None) -> TrainResult:
    """Train per ``cfg`` in this process (one rank under torchrun); datasets default to the ``data`` section.

    ``resume``: continue the run in ``out_dir`` (or ``run.out_dir``) from its ``train_state.pt``. The run
    folder is locked while this runs (:class:`~madis_stereo.training.state.RunLock`, on rank 0); a run
    that fails before its first step leaves no folder it created behind.
    """
    env = D.setup(cfg.run.device)
    try:
        run_dir, created = prepare_run_dir(cfg, out_dir)
        lock = S.RunLock(run_dir)
        try:
            if env.is_main:
                lock.acquire()
            check_run_dir(cfg, run_dir, resume)
            if train_dataset is None and cfg.data.render_on_device:
                train_dataset = build_device_batches(cfg.data, cfg.model.arch.crop, cfg.optim.batch_size,
                                                     env.device, env.rank)
            elif train_dataset is None:
                train_dataset = build_train_dataset(cfg.data, cfg.model.arch.crop, cfg.run.seed)
            if val_dataset is None:
                val_dataset = build_val_dataset(cfg.data)
            trainer = Trainer(cfg, run_dir, env, train_dataset, val_dataset, resume=resume)
        except BaseException:
            lock.release()
            if created and env.is_main:
                shutil.rmtree(run_dir, ignore_errors=True)
            raise
        try:
            return trainer.fit()
        finally:
            lock.release()
    finally:
        D.teardown(env)
