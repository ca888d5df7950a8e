"""One optimiser step of MaDis-Stereo (or of the CroCo-Stereo baseline): losses, backward, update, EMA.

MaDis step (docs/METHOD.md section 2): masks for both views -> student ``forward_masked`` (left pass: disparity
and left reconstruction; right pass: right reconstruction); the EMA teacher labels the unmasked pair;
loss = w_gt L_gt + w_distill L_distill + w_rec (L_rec(left) + L_rec(right)), logged as the disjoint terms of
``LOSS_TERMS`` (L_distill = gt + pseudo). Baseline step: unmasked ``forward`` and L_gt only.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.profiler import record_function

from madis_stereo.errors import CheckpointError, ConfigError
from madis_stereo.inference.precision import resolve_precision
from madis_stereo.model.masking import random_masks
from madis_stereo.model.network import PairEncoding, StereoModel
from madis_stereo.model.preprocess import normalize
from madis_stereo.training.config import TrainConfig
from madis_stereo.training.distributed import DistEnv, all_reduce_sum
from madis_stereo.training.losses import (
    LaplaceParams,
    distillation_terms,
    gt_loss,
    reconstruction_loss,
)
from madis_stereo.training.schedule import build_optimizer, set_lr
from madis_stereo.training.teacher import EMATeacher

__all__ = ["AMP_DTYPES", "Engine", "StepResult", "StudentForward", "amp_dtype", "freeze_unused", "mask_generator",
           "step_masks", "warn_encoder_taps"]

log = logging.getLogger(__name__)

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def amp_dtype(amp: str, device: torch.device, log_choice: bool = True) -> torch.dtype | None:
    """The autocast dtype of ``optim.amp`` on ``device`` (None: float32). ``auto`` is bf16 where bf16 is the
    faster: on a GPU with bf16, and on a CPU whose measured bf16 matrix products beat its fp32 ones (Zen 4 and
    Zen 5 with AVX512-BF16, Intel with AMX; not a Zen 3 or an Intel without AMX, where bf16 is 2-5x slower)."""
    if amp != "auto":
        return AMP_DTYPES[amp]
    choice = resolve_precision("auto", device)
    if log_choice:
        log.info("optim.amp=auto: %s", choice.reason.removeprefix("auto: "))
    return torch.bfloat16 if choice.precision == "bf16" else None

# The coarsest DPT fusion block owns a residual unit for a skip input it never receives (CroCo keeps it so that
# checkpoints map one-to-one). Frozen, so DDP needs no find_unused_parameters and AdamW never decays it.
ALWAYS_UNUSED = ("head.fusion.3.rcu1.",)
# What each logged term is (metrics.jsonl keys and the training log), and how the total is made of them.
LOSS_TERMS = {
    "gt": "Laplacian NLL on pixels with finite ground truth",
    "pseudo": "Laplacian NLL on pixels without GT, against the EMA teacher's disparity (0 when the GT is dense)",
    "recon_left": "masked-patch reconstruction MSE, left view",
    "recon_right": "masked-patch reconstruction MSE, right view",
}
MADIS_TOTAL = ("loss = (w.gt + w.distill) * gt + w.distill * pseudo + w.recon_left * recon_left + "
               "w.recon_right * recon_right (the distillation loss gt + pseudo counts GT pixels again, as the "
               "public MaDis code does)")
BASELINE_TOTAL = "loss = w.gt * gt"

# The unmasked forward of the baseline uses neither the mask token nor the reconstruction head.
BASELINE_UNUSED = ("mask_token", "recon_head.")


def freeze_unused(model: StereoModel, masked: bool) -> list[str]:
    """Set requires_grad=False on parameters the training forward never uses; return their names."""
    prefixes = ALWAYS_UNUSED + (() if masked else BASELINE_UNUSED)
    frozen = [n for n, p in model.named_parameters() if n.startswith(prefixes)]
    for name, param in model.named_parameters():
        if name in frozen:
            param.requires_grad_(False)
    return frozen


def mask_generator(seed: int, rank: int, step: int, micro: int) -> torch.Generator:
    """CPU generator seeded from (seed, rank, step, micro-batch): masks need no saved state to resume."""
    state = np.random.SeedSequence([seed, rank, step, micro]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def step_masks(generator: torch.Generator, batch: int, num_tokens: int, ratio: float) -> tuple[Tensor, Tensor]:
    """Left and right masks [batch, num_tokens] (True = masked): int(ratio * N) per row, every row independent."""
    masks = random_masks(2 * batch, num_tokens, ratio, generator)
    return masks[:batch], masks[batch:]


def warn_encoder_taps(arch: Any, mask_ratio: float) -> bool:
    """Warn (and return True) when masked training meets DPT taps on encoder layers.

    Under MaDis masking the encoder only sees the visible tokens, so an encoder tap hands the DPT head zeros
    at the masked positions during training, while inference gives it every token: the head learns from
    features it never gets at test time. Decoder layers see every position in training too. Without masking
    (the CroCo-Stereo baseline) encoder taps are fine, as in CroCo-Stereo itself.
    """
    encoder_taps = [h for h in arch.hooks if h < arch.enc_depth]
    if mask_ratio <= 0 or not encoder_taps:
        return False
    decoder = list(range(arch.enc_depth + arch.dec_depth - 4, arch.enc_depth + arch.dec_depth))
    log.warning("model.dpt_hooks %s tap encoder layer(s) %s: with MaDis masking (ratio %g) the DPT head gets "
                "zeros at masked tokens there in training but full features at inference. MaDis taps decoder "
                "layers only (e.g. model.dpt_hooks=%s for this %d+%d-layer model), or "
                "train with madis.enabled=false (no masking)", list(arch.hooks), encoder_taps, mask_ratio,
                decoder, arch.enc_depth, arch.dec_depth)
    return True


class StudentForward(nn.Module):
    """The module DDP wraps, so that every training forward (masked or not) goes through DDP's hooks.

    With ``teacher_encoding`` (the public MaDis teacher) it also decodes the teacher's features with the
    student's decoder and head, in the same forward (one DDP forward per backward), and returns
    ``(output, pseudo_disparity)``.
    """

    def __init__(self, model: StereoModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, left: Tensor, right: Tensor, mask_left: Tensor | None = None,
                mask_right: Tensor | None = None, teacher_encoding: PairEncoding | None = None) -> Any:
        if mask_left is None:
            return self.model(left, right)
        out = self.model.forward_masked(left, right, mask_left, mask_right)
        if teacher_encoding is None:
            return out
        return out, self.model.decode(teacher_encoding).disparity


@dataclass
class StepResult:
    """Losses (mean over micro-batches and ranks), the learning rate used, whether the update was skipped.

    ``overflow``: skipped by the fp16 gradient scaler (inf/NaN gradients of a finite loss), which then halved
    ``loss_scale``; routine while the scaler calibrates, a failure once the scale is below 1.
    """

    losses: dict[str, float]
    lr: float
    skipped: bool
    grad_norm: float | None = None
    overflow: bool = False
    loss_scale: float | None = None

    @property
    def failed(self) -> bool:
        """A skip that counts towards ``run.max_nonfinite``."""
        return self.skipped and not (self.overflow and (self.loss_scale or 0.0) >= 1.0)


class Engine:
    """Student, optional EMA teacher, optimiser and gradient scaler of one process.

    The student is wrapped in DistributedDataParallel when ``env`` is distributed (DDP broadcasts rank 0's
    weights, then the teacher copies them, so every rank starts, and stays, identical).
    """

    def __init__(self, model: StereoModel, cfg: TrainConfig, env: DistEnv) -> None:
        self.cfg = cfg
        self.env = env
        self.masked = cfg.madis.enabled
        self.model = model.to(env.device).train()
        self.model.activation_checkpointing = cfg.optim.activation_checkpointing
        self.frozen = freeze_unused(self.model, self.masked)
        self.net: nn.Module = StudentForward(self.model)
        if env.distributed:
            ids = [env.device.index] if env.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.net, device_ids=ids, gradient_as_bucket_view=True)
        t = cfg.teacher
        self.teacher = EMATeacher(self.model, t.momentum, t.scope, t.detach, t.start_step) if self.masked else None
        if env.is_main:
            warn_encoder_taps(self.model.config, cfg.madis.mask_ratio if self.masked else 0.0)
        o = cfg.optim
        fused = env.device.type in ("cpu", "cuda")
        self.optimizer = build_optimizer(self.model, o.lr, o.betas, o.weight_decay, fused=fused)
        self.amp_dtype = amp_dtype(o.amp, env.device, log_choice=env.is_main)
        if o.amp == "fp16" and env.device.type != "cuda":
            raise ConfigError("optim.amp=fp16 needs a CUDA device; use bf16 on CPU")
        self.scaler = torch.amp.GradScaler(env.device.type, enabled=o.amp == "fp16")
        self.laplace = LaplaceParams(cfg.madis.laplace_a, cfg.madis.laplace_b)

    # --- forward and losses -----------------------------------------------------------------------
    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.env.device.type, dtype=self.amp_dtype)

    def prepare(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor, Tensor]:
        """uint8 images -> normalised float on the device; GT disparity [B, 1, H, W] float32."""
        dev = self.env.device
        left = normalize(batch["left"].to(dev, non_blocking=True))
        right = normalize(batch["right"].to(dev, non_blocking=True))
        return left, right, batch["disparity"].to(dev, non_blocking=True).float()

    def losses(self, batch: dict[str, Any], step: int, micro: int = 0) -> dict[str, Tensor]:
        """Named loss terms and their weighted sum ``loss`` for one micro-batch."""
        left, right, gt = self.prepare(batch)
        if not self.masked:
            with self.autocast(), record_function("train/student_forward"):
                out = self.net(left, right)
            loss = gt_loss(out.disparity.float(), out.confidence.float(), gt, self.laplace)
            return {"loss": self.cfg.madis.weights.gt * loss, "gt": loss}
        return self._madis_losses(left, right, gt, step, micro)

    def _madis_losses(self, left: Tensor, right: Tensor, gt: Tensor, step: int, micro: int) -> dict[str, Tensor]:
        batch = left.shape[0]
        n = self.model.num_tokens(left.shape[-2:])
        gen = mask_generator(self.cfg.run.seed, self.env.rank, step, micro)
        mask_l, mask_r = (m.to(left.device) for m in step_masks(gen, batch, n, self.cfg.madis.mask_ratio))
        with self.autocast():
            encoding = self._teacher_encoding(left, right, gt, step)
            with record_function("train/student_forward"):
                if encoding is not None and self.teacher.labels_carry_gradient:
                    out, pseudo = self.net(left, right, mask_l, mask_r, encoding)
                else:
                    out = self.net(left, right, mask_l, mask_r)
                    pseudo = torch.zeros_like(gt) if encoding is None else None
            if pseudo is None:
                with record_function("train/teacher"):
                    pseudo = self.teacher.constant_labels(encoding, self.model)
        d, c = out.disparity.float(), out.confidence.float()
        p = self.model.config.patch_size
        on_gt, on_pseudo = distillation_terms(d, c, gt, pseudo.float(), self.laplace)
        terms = {  # disjoint parts (see LOSS_TERMS); the distillation loss is gt + pseudo
            "gt": on_gt,  # = gt_loss(d, c, gt)
            "pseudo": on_pseudo,
            "recon_left": reconstruction_loss(out.recon_left, left, mask_l, p),
            "recon_right": reconstruction_loss(out.recon_right, right, mask_r, p),
        }
        w = self.cfg.madis.weights
        total = ((w.gt + w.distill) * terms["gt"] + w.distill * terms["pseudo"] + w.recon_left * terms["recon_left"]
                 + w.recon_right * terms["recon_right"])
        return {"loss": total, **terms}

    def _teacher_encoding(self, left: Tensor, right: Tensor, gt: Tensor, step: int) -> PairEncoding | None:
        """The teacher's features of the unmasked pair, or None when its labels cannot enter the loss.

        None before ``teacher.start_step``, with distillation off, or where every GT pixel is finite: the
        distillation loss uses pseudo labels only on pixels without finite GT, so with dense GT they cannot
        change the loss or its gradient (the term is exactly 0 either way); skipping saves the teacher forward.
        """
        if (self.cfg.madis.weights.distill == 0 or not self.teacher.active(step)
                or bool(torch.isfinite(gt).all())):
            return None
        with record_function("train/teacher"):
            return self.teacher.encode(left, right)

    # --- one optimiser step -----------------------------------------------------------------------
    def step(self, micro_batches: Sequence[dict[str, Any]], step: int, lr: float) -> StepResult:
        """Accumulate gradients over ``micro_batches``, update (unless a loss is non-finite), update the EMA."""
        set_lr(self.optimizer, lr)
        self.net.train()
        sums: dict[str, Tensor] = {}
        for i, batch in enumerate(micro_batches):
            last = i == len(micro_batches) - 1
            sync = contextlib.nullcontext() if last or not self.env.distributed else self.net.no_sync()
            with sync:
                terms = self.losses(batch, step, i)
                with record_function("train/backward"):
                    self.scaler.scale(terms["loss"] / len(micro_batches)).backward()
            for key, value in terms.items():
                sums[key] = sums.get(key, 0.0) + value.detach().float()
        losses = self._mean_over_ranks(sums, len(micro_batches))
        if not math.isfinite(losses["loss"]):
            self.optimizer.zero_grad(set_to_none=True)
            return StepResult(losses, lr, skipped=True)
        with record_function("train/optimizer"):
            stepped, overflow, norm = self._update()
            self.optimizer.zero_grad(set_to_none=True)
        if stepped and self.teacher is not None:
            with record_function("train/ema"):
                self.teacher.update(self.model, step)
        scale = self.scaler.get_scale() if self.scaler.is_enabled() else None
        return StepResult(losses, lr, skipped=not stepped, grad_norm=norm, overflow=overflow, loss_scale=scale)

    def _mean_over_ranks(self, sums: dict[str, Tensor], micro: int) -> dict[str, float]:
        keys = list(sums)
        packed = all_reduce_sum(torch.stack([sums[k] for k in keys]), self.env)
        values = (packed / (micro * self.env.world_size)).tolist()
        return dict(zip(keys, values))

    def _update(self) -> tuple[bool, bool, float | None]:
        """Unscale, clip, optimiser step: (stepped, fp16 overflow skip, gradient norm before clipping).

        Non-finite gradients never reach the weights: the fp16 scaler skips such steps itself; otherwise the
        gradient norm (computed for clipping, or just for this check) decides, and the step is skipped.
        The norm is None only under the fp16 scaler without clipping.
        """
        norm = None
        params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        if self.cfg.optim.clip_grad is not None:
            self.scaler.unscale_(self.optimizer)
            norm = float(torch.nn.utils.clip_grad_norm_(params, self.cfg.optim.clip_grad))
        elif not self.scaler.is_enabled() and params:
            norm = float(torch.nn.utils.get_total_norm([p.grad for p in params]))  # one fused kernel on CUDA
        if norm is not None and not math.isfinite(norm) and not self.scaler.is_enabled():
            return False, False, norm
        scale = self.scaler.get_scale()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        overflow = self.scaler.is_enabled() and self.scaler.get_scale() < scale
        return not overflow, overflow, norm

    # --- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Optimiser, scaler and teacher state (the student weights are saved as a checkpoint)."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "teacher": self.teacher.state_dict() if self.teacher is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if self.teacher is not None:
            if state.get("teacher") is None:
                raise CheckpointError("the saved training state has no teacher (was it a baseline run?)")
            self.teacher.load_state_dict(state["teacher"])
