"""Random patch masks for masked image modelling (MaDis-Stereo: 40% of the patches of each view)."""

from __future__ import annotations

import torch
from torch import Tensor

from madis_stereo.errors import InputError

__all__ = ["random_masks", "visible_index"]


def random_masks(batch: int, num_tokens: int, ratio: float, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None) -> Tensor:
    """[batch, num_tokens] bool masks (True = masked) with exactly ``int(ratio * num_tokens)`` True per row.

    Each row is an independent uniform draw (random permutation via argsort of uniform noise).
    """
    if not 0.0 <= ratio < 1.0:
        raise InputError(f"mask ratio must be in [0, 1), got {ratio}")
    num_masked = int(ratio * num_tokens)
    noise = torch.rand(batch, num_tokens, generator=generator, device=generator.device if generator else device)
    order = noise.argsort(dim=1)
    masks = torch.zeros(batch, num_tokens, dtype=torch.bool, device=noise.device)
    masks.scatter_(1, order[:, :num_masked], True)
    return masks.to(device) if device is not None else masks


def visible_index(mask: Tensor) -> Tensor:
    """Ascending indices of the unmasked tokens of each row: [B, N] bool -> [B, n_visible] long.

    Every row must mask the same number of tokens (so the visible tokens form a rectangular batch).
    """
    counts = mask.sum(dim=1)
    if counts.numel() and bool((counts != counts[0]).any()):
        raise InputError(f"every mask row must mask the same number of tokens, got counts {counts.tolist()}")
    num_visible = mask.shape[1] - (int(counts[0]) if counts.numel() else 0)
    return torch.argsort(mask.to(torch.uint8), dim=1, stable=True)[:, :num_visible]
