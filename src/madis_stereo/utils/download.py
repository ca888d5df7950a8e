"""HTTP(S) downloads into the cache: resumable (HTTP Range), verified, and atomic.

A download is written to ``<dest>.part`` (the server's validator for it in ``<dest>.part.json``) and
continues from where a dropped connection, or an earlier interrupted run, stopped. It becomes ``<dest>`` only
after the byte count, the expected size and checksum (when known) and the caller's ``check`` all passed; a
file that fails them is deleted, so the cache never holds a wrong or truncated file under its final name.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from madis_stereo.errors import CheckpointError, DownloadError, first_line
from madis_stereo.utils.files import atomic_write_bytes, publish, sha256_of

__all__ = ["download_file"]

log = logging.getLogger(__name__)

CHUNK = 1 << 20
USER_AGENT = "madis-stereo (+https://github.com/madis-stereo)"
# A connection that broke after the response started: worth resuming with a Range request.
_DROPPED = (http.client.HTTPException, ConnectionError, TimeoutError, ssl.SSLError)


def download_file(url: str, dest: str | Path, *, size: int | None = None, sha256: str | None = None,
                  check: Callable[[Path], Any] | None = None, progress: bool | None = None, retries: int = 5,
                  timeout: float = 60.0, backoff: float = 1.0) -> Path:
    """Download ``url`` to ``dest`` (resuming a ``.part`` left by an earlier attempt) and return ``dest``.

    ``size`` / ``sha256``: expected byte count / hex digest, checked when given. ``check(path)`` runs on the
    complete temporary file and raises CheckpointError to refuse it. ``progress``: a tqdm bar on stderr
    (None: only when stderr is a terminal). A connection that drops mid-transfer is resumed, up to
    ``retries`` times in a row without progress (waiting ``backoff`` x 1, 2, 4 ... s); after that the
    ``.part`` stays for the next run to resume. Raises DownloadError (one line) on HTTP errors and refused
    files; a refused file is deleted.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    with _exclusive(dest):
        if dest.is_file():  # another process finished it while we waited
            return dest
        _Transfer(url, part, timeout).run(progress, retries, backoff)
        _verify(url, dest, part, size, sha256, check)
        publish(part, dest)
        _state_file(part).unlink(missing_ok=True)
    return dest


class _Transfer:
    """Fills ``part`` with the body of ``url``, resuming with Range requests; ``total`` = announced size."""

    def __init__(self, url: str, part: Path, timeout: float) -> None:
        self.url, self.part, self.timeout = url, part, timeout
        self.validator = _validator(part, url)
        self.total: int | None = None

    def have(self) -> int:
        return self.part.stat().st_size if self.part.exists() else 0

    def run(self, progress: bool | None, retries: int, backoff: float) -> None:
        from tqdm import tqdm

        failures = 0
        with tqdm(desc=self.part.name[: -len(".part")], unit="B", unit_scale=True, unit_divisor=1024,
                  file=sys.stderr, disable=None if progress is None else not progress, dynamic_ncols=True,
                  leave=False) as bar:
            while True:
                offset = self.have()
                try:
                    self.fetch(offset, bar)
                    reason = "the connection closed early"
                except _DROPPED as err:
                    reason = first_line(err)
                have = self.have()
                if self.total is None and reason.startswith("the connection") or have == self.total:
                    return  # without a Content-Length, a normal end of the body is the end of the file
                if self.total is not None and have > self.total:
                    _discard(self.part)
                    raise DownloadError(f"{self.url}: received {have} bytes, the server announced {self.total}")
                failures = 1 if have > offset else failures + 1
                if failures > retries:
                    raise DownloadError(f"{self.url}: the connection kept dropping ({have} of {self.total} bytes; "
                                        f"{reason}); run the command again to resume")
                log.warning("%s: connection lost after %d of %s bytes (%s); resuming", self.url, have, self.total,
                            reason)
                time.sleep(backoff * 2 ** (failures - 1))

    def fetch(self, offset: int, bar: Any) -> None:
        """One GET (a Range request from ``offset`` when resuming), appended to ``part``."""
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            if self.validator:
                headers["If-Range"] = self.validator
        try:
            response = urllib.request.urlopen(urllib.request.Request(self.url, headers=headers), timeout=self.timeout)
        except urllib.error.HTTPError as err:
            if err.code == 416 and offset:  # the partial file is no prefix of the file any more: start over
                _discard(self.part)
                raise ConnectionError("the server refused the resume range; starting over") from None
            raise DownloadError(f"{self.url}: HTTP {err.code} {err.reason}") from None
        except urllib.error.URLError as err:
            raise DownloadError(f"cannot download {self.url}: {err.reason}") from None
        with response:
            if offset and response.status == 206 and _range_start(response) == offset:
                self.total, mode = _range_total(response), "ab"
            else:  # the whole file: a first request, a server without Range support, or a changed file
                offset, mode = 0, "wb"
                length = response.headers.get("Content-Length", "")
                self.total = int(length) if length.isdigit() else None
                self.validator = response.headers.get("ETag") or response.headers.get("Last-Modified")
                state = {"url": self.url, "validator": self.validator}
                atomic_write_bytes(_state_file(self.part), json.dumps(state).encode())
            bar.reset(total=self.total)
            bar.update(offset)
            with open(self.part, mode) as fh:
                for block in iter(lambda: response.read(CHUNK), b""):
                    fh.write(block)
                    bar.update(len(block))


def _range_start(response: Any) -> int | None:
    value = response.headers.get("Content-Range", "")  # "bytes START-END/TOTAL"
    with contextlib.suppress(ValueError, IndexError):
        return int(value.split()[1].split("-")[0])
    return None


def _range_total(response: Any) -> int | None:
    value = response.headers.get("Content-Range", "").rsplit("/", 1)[-1]
    return int(value) if value.isdigit() else None


def _verify(url: str, dest: Path, part: Path, size: int | None, sha256: str | None,
            check: Callable[[Path], Any] | None) -> None:
    """Refuse (and delete) a complete download whose size, checksum or content is not the expected one."""
    have = part.stat().st_size
    problem = None
    if size is not None and have != size:
        problem = f"{have} bytes where {size} were expected (truncated or a different file)"
    elif sha256 is not None and sha256_of(part) != sha256.lower():
        problem = "its SHA-256 differs from the registered checksum"
    if problem is None and check is not None:
        try:
            check(part)
        except CheckpointError as err:
            problem = first_line(err).replace(str(part), dest.name)
    if problem is not None:
        _discard(part)
        raise DownloadError(f"{url}: refused, {problem}; the download was deleted")
    log.info("downloaded %s (%.1f MB) to %s", url, have / 1e6, dest)


def _validator(part: Path, url: str) -> str | None:
    """The ETag / Last-Modified of the partial file's first response (None: start over if the URL changed)."""
    try:
        state = json.loads(_state_file(part).read_text())
    except (OSError, ValueError):
        state = {}
    if part.exists() and state.get("url") != url:
        _discard(part)
        return None
    return state.get("validator")


def _state_file(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def _discard(part: Path) -> None:
    part.unlink(missing_ok=True)
    _state_file(part).unlink(missing_ok=True)


@contextlib.contextmanager
def _exclusive(dest: Path) -> Iterator[None]:
    """One downloader per file at a time (two appending to one .part would corrupt it)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    with open(dest.with_name(f".{dest.name}.lock"), "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process downloading %s", dest.name)
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield
