"""``madis-stereo app``: started on 127.0.0.1 as a real process, driven through its API client, and (where
Debian's chromium and chromium-driver are installed) through a real headless browser."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from tools_helpers import SRC, make_tiny_checkpoint, read_ply, stereo_images, write_png

gradio_client = pytest.importorskip("gradio_client")

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app(tmp_path_factory, pytestconfig):
    """The app in its own process, with the tiny checkpoint preselected (the bundled model when taking the
    README's screenshot); yields (url, tiny checkpoint)."""
    pytest.importorskip("gradio")
    root = tmp_path_factory.mktemp("app")
    ckpt = make_tiny_checkpoint(root / "tiny.safetensors")
    shown = "bundled" if pytestconfig.getoption("--app-screenshot") else str(ckpt)
    port = _free_port()
    log = open(root / "app.log", "w")  # noqa: SIM115 (closed below)
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "madis_stereo", "app", "--host", "127.0.0.1", "--port", str(port),
                             "--checkpoint", shown], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (root / "app.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the app did not answer within 180 s"
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        yield url, ckpt
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_api_client_gets_what_the_library_computes(app, tmp_path):
    import madis_stereo as ms
    from madis_stereo.app.visualize import colorize_disparity
    from madis_stereo.data.formats import read_image, read_kitti_disparity, read_pfm

    url, ckpt = app
    left, right = stereo_images(70, 150, shift=4)
    lpath, rpath = write_png(tmp_path / "l.png", left), write_png(tmp_path / "r.png", right)
    client = gradio_client.Client(url, verbose=False)
    color, sure, cloud, files, summary = client.predict(
        gradio_client.handle_file(str(lpath)), gradio_client.handle_file(str(rpath)), str(ckpt), 0.5, "fp32", 0.0,
        20.0, None, api_name="/predict")
    expected = ms.predict(ms.load_model(ckpt), left, right, overlap=0.5).disparity
    by_name = {Path(f).name: Path(f) for f in files}
    assert sorted(by_name) == ["disparity.pfm", "disparity.ply", "disparity_disp16.png"]
    np.testing.assert_allclose(read_pfm(by_name["disparity.pfm"]), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(read_kitti_disparity(by_name["disparity_disp16.png"]), expected, atol=1 / 256 + 1e-4)
    colored = read_image(color)
    assert colored.shape == (70, 150, 3)
    assert np.mean(np.abs(colored.astype(int) - colorize_disparity(expected, 0.0, 20.0).astype(int))) < 1.0
    assert read_image(sure).shape[:2] == (70, 150)
    assert read_ply(by_name["disparity.ply"])[0]["count"] > 0 and read_ply(Path(cloud))[0]["count"] > 0
    assert "150x70" in summary and "colour range 0..20 px" in summary

    with pytest.raises(Exception, match="not found"):
        client.predict(gradio_client.handle_file(str(lpath)), gradio_client.handle_file(str(rpath)),
                       str(tmp_path / "missing.safetensors"), 0.5, "fp32", 0.0, None, None, api_name="/predict")


def _browser_missing() -> str | None:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        return "Debian chromium + chromium-driver not installed (apt-get install -y chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium not installed"
    return None


@pytest.mark.browser
@pytest.mark.skipif(_browser_missing() is not None, reason=str(_browser_missing()))
def test_browser_loads_the_page_submits_the_example_and_sees_the_result(app, tmp_path, request):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, _ = app
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tempfile.mkdtemp(prefix="chromium_", dir=tmp_path)
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={profile}", "--window-size=1400,2000",
                "--enable-unsafe-swiftshader"):  # software WebGL for the 3-D view
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.get(url)
        wait = WebDriverWait(driver, 120)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#example"))
        assert driver.title == "madis-stereo"
        driver.find_element(By.CSS_SELECTOR, "#example").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#left img") and d.find_elements(By.CSS_SELECTOR,
                                                                                               "#right img"))
        assert not driver.find_elements(By.CSS_SELECTOR, "#disparity img")  # no result before submitting
        driver.find_element(By.CSS_SELECTOR, "#predict").click()
        width = WebDriverWait(driver, 300).until(lambda d: d.execute_script(
            "const i = document.querySelector('#disparity img');"
            "return i && i.complete && i.naturalWidth > 0 ? [i.naturalWidth, i.naturalHeight] : null;"))
        assert width == [741, 500]  # the Motorcycle pair's coloured disparity is on the page
        wait.until(lambda d: "741x500" in d.find_element(By.CSS_SELECTOR, "#summary").text)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#cloud canvas"))  # the 3-D view is there
        shot = request.config.getoption("--app-screenshot")
        if shot:
            time.sleep(5)  # let the 3-D view finish drawing for the picture
        driver.save_screenshot(str(tmp_path / "app.png"))
        if shot:
            shutil.copyfile(tmp_path / "app.png", shot)
    finally:
        driver.quit()


def test_a_raw_rig_with_its_two_ros_files_is_rectified_in_either_order(tmp_path):
    from rig_helpers import rig_calibration, rig_pair, write_ros_pair

    from madis_stereo.app.web import run_pair
    from madis_stereo.errors import InputError

    calib = rig_calibration(256, 128)
    pair = rig_pair(calib)
    left_yaml, right_yaml = write_ros_pair(calib, tmp_path)
    ckpt = str(make_tiny_checkpoint(tmp_path / "tiny.safetensors"))
    summaries = []
    for files in ([str(left_yaml), str(right_yaml)], [str(right_yaml), str(left_yaml)]):
        result = run_pair(pair.raw_left, pair.raw_right, ckpt, 0.5, "fp32", calibration=files,
                          out_dir=tmp_path / f"out{len(summaries)}")
        assert "raw pair rectified, depth in m" in result.summary and "vertical disparity after" in result.summary
        summaries.append(result.summary)
    assert "left.yaml + right.yaml" in summaries[0] and "right.yaml + left.yaml" in summaries[1]
    # the same rectification either way: the same vertical-disparity line
    assert summaries[0].splitlines()[-1] == summaries[1].splitlines()[-1]
    with pytest.raises(InputError, match="got 3 files"):
        run_pair(pair.raw_left, pair.raw_right, ckpt, calibration=[str(left_yaml), str(right_yaml), str(left_yaml)],
                 out_dir=tmp_path / "out3")
