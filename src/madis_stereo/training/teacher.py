"""The EMA teacher of MaDis-Stereo: an exponential moving average of the student that labels unmasked pairs.

After every optimiser step: theta_teacher <- m * theta_teacher + (1 - m) * theta_student (m = 0.9999).
Scope ``full`` averages the whole network and runs it end to end (the paper's teacher stereo network);
scope ``encoder`` averages only the encoder (patch embedding, encoder blocks, final encoder norm) and runs
the teacher's encoder features through the *student's* decoder and heads, as the public MaDis code does.
Pseudo labels never carry gradients.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor

from madis_stereo.errors import CheckpointError
from madis_stereo.model.network import StereoModel

__all__ = ["ENCODER_PREFIXES", "EMATeacher"]

ENCODER_PREFIXES = ("patch_embed.", "enc_blocks.", "enc_norm.")


class EMATeacher:
    """EMA copy of a student :class:`StereoModel` (initialised from the student's current weights).

    Args:
        student: the (unwrapped) student network.
        momentum: m in the update above.
        scope: "full" or "encoder" (which parameters are averaged and used).
    """

    def __init__(self, student: StereoModel, momentum: float = 0.9999, scope: str = "full") -> None:
        if scope not in ("full", "encoder"):
            raise ValueError(f"teacher scope must be 'full' or 'encoder', got {scope!r}")
        self.momentum = float(momentum)
        self.scope = scope
        self.model = copy.deepcopy(student).eval().requires_grad_(False)
        self.names = [n for n, _ in student.named_parameters() if scope == "full" or n.startswith(ENCODER_PREFIXES)]
        params = dict(self.model.named_parameters())
        self._params = [params[n] for n in self.names]

    @torch.no_grad()
    def update(self, student: StereoModel) -> None:
        """theta_t <- m theta_t + (1 - m) theta_s for every averaged parameter (two fused foreach calls)."""
        params = dict(student.named_parameters())
        source = [params[n].detach() for n in self.names]
        torch._foreach_mul_(self._params, self.momentum)
        torch._foreach_add_(self._params, source, alpha=1.0 - self.momentum)

    @torch.no_grad()
    def pseudo_labels(self, left: Tensor, right: Tensor, student: StereoModel) -> Tensor:
        """Teacher disparity [B, 1, H, W] of the unmasked normalised pair (no gradient).

        ``student`` supplies the decoder and heads when the scope is "encoder".
        """
        encoding = self.model.encode(left, right)
        decoder = self.model if self.scope == "full" else student
        return decoder.decode(encoding).disparity.detach()

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
