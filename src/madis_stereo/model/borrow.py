"""Using a caller's model without changing it: its device and its train/eval mode stay as they were.

Library functions (prediction, export, attention analysis) run a model in eval mode, possibly on another
device. ``eval_mode`` switches it for the duration of a call and restores its mode afterwards;
``on_device`` gives the model itself when it already lives on the device, otherwise a copy there, so the
caller's model (and whatever else holds its parameters, e.g. an optimiser) never moves.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["eval_mode", "model_device", "on_device"]


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); CPU for a model without tensors."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _same_device(a: torch.device, b: torch.device) -> bool:
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


def on_device(model: nn.Module, device: str | torch.device) -> nn.Module:
    """``model`` when it is on ``device`` (or has no tensors to move), else a copy of it on ``device``."""
    device = torch.device(device)
    if _same_device(model_device(model), device) or not any(True for _ in (*model.parameters(), *model.buffers())):
        return model
    return copy.deepcopy(model).to(device)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block; its previous train/eval mode comes back afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
