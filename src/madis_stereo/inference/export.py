"""ONNX export at a fixed crop, an onnxruntime adapter usable by ``tiled_predict``, and timing helpers.

The exported graph has inputs ``left``, ``right`` ([1, 3, H, W] ImageNet-normalised float32) and outputs
``disparity``, ``confidence`` ([1, 1, H, W]; confidence is the raw logit, as ``StereoModel``). It is produced
by PyTorch's TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``), which needs nothing
beyond torch and onnx; the torch.export-based exporter (``exporter="dynamo"``) additionally needs the
``onnxscript`` package and opset 18 or later (with torch 2.11 and onnxscript 0.7 its conversion down to
opset 17 produces an invalid ``Split`` node). The model config (JSON) is stored in the ONNX metadata
(``madis_stereo_config``) so that :class:`OnnxStereoModel` knows the crop, tile confidence mode and certainty
scale; a file without it gets the defaults with a warning that names them.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from madis_stereo.errors import CheckpointError, InputError, first_line
from madis_stereo.model.borrow import eval_mode, on_device
from madis_stereo.model.config import ModelConfig
from madis_stereo.model.network import StereoOutput
from madis_stereo.utils.files import atomic_path

__all__ = [
    "ExportReport",
    "OnnxStereoModel",
    "export_onnx",
    "onnx_forward_seconds",
    "onnx_session",
]

log = logging.getLogger(__name__)

INPUT_NAMES = ("left", "right")
OUTPUT_NAMES = ("disparity", "confidence")
CONFIG_KEY = "madis_stereo_config"


class _TupleOutputs(nn.Module):
    """StereoModel with a tuple output (exporters need plain tensors)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, left: Tensor, right: Tensor) -> tuple[Tensor, Tensor]:
        out = self.model(left, right)
        return out.disparity, out.confidence


@dataclass
class ExportReport:
    """Where the model went and how closely onnxruntime reproduces PyTorch on one random pair."""

    path: Path
    crop: tuple[int, int]
    opset: int
    exporter: str
    max_abs_diff_disparity: float | None
    max_abs_diff_confidence: float | None
    seconds: float


def _require(module: str, what: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise InputError(f"{what} needs the '{module}' package (pip install 'madis-stereo[onnx]')") from None


def export_onnx(model: nn.Module, path: str | os.PathLike, crop: Sequence[int], opset: int | None = None,
                exporter: str = "torchscript", check: bool = True, seed: int = 0) -> ExportReport:
    """Export ``model`` at a fixed ``crop`` (H, W multiples of 32) to ``path`` (written atomically).

    ``opset`` defaults to 17 for the TorchScript exporter and 18 for the dynamo exporter.
    With ``check`` the file is run in onnxruntime on one random normalised pair and compared with PyTorch
    (max abs differences in the report).
    """
    if exporter not in ("torchscript", "dynamo"):
        raise InputError(f"exporter must be 'torchscript' or 'dynamo', got {exporter!r}")
    height, width = (int(c) for c in crop)
    if height <= 0 or width <= 0 or height % 32 or width % 32:
        raise InputError(f"export crop {height}x{width} must be positive multiples of 32")
    if opset is None:
        opset = 18 if exporter == "dynamo" else 17
    if exporter == "dynamo" and opset < 18:
        raise InputError(f"the dynamo ONNX exporter needs opset 18 or later, got {opset}")
    onnx = _require("onnx", "ONNX export")
    if exporter == "dynamo":
        _require("onnxscript", "the dynamo ONNX exporter")
    start = time.perf_counter()
    model = on_device(model, "cpu")  # the caller's model stays where it is, and in its train/eval mode
    with eval_mode(model):
        return _export(model, onnx, path, height, width, opset, exporter, check, seed, start)


def _export(model: nn.Module, onnx: Any, path: str | os.PathLike, height: int, width: int, opset: int,
            exporter: str, check: bool, seed: int, start: float) -> ExportReport:
    wrapper = _TupleOutputs(model)
    gen = torch.Generator().manual_seed(seed)
    left = torch.randn(1, 3, height, width, generator=gen)
    right = torch.randn(1, 3, height, width, generator=gen)
    path = Path(path)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation warnings of the TorchScript exporter
        torch.onnx.export(wrapper, (left, right), str(tmp), input_names=list(INPUT_NAMES),
                          output_names=list(OUTPUT_NAMES), opset_version=opset, dynamo=exporter == "dynamo",
                          do_constant_folding=True)
        proto = onnx.load(str(tmp))
        config = getattr(model, "config", None)
        if config is not None:
            entry = proto.metadata_props.add()
            entry.key, entry.value = CONFIG_KEY, json.dumps(config.to_dict())
        proto.producer_name = "madis-stereo"
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
    diff_d = diff_c = None
    if check:
        session = onnx_session(path)
        disp, conf = session.run(list(OUTPUT_NAMES), {"left": left.numpy(), "right": right.numpy()})
        with torch.inference_mode():
            ref_d, ref_c = wrapper(left, right)
        diff_d = float(np.abs(disp - ref_d.numpy()).max())
        diff_c = float(np.abs(conf - ref_c.numpy()).max())
        log.debug("onnxruntime vs PyTorch: max abs diff disparity %.3g, confidence %.3g", diff_d, diff_c)
    return ExportReport(path, (height, width), opset, exporter, diff_d, diff_c, time.perf_counter() - start)


def onnx_session(path: str | os.PathLike, threads: int | None = None, providers: Sequence[Any] | None = None) -> Any:
    """An onnxruntime InferenceSession (CPU provider unless ``providers`` says otherwise).

    ``threads`` sets the intra-op thread count (None = onnxruntime's default).
    """
    ort = _require("onnxruntime", "ONNX inference")
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"ONNX model not found: {path}")
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = int(threads)
    providers = list(providers or ["CPUExecutionProvider"])
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as err:  # onnxruntime raises its own exception types
        text = first_line(err)
        raise CheckpointError(f"{path}: not a usable ONNX model ({text[:200]})") from None
    names = [p[0] if isinstance(p, tuple) else p for p in providers]
    missing = [name for name in names if name not in session.get_providers()]
    if missing:  # onnxruntime falls back to the CPU silently when a provider fails to load
        raise InputError(f"{path}: onnxruntime could not start {', '.join(missing)} (it runs on "
                         f"{', '.join(session.get_providers())})")
    return session


def onnx_providers(device: str | None) -> list[Any]:
    """onnxruntime providers for ``--device``: the CPU for None/cpu, the CUDA provider for cuda[:N].

    InputError when this onnxruntime lacks the provider (``onnxruntime`` is CPU-only; ``onnxruntime-gpu``
    has CUDA), so that ``--device cuda`` never runs on the CPU without a word.
    """
    if device is None or device == "cpu":
        return ["CPUExecutionProvider"]
    if device.split(":")[0] != "cuda":
        raise InputError(f"--onnx runs on onnxruntime, which has no {device!r} device here; use --device cpu or cuda")
    ort = _require("onnxruntime", "ONNX inference")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise InputError(f"--onnx with --device {device}: this onnxruntime has no CUDA provider (available: "
                         f"{', '.join(ort.get_available_providers())}); install onnxruntime-gpu or use --device cpu")
    index = device.split(":")[1] if ":" in device else "0"
    return [("CUDAExecutionProvider", {"device_id": int(index)})]


def _session_crop(session: Any) -> tuple[int, int]:
    shape = session.get_inputs()[0].shape
    if len(shape) != 4 or not all(isinstance(s, int) for s in shape[2:]):
        raise CheckpointError(f"ONNX input has shape {shape}; expected a fixed [1, 3, H, W]")
    return int(shape[2]), int(shape[3])


def onnx_forward_seconds(session: Any, warmup: int = 1, repeats: int = 3, seed: int = 0) -> float:
    """Median wall time (seconds) of one forward of ``session`` on a random pair at its fixed input size."""
    height, width = _session_crop(session)
    rng = np.random.default_rng(seed)
    feeds = {name: rng.standard_normal((1, 3, height, width), dtype=np.float32) for name in INPUT_NAMES}
    for _ in range(max(0, warmup)):
        session.run(None, feeds)
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _onnx_config(path: Path, session: Any) -> ModelConfig:
    """The model config stored by :func:`export_onnx`; without one, the defaults, with a warning naming them.

    Unreadable stored config is an error (the file is ours but damaged).
    """
    meta = session.get_modelmeta().custom_metadata_map
    if CONFIG_KEY not in meta:
        default = ModelConfig()
        message = (f"{path}: no madis-stereo metadata ('{CONFIG_KEY}'; not exported by madis-stereo export?): "
                   f"assuming tile blending conf_mode={default.conf_mode}, certainty scale "
                   f"laplace_b={default.laplace_b} and the training crop = the ONNX input size")
        warnings.warn(message, UserWarning, stacklevel=3)
        log.warning("%s", message)
        return default
    try:
        return ModelConfig.from_dict(json.loads(meta[CONFIG_KEY]))
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{path}: unreadable model config in the ONNX metadata ({first_line(err)[:200]})") \
            from None


class OnnxStereoModel(nn.Module):
    """An exported ONNX model behind StereoModel's call signature: ``model(left, right) -> StereoOutput``.

    Inputs must have the exported size (``crop``); a batch is run one pair at a time. ``config`` is the
    exported model's config (with ``crop`` set to the ONNX input size), so :class:`~madis_stereo.Predictor`
    and ``tiled_predict`` use it unchanged. Runs through onnxruntime (``providers``: CPU by default).
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None,
                 providers: Sequence[Any] | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        self.session = onnx_session(path, threads, providers)
        self.crop = _session_crop(self.session)
        self.config = _onnx_config(self.path, self.session).replace(crop=self.crop)

    def forward(self, left: Tensor, right: Tensor) -> StereoOutput:
        if tuple(left.shape[-2:]) != self.crop or left.shape != right.shape or left.dim() != 4:
            raise InputError(f"the ONNX model takes [B, 3, {self.crop[0]}, {self.crop[1]}] pairs, got "
                             f"{list(left.shape)} and {list(right.shape)}")
        disps, confs = [], []
        for i in range(left.shape[0]):
            feeds = {"left": left[i : i + 1].detach().float().cpu().numpy(),
                     "right": right[i : i + 1].detach().float().cpu().numpy()}
            d, c = self.session.run(list(OUTPUT_NAMES), feeds)
            disps.append(torch.from_numpy(d))
            confs.append(torch.from_numpy(c))
        return StereoOutput(torch.cat(disps).to(left.device), torch.cat(confs).to(left.device))
