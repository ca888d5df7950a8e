"""Shared test helpers: fixture paths, small deterministic models and inputs."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

# The CroCo reference fixtures (see tests/fixtures/croco/README.md) are copied into the repository so that
# a clean clone runs the parity tests; MADIS_FIXTURES may point at another copy (e.g. ../shared/fixtures).
FIXTURES = Path(os.environ.get("MADIS_FIXTURES", Path(__file__).parent / "fixtures"))

# precision="auto" (the default of Predictor and the CLI) would pick bf16 or fp32 depending on this machine's
# CPU; the suite runs in fp32 everywhere (CLI subprocesses inherit it). tests/test_precision.py covers auto.
os.environ["MADIS_STEREO_PRECISION"] = "fp32"
# The package's cache (downloads, the CPU probe behind precision and fp32 kernel choices) goes to a folder of
# this test session, not the user's ~/.cache (CLI subprocesses inherit it too).
os.environ["MADIS_STEREO_HOME"] = tempfile.mkdtemp(prefix="madis_stereo_tests_")
atexit.register(shutil.rmtree, os.environ["MADIS_STEREO_HOME"], ignore_errors=True)


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a whole module (``pytestmark = pytest.mark.usefixtures("one_thread")``);
    see ``tools_helpers.single_thread``."""
    from tools_helpers import single_thread

    with single_thread():
        yield


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def toy_folder(tmp_path_factory) -> dict:
    """A ``folder`` dataset spec of 16 toy pairs on disk (PNG images, PFM disparities with inf holes)."""
    from toy_stereo import write_toy_folder

    return write_toy_folder(tmp_path_factory.mktemp("toy_folder"), 16)


@pytest.fixture(scope="session")
def croco_dir() -> Path:
    path = FIXTURES / "croco"
    assert path.is_dir(), f"CroCo fixtures missing at {path}"
    return path


def pytest_addoption(parser):
    parser.addoption("--app-screenshot", default=None, metavar="PNG",
                     help="the browser test of the web app also saves its screenshot here (make app-screenshot)")
