"""Training configuration: typed, strict dataclasses loaded from YAML plus ``key=value`` overrides.

Sections: ``model`` (a preset plus field overrides, or ``init`` from a checkpoint), ``data`` (training
mixture, optional validation set, augmentation), ``madis`` (masking and loss weights; ``enabled: false`` is
the plain CroCo-Stereo fine-tuning baseline), ``teacher`` (EMA), ``optim`` and ``run``. The resolved config
(model section fully expanded) is written to the run folder as ``config.yaml`` and reloads to the same
object.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from madis_stereo.errors import ConfigError
from madis_stereo.model.config import ModelConfig
from madis_stereo.training.schedule import SCHEDULES
from madis_stereo.training.teacher import SCOPES as TEACHER_SCOPES
from madis_stereo.utils.config import apply_overrides, from_dict, load_yaml, to_dict

__all__ = [
    "DataConfig",
    "LossWeights",
    "MadisConfig",
    "ModelSection",
    "OptimConfig",
    "RunConfig",
    "TeacherConfig",
    "TrainConfig",
    "load_train_config",
]

AMP_MODES = ("none", "bf16", "fp16", "auto")  # auto: bf16 where it is the faster (see Engine.amp_dtype)


@dataclasses.dataclass(frozen=True)
class ModelSection:
    """The student architecture and where its weights start.

    ``init``: None (random init with ``run.seed``), ``bundled`` (the package's default weights; ``arch``
    must be theirs, crop aside), one of our ``.safetensors`` checkpoints, a CroCo-Stereo ``.pth`` or a CroCo
    v2 pretraining ``.pth`` (DPT head freshly initialised). The architecture is always ``arch``; the file
    must fit it.
    """

    arch: ModelConfig = dataclasses.field(default_factory=lambda: ModelConfig.preset("vitb_basedec"))
    init: str | None = None


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """``train``: dataset specs for ``madis_stereo.data.build_mixture`` (each may carry ``repeat``).

    ``val``: one dataset spec or None. ``augment``: ``AugmentConfig`` fields, None = no augmentation; the
    crop is ``model.crop`` (one source of truth for training and tiled inference).
    ``render_on_device``: render the training pairs on the training device (``training.rendering``) instead
    of loading them through DataLoader workers; ``train`` is then one ``synthetic`` spec of size
    ``model.crop``, and ``augment`` (applied on the device) has ``scale_prob: 0`` or is null.
    ``atlas_refresh`` (with ``render_on_device``): pairs between two fresh texture atlases (0 = one atlas for
    the whole run). ``skip_bad_samples``: an unreadable
    training sample is skipped (and counted) instead of stopping the run with its file name.
    """

    train: tuple[dict, ...] = ()
    val: dict | None = None
    augment: dict | None = None
    val_overlap: float = 0.7
    render_on_device: bool = False
    atlas_refresh: int = 0
    skip_bad_samples: bool = False

    def __post_init__(self) -> None:
        for i, spec in enumerate(self.train):
            if "name" not in spec:
                raise ValueError(f"data.train[{i}] has no 'name'")
        if self.val is not None and "name" not in self.val:
            raise ValueError("data.val has no 'name'")
        if not 0.0 <= self.val_overlap < 1.0:
            raise ValueError(f"val_overlap must be in [0, 1), got {self.val_overlap}")
        if self.atlas_refresh < 0:
            raise ValueError(f"atlas_refresh must be >= 0 (pairs; 0 = never), got {self.atlas_refresh}")


@dataclasses.dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms (docs/METHOD.md section 3); all 1 in the paper's code."""

    gt: float = 1.0
    distill: float = 1.0
    recon_left: float = 1.0
    recon_right: float = 1.0


@dataclasses.dataclass(frozen=True)
class MadisConfig:
    """MaDis-Stereo student training; ``enabled: false`` = CroCo-Stereo fine-tuning (GT loss only)."""

    enabled: bool = True
    mask_ratio: float = 0.4
    weights: LossWeights = dataclasses.field(default_factory=LossWeights)
    laplace_a: float = 3.0
    laplace_b: float = 3.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {self.mask_ratio}")
        if self.laplace_a <= 0 or self.laplace_b <= 0:
            raise ValueError("laplace_a and laplace_b must be positive")


@dataclasses.dataclass(frozen=True)
class TeacherConfig:
    """EMA teacher (``training.teacher``). Default = the public MaDis code: ``scope: encoder`` (EMA of the
    encoder only, decoded by the student's current decoder and head) with ``detach: false`` (the distillation
    loss trains that decoder and head too). Options: ``detach: true`` (constant pseudo labels);
    ``scope: full`` (whole-network EMA; needs a trained head: ``model.init`` a stereo checkpoint, or
    ``start_step`` > 0, before which the teacher copies the student and its labels are unused)."""

    scope: str = "encoder"
    detach: bool = False
    start_step: int = 0
    momentum: float = 0.9999

    def __post_init__(self) -> None:
        if self.scope not in TEACHER_SCOPES:
            raise ValueError(f"scope must be one of {', '.join(TEACHER_SCOPES)}, got {self.scope!r}")
        if not 0.0 <= self.momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {self.momentum}")
        if self.start_step < 0:
            raise ValueError(f"start_step must be >= 0, got {self.start_step}")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warm-up, then ``schedule``: ``cosine`` (half-cosine to 0) or ``wsd`` (constant,
    then a linear cool-down to 0 over the last ``cooldown_frac`` of the run), per optimiser step.

    Length: ``max_steps`` when set, else ``epochs`` passes over the training mixture; ``time_budget_s``
    (a fixed compute budget) shortens the run to what fits in that many seconds of wall time: the length
    is fitted from the measured pace at steps 30 and 150 (``trainer.BUDGET_FIT_STEPS``), and the schedule
    (the cosine, or the cool-down) ends there.
    Warm-up: ``warmup_steps`` when set, else ``warmup_epochs``. ``batch_size`` is per process; the effective batch is
    batch_size x accum_steps x processes. ``activation_checkpointing`` recomputes each transformer block's
    activations in the backward pass instead of storing them (less memory, about a third more compute).
    """

    lr: float = 3e-5
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.05
    epochs: int = 32
    max_steps: int | None = None
    warmup_epochs: float = 1.0
    warmup_steps: int | None = None
    batch_size: int = 6
    accum_steps: int = 1
    clip_grad: float | None = None
    amp: str = "none"
    time_budget_s: float | None = None
    schedule: str = "cosine"
    cooldown_frac: float = 0.2
    activation_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if not 0 < self.cooldown_frac <= 1:
            raise ValueError(f"cooldown_frac must be in (0, 1], got {self.cooldown_frac}")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise ValueError("time_budget_s must be positive (or null for no budget)")
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {', '.join(AMP_MODES)}, got {self.amp!r}")
        if self.lr < 0 or self.weight_decay < 0:
            raise ValueError("lr and weight_decay must be non-negative")
        if self.batch_size < 1 or self.accum_steps < 1:
            raise ValueError("batch_size and accum_steps must be at least 1")
        if self.max_steps is None and self.epochs < 1:
            raise ValueError("set epochs >= 1 or max_steps")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError("max_steps must be at least 1")
        if self.clip_grad is not None and self.clip_grad <= 0:
            raise ValueError("clip_grad must be positive (or null for no clipping)")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Run folder, seeding, logging and checkpoint cadence (in optimiser steps; 0 = never periodically)."""

    out_dir: str | None = None
    seed: int = 0
    log_every: int = 20
    val_every: int = 0
    ckpt_every: int = 1000
    keep_last: int = 2
    best_metric: str = "epe"
    max_nonfinite: int = 20
    num_workers: int = 4
    device: str = "auto"

    def __post_init__(self) -> None:
        for name in ("log_every", "val_every", "ckpt_every", "num_workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.keep_last < 1:
            raise ValueError("keep_last must be at least 1")
        if self.max_nonfinite < 1:
            raise ValueError("max_nonfinite must be at least 1")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The whole training recipe."""

    model: ModelSection = dataclasses.field(default_factory=ModelSection)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    madis: MadisConfig = dataclasses.field(default_factory=MadisConfig)
    teacher: TeacherConfig = dataclasses.field(default_factory=TeacherConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Strict construction; the ``model`` section is ``{preset, init, <ModelConfig fields>}``."""
        data = dict(data)
        model = data.pop("model", None) or {}
        if not isinstance(model, dict):
            raise ConfigError(f"model: expected a mapping, got {model!r}")
        cfg = from_dict(cls, data)
        section = _model_section(model)
        # the loss scale b is set in the madis section and stored with the model (certainty reads it)
        b = cfg.madis.laplace_b
        if "laplace_b" in model and section.arch.laplace_b != b:
            raise ConfigError(f"model.laplace_b ({section.arch.laplace_b}) differs from madis.laplace_b ({b}); "
                              "set madis.laplace_b only (the model records it)")
        return dataclasses.replace(cfg, model=dataclasses.replace(section, arch=section.arch.replace(laplace_b=b)))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict; the model section is flattened back to ``{init, <ModelConfig fields>}``."""
        out = to_dict(dataclasses.replace(self, model=ModelSection()))
        out["model"] = {"init": self.model.init, **self.model.arch.to_dict()}
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _model_section(section: dict[str, Any]) -> ModelSection:
    """``{preset, init, <ModelConfig fields>}`` -> ModelSection; errors name ``model.<key>``."""
    section = dict(section)
    init = section.pop("init", None)
    if init is not None and not isinstance(init, str):
        raise ConfigError(f"model.init: expected a path string, got {init!r}")
    preset = section.pop("preset", None)
    base = to_dict(ModelConfig.preset(preset)) if preset is not None else {}
    base.update(section)
    return ModelSection(from_dict(ModelConfig, base, prefix="model."), init)


def load_train_config(source: str | Path | dict[str, Any], overrides: Sequence[str] = ()) -> TrainConfig:
    """A TrainConfig from a YAML file (or a dict) with ``a.b=value`` overrides; unknown keys raise ConfigError."""
    data = source if isinstance(source, dict) else load_yaml(source)
    return TrainConfig.from_dict(apply_overrides(data, list(overrides)))
