"""Named checkpoints and downloads, against a real HTTP server on 127.0.0.1 (never any other address).

The registered official models are only checked for their URL form; downloads are exercised with small
fixture checkpoints served by a loopback server (Range support, a mode that drops the connection half-way,
a request log), reached through MADIS_STEREO_MIRROR for named models and directly for URLs.
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import json
import re
import socket
import threading
from pathlib import Path

import pytest
import torch
from tools_helpers import cli, write_pair

import madis_stereo as ms
from madis_stereo.errors import DownloadError
from madis_stereo.model import registry
from madis_stereo.model.checkpoint import to_croco_state_dict
from madis_stereo.utils.download import download_file

pytestmark = pytest.mark.usefixtures("one_thread")

ISSUE_NAMES = [
    "CroCo_V2_ViTBase_SmallDecoder", "CroCo_V2_ViTBase_BaseDecoder", "CroCo_V2_ViTLarge_BaseDecoder",
    "crocostereo", "crocostereo_subtrain", "crocostereo_eth3d", "crocostereo_finetune_kitti",
    "crocostereo_subtrain_vitb_smalldecoder", "crocostereo_subtrain_vitb_basedecoder",
]


# --------------------------------------------------------------------------------------------------
# the loopback server and fixture checkpoints
# --------------------------------------------------------------------------------------------------


class LoopbackServer:
    """http.server on 127.0.0.1 (random port) serving ``files`` with Range support.

    ``drop[path] = n``: the next response for ``path`` sends ``n`` bytes of the body and closes the connection.
    ``requests`` logs (path, Range header) of every GET.
    """

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.drop: dict[str, int] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def url(self, path: str) -> str:
        return f"{self.base}/{path}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()

    def _handler(self) -> type:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep the test output clean
                pass

            def do_GET(self) -> None:
                path = self.path.lstrip("/")
                server.requests.append((path, self.headers.get("Range")))
                data = server.files.get(path)
                if data is None:
                    self.send_error(404, "Not Found")
                    return
                etag = '"' + hashlib.sha1(data).hexdigest()[:16] + '"'
                match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                if_range = self.headers.get("If-Range")
                start = int(match[1]) if match and (if_range is None or if_range == etag) else 0
                if start >= len(data) > 0:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.end_headers()
                    return
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(data) - start))
                self.send_header("ETag", etag)
                self.send_header("Accept-Ranges", "bytes")
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                body = data[start:]
                cut = server.drop.pop(path, None)
                self.wfile.write(body if cut is None else body[:cut])
                self.wfile.flush()
                if cut is not None:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)

        return Handler


@pytest.fixture
def server():
    srv = LoopbackServer()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch, tmp_path):
    """Every connection goes to 127.0.0.1 (asserted), no proxy is used, and the cache is a fresh folder."""
    real = socket.create_connection

    def guarded(address, *args, **kwargs):
        assert address[0] == "127.0.0.1", f"a test tried to reach {address}"
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", guarded)
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY",
                registry.OFFLINE_ENV, registry.MIRROR_ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    monkeypatch.setenv(registry.HOME_ENV, str(tmp_path / "cache"))


def write_croco_stereo(path: Path, **changes) -> Path:
    """A CroCo-Stereo .pth (CroCo's key names, args Namespace) of the ``tiny`` preset with seeded weights."""
    torch.manual_seed(0)
    model = ms.StereoModel(ms.ModelConfig.preset("tiny", crop=(64, 128), **changes))
    c = model.config
    croco_args = {"enc_embed_dim": c.enc_embed_dim, "enc_depth": c.enc_depth, "enc_num_heads": c.enc_num_heads,
                  "dec_embed_dim": c.dec_embed_dim, "dec_depth": c.dec_depth, "dec_num_heads": c.dec_num_heads,
                  "pos_embed": "RoPE100"}
    args = argparse.Namespace(task="stereo", crop=list(c.crop), tile_conf_mode=c.conf_mode, croco_args=croco_args)
    torch.save({"model": to_croco_state_dict(model), "args": args, "epoch": 1}, path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("served")
    with torch.no_grad():
        return {
            "stereo": write_croco_stereo(folder / "tiny_stereo.pth"),
            "other_arch": write_croco_stereo(folder / "other.pth", enc_embed_dim=64, enc_num_heads=4),
            "ours": ms.save_model(ms.StereoModel(ms.ModelConfig.preset("tiny", crop=(64, 128))),
                                  folder / "tiny.safetensors"),
        }


TEST_ENTRY = registry.RegisteredModel("test_tiny", "StereoFlow_models/test_tiny.pth", "tiny", "stereo",
                                      "a tiny CroCo-Stereo file for the tests", "random weights", licence="test")


@pytest.fixture
def named(monkeypatch, server):
    """``test_tiny`` registered (served through MADIS_STEREO_MIRROR); returns a function to change the entry."""
    monkeypatch.setenv(registry.MIRROR_ENV, server.base + "/")

    def set_entry(**changes) -> registry.RegisteredModel:
        entry = registry.RegisteredModel(**{**TEST_ENTRY.__dict__, **changes})
        monkeypatch.setitem(registry.MODELS, entry.name, entry)
        return entry

    set_entry()
    return set_entry


def cache_listing() -> list[str]:
    """Files in the cache, lock files left out."""
    root = registry.cache_dir()
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and not p.name.endswith(".lock"))


def load(spec, **kwargs):
    """ms.load_model with the same seed each time: a CroCo-Stereo file has no mask token or reconstruction
    head, so those start random and would differ between two loads of the same file."""
    torch.manual_seed(0)
    return ms.load_model(spec, **kwargs)


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --------------------------------------------------------------------------------------------------
# the registry (never contacted)
# --------------------------------------------------------------------------------------------------


def test_registry_holds_the_official_models_with_their_urls(monkeypatch):
    assert set(ISSUE_NAMES) <= set(registry.MODELS)
    for name in ISSUE_NAMES:
        entry = registry.MODELS[name]
        sub = "StereoFlow_models/" if name.startswith("crocostereo") else ""
        assert entry.url() == f"https://download.europe.naverlabs.com/ComputerVision/CroCo/{sub}{name}.pth"
        assert entry.kind == ("stereo" if sub else "pretrain")
        assert "CC BY-NC-SA 4.0" in entry.licence and entry.data and entry.description
        expected_preset = ("vitb_smalldec" if "SmallDecoder" in name or "smalldecoder" in name else
                           "vitb_basedec" if "ViTBase" in name or "vitb" in name else "vitl_basedec")
        assert entry.preset == expected_preset, name
    monkeypatch.setenv(registry.MIRROR_ENV, "https://mirror.example.org/croco/")
    assert registry.MODELS["crocostereo"].url() == "https://mirror.example.org/croco/StereoFlow_models/crocostereo.pth"


@pytest.mark.parametrize("preset", ["vitb_smalldec", "vitb_basedec", "vitl_basedec"])
def test_architecture_check_expects_exactly_the_official_key_sets(croco_dir, preset):
    """The key names and shapes a download is checked against are those of CroCo's own models."""
    manifest = json.loads((croco_dir / "croco_key_manifest.json").read_text())[preset]
    for kind in ("stereo", "pretrain"):
        official = {k: tuple(v) for k, v in manifest[f"{kind}_state_dict"].items() if not k.endswith("pos_embed")}
        assert registry.expected_croco_shapes(preset, kind) == official


def test_cache_location_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv(registry.HOME_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert registry.cache_dir() == tmp_path / "xdg" / "madis-stereo"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert registry.cache_dir() == Path.home() / ".cache" / "madis-stereo"
    monkeypatch.setenv(registry.HOME_ENV, str(tmp_path / "home"))
    assert registry.cache_dir() == tmp_path / "home"


def test_unknown_names_get_a_suggestion():
    with pytest.raises(ms.CheckpointError, match="crocostero is neither a file nor a registered name; did you mean "
                       "crocostereo"):
        ms.load_model("crocostero")
    with pytest.raises(ms.CheckpointError, match="unknown model name 'crocostero'; did you mean crocostereo"):
        registry.fetch("crocostero")
    with pytest.raises(ms.CheckpointError, match="pass its name: crocostereo"):
        ms.load_model("crocostereo.pth")


# --------------------------------------------------------------------------------------------------
# downloads from the loopback server
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["stereo", "ours"])
def test_loading_by_url_gives_the_same_model_as_the_file_and_is_cached(server, files, kind):
    server.files["m/" + files[kind].name] = files[kind].read_bytes()
    url = server.url("m/" + files[kind].name)
    by_url, meta_url = load(url, return_metadata=True)
    by_file, meta_file = load(files[kind], return_metadata=True)
    assert by_url.config == by_file.config and same_weights(by_url, by_file) and meta_url == meta_file
    assert len(server.requests) == 1
    server.stop()  # the second load must not need the network
    again = load(url)
    assert same_weights(again, by_file)
    assert cache_listing() == [f"url/{hashlib.sha256(url.encode()).hexdigest()[:16]}/{files[kind].name}"]
    left, right = torch.randn(1, 3, 64, 128), torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        assert torch.equal(by_url(left, right).disparity, by_file(left, right).disparity)


def test_registered_name_downloads_once_then_works_offline(server, files, named, monkeypatch):
    server.files["StereoFlow_models/test_tiny.pth"] = files["stereo"].read_bytes()
    model = load("test_tiny")
    assert same_weights(model, load(files["stereo"]))
    assert cache_listing() == ["checkpoints/test_tiny.pth"] and len(server.requests) == 1
    monkeypatch.setenv(registry.OFFLINE_ENV, "1")
    assert same_weights(load("test_tiny"), model)  # cached: fine offline
    named(name="test_tiny_2", path="StereoFlow_models/test_tiny_2.pth")
    with pytest.raises(DownloadError) as err:
        ms.load_model("test_tiny_2")
    message = str(err.value)
    assert "test_tiny_2 is not in the cache" in message and "MADIS_STEREO_OFFLINE=1" in message
    assert str(registry.cache_dir() / "checkpoints" / "test_tiny_2.pth") in message and "\n" not in message
    assert len(server.requests) == 1  # offline never touched the network


def test_offline_url_without_cache_says_what_is_missing(server, monkeypatch):
    monkeypatch.setenv(registry.OFFLINE_ENV, "1")
    with pytest.raises(DownloadError, match=r"URL http://127\.0\.0\.1:\d+/x\.pth is not in the cache"):
        ms.load_model(server.url("x.pth"))
    assert server.requests == []


def test_dropped_connection_is_resumed_with_a_range_request(server, files, named, caplog):
    data = files["stereo"].read_bytes()
    server.files["StereoFlow_models/test_tiny.pth"] = data
    server.drop["StereoFlow_models/test_tiny.pth"] = len(data) // 2
    path = download_file(registry.MODELS["test_tiny"].url(), registry.cache_dir() / "t.pth", backoff=0)
    assert path.read_bytes() == data
    assert server.requests == [("StereoFlow_models/test_tiny.pth", None),
                               ("StereoFlow_models/test_tiny.pth", f"bytes={len(data) // 2}-")]
    assert "resuming" in caplog.text


def test_an_interrupted_download_resumes_on_the_next_run(server, files, named):
    data = files["stereo"].read_bytes()
    server.files["StereoFlow_models/test_tiny.pth"] = data
    server.drop["StereoFlow_models/test_tiny.pth"] = len(data) // 3
    with pytest.raises(DownloadError, match="run the command again to resume"):
        download_file(registry.MODELS["test_tiny"].url(), registry.cache_dir() / "checkpoints" / "test_tiny.pth",
                      retries=0, backoff=0)
    assert (registry.cache_dir() / "checkpoints" / "test_tiny.pth.part").stat().st_size == len(data) // 3
    assert not registry.is_cached("test_tiny")
    assert same_weights(load("test_tiny"), load(files["stereo"]))
    assert server.requests[-1] == ("StereoFlow_models/test_tiny.pth", f"bytes={len(data) // 3}-")
    assert cache_listing() == ["checkpoints/test_tiny.pth"]


def test_a_partial_download_of_a_file_that_changed_starts_over(server, files):
    """If-Range: the server sends the whole new file, which replaces the stale partial one (no mixed bytes)."""
    old, new = files["stereo"].read_bytes(), files["ours"].read_bytes()
    server.files["m.bin"] = old
    server.drop["m.bin"] = len(old) // 3
    dest = registry.cache_dir() / "m.bin"
    with pytest.raises(DownloadError, match="run the command again to resume"):
        download_file(server.url("m.bin"), dest, retries=0, backoff=0)
    server.files["m.bin"] = new
    assert download_file(server.url("m.bin"), dest, backoff=0).read_bytes() == new
    assert server.requests[-1] == ("m.bin", f"bytes={len(old) // 3}-")  # asked to resume, got the new file


@pytest.mark.parametrize("case", ["truncated", "truncated_known_size", "other_architecture", "not_a_checkpoint"])
def test_a_wrong_or_truncated_file_is_refused_and_not_cached(server, files, named, case):
    data = files["stereo"].read_bytes()
    served = {"truncated": data[: len(data) // 2], "truncated_known_size": data[: len(data) - 1000],
              "other_architecture": files["other_arch"].read_bytes(),
              "not_a_checkpoint": b"<html>Access denied</html>"}[case]
    if case == "truncated_known_size":
        named(size=len(data))
    server.files["StereoFlow_models/test_tiny.pth"] = served
    expected = {"truncated": "truncated or corrupt", "truncated_known_size": f"where {len(data)} were expected",
                "other_architecture": "not the test_tiny checkpoint .*enc_embed_dim 64 \\(expected 96\\)",
                "not_a_checkpoint": "not a checkpoint"}[case]
    with pytest.raises(DownloadError, match=f"refused, .*{expected}.*; the download was deleted"):
        ms.load_model("test_tiny")
    assert cache_listing() == []


def test_a_registered_checksum_is_checked(server, files, named):
    data = files["stereo"].read_bytes()
    server.files["StereoFlow_models/test_tiny.pth"] = data
    named(sha256="0" * 64)
    with pytest.raises(DownloadError, match="SHA-256 differs"):
        registry.fetch("test_tiny")
    assert cache_listing() == []
    named(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    assert registry.fetch("test_tiny").read_bytes() == data


def test_a_missing_file_gives_a_clear_404(server, named):
    with pytest.raises(DownloadError, match=r"^http://127\.0\.0\.1:\d+/StereoFlow_models/test_tiny\.pth: HTTP 404"):
        ms.load_model("test_tiny")
    result = cli("download", "test_tiny")
    assert result.returncode == 1
    assert re.search(r"error: test_tiny: .*HTTP 404 Not Found\n$", result.stderr)
    assert cache_listing() == []


def test_unreachable_host_is_one_line(tmp_path):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(DownloadError, match=f"cannot download http://127.0.0.1:{port}/m.pth: .*refused"):
        ms.load_model(f"http://127.0.0.1:{port}/m.pth")


# --------------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------------


def test_models_and_download_commands(server, files, named, tmp_path):
    server.files["StereoFlow_models/test_tiny.pth"] = files["stereo"].read_bytes()
    listing = cli("models")
    assert listing.returncode == 0
    lines = {line.split()[0]: line for line in listing.stdout.splitlines() if line.strip()}
    assert all(name in lines for name in ISSUE_NAMES)
    assert re.search(r"vitl_basedec \(437 M\)\s+~1\.8 GB\s+no\s+CroCo-Stereo main model", lines["crocostereo"])
    fetched = cli("download", "test_tiny")
    assert fetched.returncode == 0 and str(registry.cache_dir() / "checkpoints" / "test_tiny.pth") in fetched.stdout
    rows = {row["name"]: row for row in json.loads(cli("models", "--json").stdout)["models"]}
    assert rows["test_tiny"]["cached"] and not rows["crocostereo"]["cached"]
    left, right = write_pair(tmp_path / "pair")
    server.stop()  # predict uses the cached copy
    out = cli("predict", left, right, "-o", tmp_path / "out", "--checkpoint", "test_tiny", "--device", "cpu")
    assert out.returncode == 0, out.stderr
    assert len(list((tmp_path / "out").glob("*_color.png"))) == 1
