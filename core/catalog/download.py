"""Resumable, verified download of one file from the Hugging Face hub (or a mirror).

The URL comes from `huggingface_hub.hf_hub_url` with the endpoint read from `HF_ENDPOINT` at
call time (huggingface_hub reads it once, at import). The transfer itself is a small HTTP
Range client on the standard library, not `hf_hub_download`, because we need what that does
not give: a partial file that survives a restart in *our* downloads folder, a cancel flag
checked between chunks, progress with speed and ETA, and independence from `HF_HUB_OFFLINE`
(the app sets it so nothing else ever reaches the network; a download the user asked for must
still work).

Contract: `probe()` and `download_file()` block; call them from a worker thread, never the GUI
thread. They raise `UserError`s with one sentence (offline, not found, disk full, checksum
mismatch, interrupted) and `core.errors.Cancelled` when the CancelToken is set. A partial file
is kept after an interruption or a cancel (so it can resume); it is deleted when its checksum
is wrong. Nothing here touches the model list: the caller moves a verified file into place.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import ipaddress
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import Callable

from core.errors import Cancelled, NotFoundError, UserError
from core.fileio import atomic_write_json
from core.types import CancelToken

DEFAULT_ENDPOINT = "https://huggingface.co"
CONNECT_TIMEOUT_S = 5.0  # HEAD and connection set-up: offline must fail fast
READ_TIMEOUT_S = 30.0  # a stalled transfer counts as interrupted after this long
CHUNK_BYTES = 1 << 20
DISK_RESERVE_BYTES = 64 << 20  # keep this much free beyond the file itself
PROGRESS_INTERVAL_S = 0.1  # at most this often, plus one report at the start and one at the end
USER_AGENT = "memory-r1-desktop/0.1 (model manager)"
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class DownloadError(UserError):
    """The server could not be reached, refused the request, or the transfer broke off."""


class DownloadInterrupted(DownloadError):
    """The connection dropped part-way; the partial file is kept and the next call resumes."""


class InsufficientDiskSpaceError(UserError):
    """Not enough free space for the download; checked before any byte is fetched."""


class ChecksumMismatchError(UserError):
    """The bytes received are not the file the catalog pins; the partial file is deleted."""


@dataclass(frozen=True)
class RemoteFile:
    """What a HEAD on the resolve URL told us."""

    url: str
    size: int | None
    etag: str | None  # for LFS files the hub sends the file's sha256 (x-linked-etag)
    commit: str | None

    @property
    def sha256(self) -> str | None:
        """The server's sha256 of the file when its ETag is one (LFS files), else None."""
        return self.etag if self.etag and _SHA256_RE.match(self.etag) else None


@dataclass(frozen=True)
class Progress:
    """One progress report: bytes so far (including a resumed prefix), total, speed, ETA."""

    downloaded: int
    total: int | None
    speed_bps: float
    eta_s: float | None
    resumed_from: int = 0

    @property
    def fraction(self) -> float | None:
        return self.downloaded / self.total if self.total else None


ProgressCallback = Callable[[Progress], None]


def hub_endpoint(endpoint: str | None = None) -> str:
    """The hub to talk to: `endpoint`, else $HF_ENDPOINT, else huggingface.co (no trailing /)."""
    return (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def resolve_url(repo_id: str, filename: str, revision: str | None = None,
                endpoint: str | None = None) -> str:
    """`{endpoint}/{repo_id}/resolve/{revision}/{filename}` as huggingface_hub builds it."""
    from huggingface_hub import hf_hub_url

    return hf_hub_url(repo_id, filename, revision=revision or "main",
                      endpoint=hub_endpoint(endpoint))


# --- HTTP helpers ----------------------------------------------------------------------------
class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D401
        return None  # surface the 3xx so its x-linked-* headers can be read


def _host(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc or url


def _unreachable(url: str, exc: BaseException) -> DownloadError:
    reason = getattr(exc, "reason", exc)
    return DownloadError(
        f"Cannot reach {_host(url)} ({reason}): you seem to be offline, or HF_ENDPOINT points "
        f"to a server that is down. Nothing was downloaded.")


def _http_error(url: str, exc: urllib.error.HTTPError) -> UserError:
    if exc.code == 404:
        return NotFoundError(f"The file is not on the server ({_host(url)} answered 404 for {url}).")
    if exc.code in (401, 403):
        return DownloadError(
            f"{_host(url)} refused the download (HTTP {exc.code}): the model may need a login "
            "or accepting its licence on the hub first.")
    if exc.code == 416:
        return DownloadError(f"{_host(url)} refused to resume the download (HTTP 416).")
    return DownloadError(f"{_host(url)} answered HTTP {exc.code} ({exc.reason}); try again later.")


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _etag(value: str | None) -> str | None:
    if not value:
        return None
    return value.strip().removeprefix("W/").strip('"') or None


def _resolve_within(url: str, timeout: float) -> None:
    """Name lookup has no timeout in the socket API; bound it so a dead resolver cannot hang us."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    try:
        ipaddress.ip_address(host)
        return  # a literal address needs no lookup
    except ValueError:
        pass
    outcome: list[BaseException | None] = []

    def lookup() -> None:
        try:
            socket.getaddrinfo(host, parts.port or 443, type=socket.SOCK_STREAM)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            outcome.append(exc)

    worker = threading.Thread(target=lookup, name="dns-lookup", daemon=True)
    worker.start()
    worker.join(timeout)
    if not outcome:
        raise _unreachable(url, TimeoutError(f"looking up {host} took over {timeout:.0f} s"))
    if outcome[0] is not None:
        raise _unreachable(url, outcome[0])


def probe(url: str, *, timeout: float = CONNECT_TIMEOUT_S, max_hops: int = 5) -> RemoteFile:
    """HEAD the resolve URL without following the CDN redirect, as huggingface_hub does.

    Relative (same-host) redirects, such as a renamed repo, are followed. Raises DownloadError
    (offline, server error), NotFoundError (404). Blocks at most about `timeout` per hop.
    """
    _resolve_within(url, timeout)
    opener = urllib.request.build_opener(_NoRedirect)
    current = url
    for _ in range(max_hops):
        req = urllib.request.Request(current, method="HEAD", headers={
            "User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
        try:
            with opener.open(req, timeout=timeout) as resp:
                headers, status = resp.headers, resp.status
        except urllib.error.HTTPError as exc:
            if exc.code not in (301, 302, 303, 307, 308):
                raise _http_error(current, exc) from None
            headers, status = exc.headers, exc.code
        except (urllib.error.URLError, OSError, HTTPException) as exc:
            raise _unreachable(current, exc) from None
        linked_etag = headers.get("X-Linked-Etag")
        location = headers.get("Location")
        if status >= 300 and location and not linked_etag:
            target = urllib.parse.urljoin(current, location)
            if _host(target) == _host(current):
                current = target
                continue
        size = _int(headers.get("X-Linked-Size"))
        if size is None and status < 300:
            size = _int(headers.get("Content-Length"))
        return RemoteFile(url=current, size=size, etag=_etag(linked_etag or headers.get("ETag")),
                          commit=headers.get("X-Repo-Commit"))
    raise DownloadError(f"{_host(url)} redirected too many times.")


# --- partial files ---------------------------------------------------------------------------
def partial_paths(downloads_dir: Path, filename: str) -> tuple[Path, Path]:
    """The partial file and its sidecar (which says what the partial bytes belong to)."""
    return downloads_dir / f"{filename}.part", downloads_dir / f"{filename}.part.json"


def read_partial_meta(meta_path: Path) -> dict | None:
    try:
        data = json.loads(meta_path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def discard_partial(part: Path, meta: Path) -> None:
    for path in (part, meta):
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def _prepare_partial(part: Path, meta: Path, identity: dict) -> int:
    """Bytes already on disk for this exact file; a partial of another file is dropped."""
    old = read_partial_meta(meta)
    same = old is not None and all(old.get(k) == v for k, v in identity.items())
    if not same:
        discard_partial(part, meta)
    part.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(meta, identity)
    return part.stat().st_size if part.exists() else 0


def check_disk_space(folder: Path, needed: int, reserve: int = DISK_RESERVE_BYTES) -> None:
    """Raise InsufficientDiskSpaceError when `folder` cannot take `needed` more bytes."""
    from core.llm.gguf_info import human_size

    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if needed + reserve > free:
        raise InsufficientDiskSpaceError(
            f"Not enough disk space in {folder}: the download needs {human_size(needed)} more "
            f"but only {human_size(free)} is free. Free some space and try again.")


# --- the transfer ----------------------------------------------------------------------------
class _Meter:
    """Speed as a moving average; reports at most every `interval` seconds."""

    def __init__(self, callback: ProgressCallback | None, total: int | None, start: int) -> None:
        self.callback, self.total, self.start = callback, total, start
        self.interval = PROGRESS_INTERVAL_S
        self.t0 = self.t_last = time.monotonic()
        self.bytes_last = start
        self.speed = 0.0

    def update(self, downloaded: int, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.t_last < self.interval:
            return
        dt = max(now - self.t_last, 1e-6)
        inst = (downloaded - self.bytes_last) / dt
        self.speed = inst if self.speed == 0.0 else 0.7 * self.speed + 0.3 * inst
        self.t_last, self.bytes_last = now, downloaded
        if self.callback is None:
            return
        eta = None
        if self.total and self.speed > 0:
            eta = max(self.total - downloaded, 0) / self.speed
        self.callback(Progress(downloaded, self.total, self.speed, eta, self.start))


def _hash_prefix(part: Path, length: int) -> "hashlib._Hash":
    digest = hashlib.sha256()
    with open(part, "rb") as fh:
        remaining = length
        while remaining > 0:
            block = fh.read(min(CHUNK_BYTES, remaining))
            if not block:
                break
            digest.update(block)
            remaining -= len(block)
    return digest


def _open_range(url: str, offset: int, timeout: float):
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    req = urllib.request.Request(url, headers=headers)
    try:
        return urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        raise _http_error(url, exc) from None
    except (urllib.error.URLError, OSError, HTTPException) as exc:
        raise _unreachable(url, exc) from None


def _range_starts_at(resp, offset: int) -> bool:
    match = re.match(r"bytes (\d+)-", resp.headers.get("Content-Range", ""))
    return match is None or int(match.group(1)) == offset


def _transfer(url: str, part: Path, offset: int, meter: _Meter, cancel: CancelToken | None,
              timeout: float) -> tuple[int, "hashlib._Hash"]:
    """One GET from `offset`; returns (bytes on disk, running sha256). Raises on a drop."""
    resp = _open_range(url, offset, timeout)
    with resp:
        if offset and (resp.status != 206 or not _range_starts_at(resp, offset)):
            offset = 0  # the server ignored the Range header: start over
            if resp.status == 206:  # a range we did not ask for: retry from the start
                part.write_bytes(b"")
                raise ConnectionError("the server answered a different byte range")
        digest = _hash_prefix(part, offset) if offset else hashlib.sha256()
        done = offset
        with open(part, "r+b" if offset else "wb") as out:
            out.seek(offset)
            out.truncate()
            try:
                while True:
                    if cancel is not None and cancel.cancelled:
                        raise Cancelled("download cancelled")
                    block = resp.read(CHUNK_BYTES)
                    if not block:
                        break
                    out.write(block)
                    digest.update(block)
                    done += len(block)
                    meter.update(done)
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    raise UserError(f"The disk filled up while downloading to {part.parent}; "
                                    "free some space and run the download again to resume.") from None
                raise
    return done, digest


def download_file(url: str, part: Path, meta: Path, *, identity: dict, total: int | None,
                  expected_sha256: str | None = None, progress: ProgressCallback | None = None,
                  cancel: CancelToken | None = None, retries: int = 2,
                  read_timeout: float = READ_TIMEOUT_S) -> str:
    """Download `url` into `part`, resuming from whatever `part` holds; returns the sha256.

    `identity` (url, etag, size...) is written to `meta`; a partial whose meta differs is
    started over. The disk-space check must be done by the caller before this. On a dropped
    connection it resumes up to `retries` times, then raises DownloadInterrupted (partial
    kept). A wrong size or sha256 deletes the partial and raises ChecksumMismatchError.
    """
    offset = _prepare_partial(part, meta, identity)
    if total is not None and offset > total:
        discard_partial(part, meta)
        offset = _prepare_partial(part, meta, identity)
    meter = _Meter(progress, total, offset)
    meter.update(offset, final=True)  # an immediate report: 0 %, or how much is resumed
    attempt = 0
    while True:
        try:
            if total is not None and offset == total:
                done, digest = offset, _hash_prefix(part, offset)
            else:
                done, digest = _transfer(url, part, offset, meter, cancel, read_timeout)
            if total is not None and done < total:
                raise ConnectionError(f"the server closed the connection at {done} of {total} bytes")
            break
        except (OSError, HTTPException) as exc:  # a drop, a stall, a reset: resume
            if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError)):
                raise
            offset = part.stat().st_size if part.exists() else 0
            attempt += 1
            if attempt > retries:
                raise DownloadInterrupted(
                    f"The download from {_host(url)} was interrupted ({exc}) after {offset} bytes; "
                    "run it again to resume where it stopped.") from None
    meter.update(done, final=True)
    return _verify(part, meta, done, total, digest.hexdigest(), expected_sha256)


def _verify(part: Path, meta: Path, done: int, total: int | None, sha: str,
            expected: str | None) -> str:
    if total is not None and done != total:
        discard_partial(part, meta)
        raise ChecksumMismatchError(
            f"The server sent {done} bytes where {total} were expected; the file was deleted.")
    if expected is not None and sha != expected.lower():
        discard_partial(part, meta)
        raise ChecksumMismatchError(
            f"The downloaded file's sha256 ({sha[:12]}…) does not match the expected one "
            f"({expected[:12]}…); it was deleted and not added to your models.")
    return sha
