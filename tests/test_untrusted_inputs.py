"""Property-based tests (Hypothesis) of every reader of untrusted bytes: PFM, KITTI PNG, calib.txt, our
safetensors header, YAML configs and key=value overrides.

Whatever the input, a reader returns a result or raises one of our errors (``MadisStereoError``): never
another exception, a hang, or an allocation larger than the input justifies. Example counts are bounded so
the module adds seconds to the default suite.
"""

from __future__ import annotations

import io
import json
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from toy_stereo import toy_config

import madis_stereo as ms
from madis_stereo.data.formats import read_calib, read_disparity, read_kitti_disparity, read_pfm
from madis_stereo.errors import MadisStereoError
from madis_stereo.model.checkpoint import FORMAT_KEY, read_metadata
from madis_stereo.training.config import TrainConfig, load_train_config
from madis_stereo.utils.config import apply_overrides

# Derandomized (the same examples every run, so the default suite is reproducible) and bounded.
COMMON = {"deadline": None, "database": None, "derandomize": True, "suppress_health_check": [HealthCheck.too_slow]}
FAST = settings(max_examples=40, **COMMON)
SLOW = settings(max_examples=25, **COMMON)


def written(data: bytes, suffix: str) -> Path:
    """``data`` in a fresh temporary file (Hypothesis runs many examples per test function)."""
    handle = tempfile.NamedTemporaryFile(suffix=suffix, delete=False)  # noqa: SIM115 (closed right here)
    with handle:
        handle.write(data)
    return Path(handle.name)


def result_or_our_error(read, data: bytes, suffix: str):
    path = written(data, suffix)
    try:
        return read(path)
    except MadisStereoError:
        return None
    finally:
        path.unlink()


# --- PFM ---------------------------------------------------------------------------------------------------
numbers = st.one_of(st.integers(-3, 5), st.integers(-(10**12), 10**12), st.sampled_from(["nan", "inf", "1e400"]))


@st.composite
def pfm_files(draw) -> bytes:
    kind = draw(st.sampled_from([b"Pf", b"PF", b"P5", b""]))
    width, height = draw(numbers), draw(numbers)
    scale = draw(st.sampled_from(["-1.0", "1.0", "0", "nan", "-inf", "x"]))
    sep = draw(st.sampled_from([b"\n", b" ", b"\r\n", b""]))
    header = kind + sep + f"{width} {height}".encode() + sep + scale.encode() + sep
    return header + draw(st.binary(max_size=64))


@FAST
@given(st.one_of(pfm_files(), st.binary(max_size=80)))
@example(b"Pf\n100000 100000\n-1.0\n" + b"\0" * 16)  # claims 40 GB of data
def test_pfm_reader(data):
    array = result_or_our_error(read_pfm, data, ".pfm")
    if array is not None:
        assert array.dtype == np.float32 and array.size * 4 <= len(data)


# --- KITTI disparity PNG --------------------------------------------------------------------------------------
def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def kitti_png(width: int, height: int, bit_depth: int = 16, color_type: int = 0, rows: bytes | None = None) -> bytes:
    """A PNG with a valid structure (and checksums) around any size claim and any pixel bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    if rows is None:
        rows = b"".join(b"\0" + bytes(2 * max(width, 0)) for _ in range(min(height, 4)))
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(rows))
            + png_chunk(b"IEND", b""))


VALID_PNG = kitti_png(5, 4, rows=b"".join(b"\0" + bytes(range(r, r + 10)) for r in range(4)))


@st.composite
def damaged_pngs(draw) -> bytes:
    how = draw(st.sampled_from(["claim", "flip", "cut"]))
    if how == "claim":  # any size, depth and colour type, with consistent checksums
        return kitti_png(draw(st.integers(0, 2**31 - 1)), draw(st.integers(0, 2**31 - 1)),
                         draw(st.sampled_from([1, 8, 16, 3])), draw(st.sampled_from([0, 2, 4, 6, 3, 7])),
                         draw(st.binary(max_size=40)))
    data = bytearray(VALID_PNG)
    if how == "cut":
        return bytes(data[: draw(st.integers(0, len(data)))])
    for _ in range(draw(st.integers(1, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


@FAST
@given(damaged_pngs())
@example(kitti_png(100_000, 100_000))  # 10^10 pixels claimed by a 100-byte file
def test_kitti_png_reader(data):
    disparity = result_or_our_error(read_kitti_disparity, data, ".png")
    if disparity is not None:
        assert disparity.dtype == np.float32 and disparity.ndim == 2
        assert disparity.size <= 10**8


def test_the_valid_png_reads():
    disparity = result_or_our_error(read_disparity, VALID_PNG, ".png")
    assert disparity is not None and disparity.shape == (4, 5)
    assert disparity[0, 0] == 0x0001 / 256 and disparity[0, 1] == 0x0203 / 256  # big-endian 16-bit values


# --- calib.txt ----------------------------------------------------------------------------------------------
KEYS = ["cam0", "cam1", "doffs", "baseline", "width", "height", "ndisp", "isint", "vmin", "vmax", "", "x y"]
values = st.one_of(st.text(max_size=30), numbers.map(str),
                   st.lists(st.lists(numbers.map(str), max_size=4), max_size=4).map(
                       lambda rows: "[" + "; ".join(" ".join(r) for r in rows) + "]"))


@FAST
@given(st.one_of(st.binary(max_size=120),
                 st.lists(st.tuples(st.sampled_from(KEYS), values), max_size=8).map(
                     lambda pairs: "\n".join(f"{k}={v}" for k, v in pairs).encode())))
@example(b"width=1e400\nheight=nan\ncam0=[1e309 0 1; 0 1 1; 0 0 1]")
def test_calib_reader(data):
    calib = result_or_our_error(read_calib, data, ".txt")
    if calib is not None:
        assert isinstance(calib, dict) and calib
        assert all(calib[k].shape == (3, 3) for k in ("cam0", "cam1") if k in calib)


# --- our safetensors header ------------------------------------------------------------------------------------
json_scalars = st.none() | st.booleans() | st.integers(-(10**12), 10**12) | st.floats() | st.text(max_size=8)
json_values = st.recursive(json_scalars,
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                       max_size=4),
                           max_leaves=12)
config_fields = st.fixed_dictionaries({}, optional={
    "enc_embed_dim": st.integers(-4, 10**9), "enc_depth": st.integers(-1, 10**9),
    "enc_num_heads": st.integers(-1, 64), "dec_depth": st.integers(-1, 10**9), "patch_size": st.integers(-1, 64),
    "crop": st.lists(st.integers(-64, 10**6), max_size=3), "laplace_b": st.floats(),
    "conf_mode": st.text(max_size=20), "dpt_hooks": st.lists(st.integers(-2, 40), max_size=5),
})


def safetensors_bytes(header_text: str | None) -> bytes:
    from safetensors.torch import save

    metadata = None if header_text is None else {FORMAT_KEY: header_text}
    return save({"enc_blocks.0.norm1.weight": torch.ones(4)}, metadata=metadata)


@st.composite
def checkpoint_files(draw) -> bytes:
    how = draw(st.sampled_from(["config", "json", "raw", "length"]))
    if how == "config":  # a well-formed header whose config claims anything
        config = draw(st.one_of(config_fields, json_values))
        return safetensors_bytes(json.dumps({"format_version": 1, "config": config,
                                             "metadata": draw(json_values)}))
    if how == "json":
        return safetensors_bytes(draw(st.one_of(st.text(max_size=40), json_values.map(json.dumps))))
    if how == "length":  # the 8-byte header length claims anything
        return struct.pack("<Q", draw(st.integers(0, 2**64 - 1))) + b"{" + draw(st.binary(max_size=40))
    return draw(st.binary(max_size=80))


@SLOW
@given(checkpoint_files())
@example(safetensors_bytes(json.dumps({"config": {"enc_depth": 10**9, "enc_embed_dim": 2**30}})))
@example(safetensors_bytes(json.dumps({"config": {"enc_depth": 1, "dec_depth": 1, "enc_embed_dim": 2**24,
                                                  "enc_num_heads": 4}})))
def test_checkpoint_reader(data):
    def read(path):
        header = read_metadata(path)
        assert isinstance(header["config"], dict) and isinstance(header["metadata"], dict)
        return ms.load_model(path)

    model = result_or_our_error(read, data, ".safetensors")
    assert model is None  # none of these files holds a complete model


# --- YAML configs and key=value overrides -------------------------------------------------------------------
SECTIONS = ["model", "data", "madis", "teacher", "optim", "run", "preset", "lr", "train"]
config_trees = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(SECTIONS) | st.text(max_size=6),
                                                                inner, max_size=4),
    max_leaves=15)

BILLION_LAUGHS = "\n".join(["a: &a [x, x, x, x, x, x, x, x, x, x]"]
                           + [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]"
                              for i in range(8)])


def train_config_or_our_error(load) -> TrainConfig | None:
    try:
        cfg = load()
    except MadisStereoError:
        return None
    assert isinstance(cfg, TrainConfig)
    return cfg


@FAST
@given(st.one_of(st.binary(max_size=120), st.text(max_size=120).map(str.encode),
                 config_trees.map(lambda tree: yaml.safe_dump(tree).encode())))
@example(BILLION_LAUGHS.encode())
@example(b"[" * 600)  # nesting deeper than the parser's recursion
def test_yaml_config_reader(data):
    path = written(data, ".yaml")
    try:
        train_config_or_our_error(lambda: load_train_config(path))
    finally:
        path.unlink()


override_keys = st.lists(st.sampled_from(SECTIONS + ["0", "9", "crop", "enc_depth", ""]) | st.text(max_size=5),
                         min_size=1, max_size=4).map(".".join)
overrides = st.lists(st.one_of(st.text(max_size=20),
                               st.tuples(override_keys, st.text(max_size=20)).map(lambda kv: f"{kv[0]}={kv[1]}")),
                     max_size=4)


@FAST
@given(overrides)
@example(["optim.lr=" + "[" * 600])
@example(["run.seed=" + BILLION_LAUGHS.replace("\n", ", ").replace(": ", ": ")])
@example(["data.train.0.root=x", "data.train.7=1", "model.crop.1=64"])
def test_key_value_overrides(items):
    cfg = train_config_or_our_error(lambda: TrainConfig.from_dict(apply_overrides(toy_config(), items)))
    if not items:
        assert cfg is not None


def test_the_readers_accept_valid_files(tmp_path):
    """The properties above are not vacuous: valid inputs give results."""
    from madis_stereo.data.formats import write_pfm

    write_pfm(tmp_path / "d.pfm", np.arange(6, dtype=np.float32).reshape(2, 3))
    assert read_pfm(tmp_path / "d.pfm").shape == (2, 3)
    (tmp_path / "calib.txt").write_text("cam0=[1 0 2; 0 1 3; 0 0 1]\nbaseline=100\nwidth=640\n")
    assert read_calib(tmp_path / "calib.txt")["width"] == 640
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(toy_config()))
    assert isinstance(load_train_config(tmp_path / "c.yaml", ["optim.lr=1e-4"]), TrainConfig)
    with pytest.raises(MadisStereoError, match="more than"):
        (tmp_path / "bomb.yaml").write_text(BILLION_LAUGHS)
        load_train_config(tmp_path / "bomb.yaml")
    buffer = io.BytesIO(safetensors_bytes(None))
    assert buffer.getvalue()[8:9] == b"{"
