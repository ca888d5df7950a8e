"""The EMA teacher of MaDis-Stereo: an exponential moving average of the student that labels unmasked pairs.

After every optimiser step: theta_teacher <- m * theta_teacher + (1 - m) * theta_student (m = 0.9999).

Scopes (``teacher.scope``, ``teacher.detach``; docs/TRAINING.md):

- ``encoder`` (the public MaDis code, the default): only the encoder (patch embedding, encoder blocks, final
  encoder norm) is averaged; the teacher's features of the unmasked pair run through the *student's* current
  decoder and DPT head. With ``detach: false`` (the public code) that decoding carries gradients, so the
  distillation loss also trains the student's decoder and head through the pseudo labels; ``detach: true``
  makes the labels constants.
- ``full``: the whole network is averaged and runs end to end; its labels are constants. It must not start
  from a randomly initialised head (see :func:`check_teacher_start`).

``start_step``: until that optimiser step the teacher copies the student after every step (no averaging)
and its labels are not used; averaging and distillation start there.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor

from madis_stereo.errors import CheckpointError, ConfigError
from madis_stereo.model.network import PairEncoding, StereoModel

__all__ = ["ENCODER_PREFIXES", "SCOPES", "EMATeacher", "check_teacher_start"]

ENCODER_PREFIXES = ("patch_embed.", "enc_blocks.", "enc_norm.")
SCOPES = ("encoder", "full")


class EMATeacher:
    """EMA copy of a student :class:`StereoModel` (initialised from the student's current weights).

    Args:
        student: the (unwrapped) student network.
        momentum: m in the update above.
        scope: "encoder" or "full" (which parameters are averaged and used).
        detach: scope "encoder" only: pseudo labels without gradients (the public code keeps them).
        start_step: first optimiser step whose loss uses the pseudo labels (the teacher copies the student
            until then).
    """

    def __init__(self, student: StereoModel, momentum: float = 0.9999, scope: str = "encoder",
                 detach: bool = False, start_step: int = 0) -> None:
        if scope not in SCOPES:
            raise ValueError(f"teacher scope must be one of {', '.join(SCOPES)}, got {scope!r}")
        self.momentum = float(momentum)
        self.scope = scope
        self.detach = bool(detach) or scope == "full"
        self.start_step = int(start_step)
        self.model = copy.deepcopy(student).eval().requires_grad_(False)
        self.names = [n for n, _ in student.named_parameters() if scope == "full" or n.startswith(ENCODER_PREFIXES)]
        params = dict(self.model.named_parameters())
        self._params = [params[n] for n in self.names]

    @property
    def labels_carry_gradient(self) -> bool:
        """True when the pseudo labels are the student's decoding of the teacher's features, with gradients."""
        return not self.detach

    def active(self, step: int) -> bool:
        """Whether the loss of optimiser step ``step`` uses the pseudo labels."""
        return step >= self.start_step

    @torch.no_grad()
    def update(self, student: StereoModel, step: int | None = None) -> None:
        """After optimiser step ``step``: theta_t <- m theta_t + (1 - m) theta_s, or a plain copy before
        ``start_step`` (two fused foreach calls)."""
        momentum = 0.0 if step is not None and step < self.start_step else self.momentum
        params = dict(student.named_parameters())
        source = [params[n].detach() for n in self.names]
        torch._foreach_mul_(self._params, momentum)
        torch._foreach_add_(self._params, source, alpha=1.0 - momentum)

    @torch.no_grad()
    def encode(self, left: Tensor, right: Tensor) -> PairEncoding:
        """The teacher encoder's features of the unmasked normalised pair (no gradient)."""
        return self.model.encode(left, right)

    @torch.no_grad()
    def constant_labels(self, encoding: PairEncoding, student: StereoModel) -> Tensor:
        """Pseudo disparity [B, 1, H, W] without gradient: the teacher's own decoder and head (scope "full")
        or the student's (scope "encoder", detached)."""
        decoder = self.model if self.scope == "full" else student
        return decoder.decode(encoding).disparity.detach()

    def pseudo_labels(self, left: Tensor, right: Tensor, student: StereoModel) -> Tensor:
        """Teacher disparity [B, 1, H, W] of the unmasked normalised pair.

        Carries gradients into ``student``'s decoder and head when :attr:`labels_carry_gradient` (the
        training engine runs that decoding inside the student's DDP forward instead of calling this).
        """
        encoding = self.encode(left, right)
        if self.labels_carry_gradient:
            return student.decode(encoding).disparity
        return self.constant_labels(encoding, student)

    def state_dict(self) -> dict[str, Tensor]:
        """The averaged parameters (CPU copies), keyed by parameter name."""
        return {n: p.detach().to("cpu", copy=True) for n, p in zip(self.names, self._params)}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore the averaged parameters saved by :meth:`state_dict` (names and shapes must match)."""
        if sorted(state) != sorted(self.names):
            missing = sorted(set(self.names) - set(state))
            unexpected = sorted(set(state) - set(self.names))
            raise CheckpointError(f"teacher state does not match (missing {missing[:3]}, unexpected {unexpected[:3]})")
        for name, param in zip(self.names, self._params):
            param.copy_(state[name])


def check_teacher_start(scope: str, start_step: int, head_trained: bool, init: str | None) -> None:
    """Refuse a full-network teacher that would label with a randomly initialised DPT head.

    A full teacher starts as a copy of the student; when the student's head is new (random init, or CroCo v2
    pretraining, which has no stereo head) the EMA keeps most of that random head for thousands of steps at
    m = 0.9999 while its labels enter the loss from the first step.
    """
    if scope == "full" and start_step == 0 and not head_trained:
        origin = "a random initialisation" if init is None else f"{init} (no trained stereo head)"
        raise ConfigError(
            f"teacher.scope=full would distil from the untrained DPT head of {origin}: set teacher.start_step "
            "to the step where the student's head is trained, start from a trained stereo checkpoint "
            "(model.init), or use teacher.scope=encoder (the public MaDis code)"
        )
