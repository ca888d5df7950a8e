"""Automatic precision: the probe's verdict, its per-machine cache, explicit choices and the CLI flags."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

import madis_stereo as ms
from madis_stereo.app.cli import common
from madis_stereo.inference import precision as P


class FakeProbe:
    """Returns fixed GFLOP/s figures and counts its calls (the real probe measures this machine).
    ``fp32_onednn``: fp32 through oneDNN (default: as fast as through the BLAS)."""

    def __init__(self, fp32: float, bf16: float, fp32_onednn: float | None = None) -> None:
        self.result = {"fp32": fp32, "bf16": bf16, "fp32_onednn": fp32 if fp32_onednn is None else fp32_onednn}
        self.calls = 0

    def __call__(self) -> dict[str, float]:
        self.calls += 1
        return dict(self.result)


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("MADIS_STEREO_HOME", str(tmp_path))
    monkeypatch.delenv(P.ENV_PRECISION, raising=False)
    return tmp_path


@pytest.mark.parametrize(("fp32", "bf16", "expected"), [
    (174.0, 400.0, "bf16"),   # AMD EPYC with AVX512-BF16: bf16 2.3x faster
    (330.0, 160.0, "fp32"),   # Intel Xeon without AMX: bf16 2x slower
    (200.0, 210.0, "fp32"),   # within the margin: the more accurate one
])
def test_auto_picks_the_faster_and_caches_it(home, fp32, bf16, expected):
    probe = FakeProbe(fp32, bf16)
    choice = P.resolve_precision("auto", "cpu", probe=probe, threads=2)
    assert choice.precision == expected and probe.calls == 1
    assert "measured" in choice.reason and f"{bf16:.0f}" in choice.reason
    cached = json.loads(P.cache_file().read_text())
    assert P.cache_file().parent == home
    assert cached[P.machine_key(2)]["bf16"] == bf16
    # the second resolution reads the cache instead of measuring
    again = P.resolve_precision("auto", "cpu", probe=probe, threads=2)
    assert again.precision == expected and probe.calls == 1 and "cached" in again.reason
    # another thread count is another machine configuration: measured anew
    P.resolve_precision("auto", "cpu", probe=probe, threads=1)
    assert probe.calls == 2 and len(json.loads(P.cache_file().read_text())) == 2


def test_damaged_cache_is_measured_again(home):
    P.cache_file().write_text("{not json")
    probe = FakeProbe(100.0, 300.0)
    assert P.resolve_precision("auto", "cpu", probe=probe).precision == "bf16" and probe.calls == 1
    assert json.loads(P.cache_file().read_text())  # rewritten whole


CPUINFO = """processor\t: 0
cpu family\t: {family}
model\t\t: {model}
model name\t: {name}
flags\t\t: fpu sse avx2 avx512f {flags}

processor\t: 1
model name\t: something else
"""


def test_cpu_model_tells_apart_cpus_that_a_vm_names_alike(tmp_path):
    zen4, zen5 = tmp_path / "zen4", tmp_path / "zen5"
    zen4.write_text(CPUINFO.format(name="AMD EPYC", family=25, model=17, flags="avx512_bf16"))
    zen5.write_text(CPUINFO.format(name="AMD EPYC", family=26, model=2, flags="avx512_bf16 avx_vnni"))
    assert P.cpu_model(zen4) == "AMD EPYC (family 25, model 17, avx512_bf16)"
    assert P.cpu_model(zen5) == "AMD EPYC (family 26, model 2, avx512_bf16)"
    xeon = tmp_path / "xeon"
    xeon.write_text(CPUINFO.format(name="Intel Xeon Processor", family=6, model=143,
                                   flags="amx_bf16 avx512_bf16 avx512_fp16"))
    assert P.cpu_model(xeon) == "Intel Xeon Processor (family 6, model 143, amx_bf16, avx512_bf16, avx512_fp16)"
    # no /proc/cpuinfo (macOS, Windows): the platform's own string, never an empty name
    assert P.cpu_model(tmp_path / "missing")


def test_explicit_choice_and_environment_win_over_the_probe(home, monkeypatch):
    probe = FakeProbe(100.0, 300.0)
    for name in ("fp32", "bf16", "fp16"):
        assert P.resolve_precision(name, "cpu", probe=probe) == P.PrecisionChoice(name, "requested")
    monkeypatch.setenv(P.ENV_PRECISION, "fp32")
    assert P.resolve_precision("auto", "cpu", probe=probe).precision == "fp32"
    assert probe.calls == 0 and not P.cache_file().exists()
    monkeypatch.setenv(P.ENV_PRECISION, "int4")
    with pytest.raises(ms.InputError, match="MADIS_STEREO_PRECISION"):
        P.resolve_precision("auto", "cpu", probe=probe)
    with pytest.raises(ms.InputError, match="precision must be one of"):
        P.resolve_precision("fp8", "cpu")


def test_predictor_resolves_auto_and_runs_in_it(home, monkeypatch, caplog):
    seen = []

    class DtypeModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(3, 1)

        def forward(self, left, right):
            out = self.lin(left.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            seen.append(out.dtype)
            return ms.StereoOutput(out, torch.zeros_like(out))

    monkeypatch.setattr(P, "probe_cpu", FakeProbe(100.0, 300.0))
    image = torch.zeros(32, 64, 3, dtype=torch.uint8).numpy()
    with caplog.at_level("INFO", logger="madis_stereo"):
        predictor = ms.Predictor(DtypeModel(), crop=(32, 64), device="cpu")
    assert predictor.precision == "bf16" and "auto" in predictor.precision_reason
    assert any("precision bf16" in r.getMessage() for r in caplog.records)
    predictor(image, image)
    assert seen == [torch.bfloat16]
    ms.Predictor(DtypeModel(), crop=(32, 64), device="cpu", precision="fp32")(image, image)
    assert seen[-1] == torch.float32


def test_real_probe_measures_both_precisions_and_both_fp32_kernels():
    result = P.probe_cpu(rows=64, dim=64, reps=2)
    assert set(result) == {"fp32", "fp32_onednn", "bf16"} and all(v > 0 for v in result.values())


def test_fp32_goes_through_onednn_only_where_it_was_measured_faster(home):
    from madis_stereo.model.packed import PackedLinears

    if not PackedLinears.supported("cpu", "fp32"):
        pytest.skip("torch without oneDNN")
    zen5 = FakeProbe(110.0, 470.0, fp32_onednn=240.0)  # an AMD EPYC (Zen 5): MKL's fp32 at half oneDNN's
    packs = P.cpu_linears("fp32", "cpu", probe=zen5)
    assert packs is not None and packs.dtype == torch.float32 and zen5.calls == 1
    # auto compares bf16 with the faster fp32 kernel
    assert "fp32 240" in P.resolve_precision("auto", "cpu", probe=zen5).reason
    P.cache_file().unlink()
    assert P.cpu_linears("fp32", "cpu", probe=FakeProbe(330.0, 160.0, fp32_onednn=320.0)) is None  # BLAS as fast
    packs = P.cpu_linears("bf16", "cpu", probe=FakeProbe(330.0, 160.0))
    if PackedLinears.supported("cpu", "bf16"):
        assert packs.dtype == torch.bfloat16
    else:  # a Zen 3's oneDNN has no bf16 kernels to pack for: autocast alone
        assert packs is None
    assert P.cpu_linears("fp16", "cpu") is None and P.cpu_linears("fp32", "meta") is None


def test_a_cache_from_before_the_onednn_probe_is_measured_again(home):
    P.cache_file().write_text(json.dumps({P.machine_key(2): {"fp32": 100.0, "bf16": 300.0, "date": "2026-11-30"}}))
    probe = FakeProbe(100.0, 300.0, fp32_onednn=250.0)
    assert P.resolve_precision("auto", "cpu", probe=probe, threads=2).precision == "bf16" and probe.calls == 1
    assert json.loads(P.cache_file().read_text())[P.machine_key(2)]["fp32_onednn"] == 250.0


def test_cli_precision_flags():
    parser = argparse.ArgumentParser()
    common.add_model_arguments(parser)
    assert common.precision_arg(parser.parse_args([])) == "auto"
    assert common.precision_arg(parser.parse_args(["--bf16"])) == "bf16"
    assert common.precision_arg(parser.parse_args(["--precision", "fp16"])) == "fp16"
    assert common.precision_arg(parser.parse_args(["--precision", "bf16", "--bf16"])) == "bf16"
    with pytest.raises(ValueError, match="--bf16 contradicts --precision fp32"):
        common.precision_arg(parser.parse_args(["--precision", "fp32", "--bf16"]))
