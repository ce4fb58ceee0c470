"""Downloads against a loopback HTTP server that plays the Hugging Face hub (HF_ENDPOINT).

The server answers `/{repo}/resolve/{rev}/{file}` like the hub does for an LFS file (HEAD and
GET: a 302 to a content URL with X-Repo-Commit, X-Linked-Etag = sha256, X-Linked-Size) and
serves the bytes with Range support; switches make it drop the connection half-way, ignore
Range, or behave like a plain (non-LFS) file. The GGUF it serves is written by the test with
core.fakes.write_gguf. Nothing leaves 127.0.0.1 (the autouse guard in conftest enforces it).
"""

from __future__ import annotations

import hashlib
import http.server
import json
import socket
import threading
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest

from core import fakes
from core.errors import Cancelled, ModelLoadError, NotFoundError
from core.catalog import download as dl
from core.catalog.catalog import CatalogEntry, load_catalog
from core.catalog.store import ModelStore
from core.types import CancelToken

REPO, REV, FILE = "tester/Tiny-GGUF", "0123456789abcdef0123456789abcdef01234567", "tiny-Q8_0.gguf"


def write_tiny_gguf(path: Path, n_floats: int = 300_000) -> Path:
    """A real, loadable-by-header GGUF of about 1.2 MB: llama metadata and two tensors."""
    import gguf

    return fakes.write_gguf(path, {"token_embd.weight": np.arange(n_floats, dtype=np.float32),
                                   "output_norm.weight": np.ones(64, dtype=np.float32)},
                            name="Tiny Test", context_length=2048, block_count=2, embedding_length=64,
                            head_count=4, head_count_kv=2, file_type=gguf.LlamaFileType.ALL_F32,
                            chat_template="{% for m in messages %}<|im_start|>{{ m.content }}{% endfor %}")


class HubHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep test output quiet
        pass

    def _file(self):
        hub = self.server.hub
        prefix = f"/{REPO}/resolve/"
        if self.path.startswith(prefix):
            rev, _, name = self.path[len(prefix):].partition("/")
            return ("resolve", name) if name in hub.files and rev == REV else (None, None)
        if self.path.startswith("/cdn/"):
            sha = self.path[len("/cdn/"):]
            for name, data in hub.files.items():
                if hashlib.sha256(data).hexdigest() == sha:
                    return "cdn", name
        return None, None

    def do_HEAD(self):
        self._handle(head=True)

    def do_GET(self):
        self._handle(head=False)

    def _handle(self, head: bool):
        hub = self.server.hub
        hub.requests.append((self.command, self.path, self.headers.get("Range")))
        kind, name = self._file()
        if kind is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = hub.files[name]
        sha = hashlib.sha256(data).hexdigest()
        if kind == "resolve" and hub.lfs:
            self.send_response(302)
            self.send_header("Location", f"/cdn/{sha}")
            self.send_header("X-Repo-Commit", REV)
            self.send_header("X-Linked-Etag", f'"{hub.advertised_sha or sha}"')
            self.send_header("X-Linked-Size", str(len(data)))
            self.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._send_bytes(data, head)

    def _send_bytes(self, data: bytes, head: bool):
        hub = self.server.hub
        start = 0
        rng = self.headers.get("Range")
        if rng and not hub.ignore_range:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
        if not hub.lfs:
            self.send_header("X-Repo-Commit", REV)
        self.end_headers()
        if head:
            return
        body = data[start:]
        if hub.drop_after is not None and self.command == "GET":
            cut, hub.drop_after = hub.drop_after, None
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)


class Hub:
    """The loopback hub: start()/stop(), `files`, switches and a request log."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple] = []
        self.lfs = True
        self.ignore_range = False
        self.drop_after: int | None = None
        self.advertised_sha: str | None = None
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HubHandler)
        self.server.daemon_threads = True
        self.server.hub = self
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def gets(self) -> list[tuple]:
        return [r for r in self.requests if r[0] == "GET"]


@pytest.fixture
def hub(monkeypatch):
    server = Hub()
    server.thread.start()
    monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture
def tiny(tmp_path) -> bytes:
    src = tmp_path / "src"
    src.mkdir()
    return write_tiny_gguf(src / FILE).read_bytes()


def entry_for(data: bytes | None, sha256: str | None = "auto", **kw) -> CatalogEntry:
    sha = hashlib.sha256(data).hexdigest() if sha256 == "auto" and data else sha256
    return CatalogEntry(id="tiny-q8_0", name="Tiny", filename=FILE, repo_id=REPO, revision=REV,
                        sha256=sha, verified=sha is not None, quantization="F32",
                        context_length=2048, **kw)


def make_store(data_home, entry) -> ModelStore:
    embedded = [e for e in load_catalog() if e.embedded]
    return ModelStore(data_home, catalog=embedded + [entry])


def listed(store: ModelStore) -> set[str]:
    return {Path(r.path).name for r in store.list_models()}


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(dl, "CHUNK_BYTES", 64 * 1024)
    monkeypatch.setattr(dl, "PROGRESS_INTERVAL_S", 0.0)


# --- the tests -------------------------------------------------------------------------------
def test_download_reports_progress_verifies_and_lists(hub, tiny, data_home, small_chunks):
    hub.files[FILE] = tiny
    store = make_store(data_home, entry_for(tiny))
    reports = []
    record = store.download("tiny-q8_0", progress=reports.append)
    assert record.verified and record.sha256 == hashlib.sha256(tiny).hexdigest()
    assert Path(record.path).read_bytes() == tiny
    assert Path(record.path).parent == data_home / "models"
    assert record.architecture == "llama" and record.context_length == 2048
    assert record.chat_template == "chatml" and record.revision == REV
    assert FILE in listed(store)
    assert reports[-1].downloaded == reports[-1].total == len(tiny)
    assert all(r.total == len(tiny) for r in reports) and len(reports) >= len(tiny) // 65536
    assert reports[0].downloaded == 0
    assert [r.downloaded for r in reports] == sorted(r.downloaded for r in reports)
    assert reports[-1].speed_bps > 0 and reports[-1].eta_s == 0
    assert not list((data_home / "downloads").glob("*.part*"))
    # the HEAD was answered with a redirect carrying the LFS headers; the GET followed it
    assert hub.requests[0][0] == "HEAD" and any(p.startswith("/cdn/") for _, p, _ in hub.gets())
    # a second download of an installed model is a no-op
    n = len(hub.requests)
    assert store.download("tiny-q8_0").id == record.id and len(hub.requests) == n


def test_interrupted_download_resumes_with_range(hub, tiny, data_home, small_chunks):
    hub.files[FILE] = tiny
    hub.drop_after = len(tiny) // 2
    store = make_store(data_home, entry_for(tiny))
    with pytest.raises(dl.DownloadInterrupted, match="run it again to resume"):
        store.download("tiny-q8_0", retries=0)
    part = data_home / "downloads" / f"{FILE}.part"
    assert 0 < part.stat().st_size < len(tiny)
    assert FILE not in listed(store)
    [pending] = store.pending_downloads()
    assert pending.catalog_id == "tiny-q8_0" and pending.total == len(tiny)
    kept = part.stat().st_size

    # "after a restart": a fresh store object resumes from the partial file with a Range GET
    reports = []
    record = make_store(data_home, entry_for(tiny)).download("tiny-q8_0", progress=reports.append)
    assert Path(record.path).read_bytes() == tiny and record.verified
    assert hub.gets()[-1][2] == f"bytes={kept}-"
    assert reports[0].resumed_from == kept


def test_dropped_connection_is_retried_within_one_call(hub, tiny, data_home):
    hub.files[FILE] = tiny
    hub.drop_after = 1000
    record = make_store(data_home, entry_for(tiny)).download("tiny-q8_0", retries=1)
    assert Path(record.path).read_bytes() == tiny
    assert hub.gets()[-1][2] == "bytes=1000-"


def test_server_ignoring_range_restarts_cleanly(hub, tiny, data_home):
    hub.files[FILE] = tiny
    hub.drop_after = 5000
    store = make_store(data_home, entry_for(tiny))
    with pytest.raises(dl.DownloadInterrupted):
        store.download("tiny-q8_0", retries=0)
    hub.ignore_range = True
    record = store.download("tiny-q8_0")
    assert Path(record.path).read_bytes() == tiny
    assert hub.gets()[-1][2] == "bytes=5000-"  # asked to resume, got the whole file


def test_wrong_hash_after_download_is_rejected_and_not_listed(hub, tiny, data_home):
    hub.files[FILE] = tiny
    hub.lfs = False  # a plain file: no sha256 from the server, so the bytes must be checked
    store = make_store(data_home, entry_for(tiny, sha256="ab" * 32))
    with pytest.raises(dl.ChecksumMismatchError, match="does not match"):
        store.download("tiny-q8_0")
    assert hub.gets(), "the file was downloaded before the check"
    assert FILE not in listed(store)
    assert not list((data_home / "downloads").glob("*")) and not (data_home / "models" / FILE).exists()


def test_wrong_hash_announced_by_server_fails_before_downloading(hub, tiny, data_home):
    hub.files[FILE] = tiny
    store = make_store(data_home, entry_for(tiny, sha256="cd" * 32))
    with pytest.raises(dl.ChecksumMismatchError, match="nothing was downloaded"):
        store.download("tiny-q8_0")
    assert hub.gets() == [] and FILE not in listed(store)


def test_corrupt_bytes_with_matching_server_hash_are_caught(hub, tiny, data_home):
    """The server lies about the sha256 (catalog has none): the received bytes decide."""
    hub.files[FILE] = tiny
    hub.advertised_sha = "ef" * 32
    store = make_store(data_home, entry_for(tiny, sha256=None))
    with pytest.raises(dl.ChecksumMismatchError):
        store.download("tiny-q8_0")
    assert FILE not in listed(store)


def test_unverified_entry_is_checked_against_the_servers_sha(hub, tiny, data_home):
    hub.files[FILE] = tiny
    record = make_store(data_home, entry_for(tiny, sha256=None)).download("tiny-q8_0")
    assert record.sha256 == hashlib.sha256(tiny).hexdigest() and not record.verified


def test_disk_full_is_reported_before_any_byte(hub, tiny, data_home, monkeypatch):
    hub.files[FILE] = tiny
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(dl.shutil, "disk_usage", lambda p: usage(10_000, 9_000, 1_000))
    store = make_store(data_home, entry_for(tiny))
    with pytest.raises(dl.InsufficientDiskSpaceError, match="Not enough disk space"):
        store.download("tiny-q8_0")
    assert hub.gets() == []
    assert not list((data_home / "downloads").glob("*.part"))
    assert FILE not in listed(store)


def test_no_network_is_a_clear_error(data_home, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    store = make_store(data_home, entry_for(b"x"))
    with pytest.raises(dl.DownloadError, match="Cannot reach 127.0.0.1.*offline"):
        store.download("tiny-q8_0")
    assert not (data_home / "downloads").exists() or not list((data_home / "downloads").iterdir())


def test_silent_server_times_out_instead_of_hanging():
    with socket.socket() as s:  # listens (so connect succeeds) but never answers
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        url = f"http://127.0.0.1:{s.getsockname()[1]}/{REPO}/resolve/main/{FILE}"
        with pytest.raises(dl.DownloadError, match="Cannot reach"):
            dl.probe(url, timeout=0.5)


def test_missing_file_is_not_found(hub, data_home):
    store = make_store(data_home, entry_for(b"x"))
    with pytest.raises(NotFoundError, match="404"):
        store.download("tiny-q8_0")


def test_cancel_pauses_and_discard_removes_the_partial(hub, tiny, data_home, small_chunks):
    hub.files[FILE] = tiny
    store = make_store(data_home, entry_for(tiny))
    token = CancelToken()

    def progress(p):
        if p.downloaded >= len(tiny) // 3:
            token.cancel()

    with pytest.raises(Cancelled):
        store.download("tiny-q8_0", progress=progress, cancel=token)
    assert FILE not in listed(store)
    assert store.pending_downloads()[0].downloaded > 0
    assert store.discard_download("tiny-q8_0") is True
    assert store.pending_downloads() == [] and FILE not in listed(store)


def test_a_non_gguf_download_is_rejected(hub, data_home):
    junk = b"<html>not a model</html>" * 100
    hub.files[FILE] = junk
    store = make_store(data_home, entry_for(junk))
    with pytest.raises(ModelLoadError, match="not a usable GGUF"):
        store.download("tiny-q8_0")
    assert FILE not in listed(store) and not list((data_home / "downloads").glob("*"))


def test_partial_of_another_revision_is_not_reused(hub, tiny, data_home):
    hub.files[FILE] = tiny
    part, meta = dl.partial_paths(data_home / "downloads", FILE)
    part.parent.mkdir(parents=True)
    part.write_bytes(b"stale bytes from an older upload")
    meta.write_text(json.dumps({"catalog_id": "tiny-q8_0", "etag": "old", "size": 99}))
    record = make_store(data_home, entry_for(tiny)).download("tiny-q8_0")
    assert Path(record.path).read_bytes() == tiny
    assert all(r[2] is None for r in hub.gets())


def test_cli_download_json(hub, tiny, data_home, capsys, monkeypatch):
    import core.catalog.catalog as cat
    from app.cli import main

    hub.files[FILE] = tiny
    catalog = {"models": [e.to_dict() for e in make_store(data_home, entry_for(tiny)).catalog]}
    path = data_home / "catalog.json"
    path.write_text(json.dumps(catalog))
    monkeypatch.setattr(cat, "catalog_path", lambda: path)
    assert main(["models", "download", "tiny-q8_0", "--json", "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["id"] == "tiny-q8_0" and out["verified"] and out["available"]
    assert main(["models", "list", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert "tiny-q8_0" in {m["id"] for m in listing["installed"]}
    assert "tiny-q8_0" not in {m["id"] for m in listing["catalog"]}
    assert main(["models", "remove", "tiny-q8_0", "--yes"]) == 0
    assert not (data_home / "models" / FILE).exists()


def test_a_hanging_name_lookup_is_bounded(monkeypatch):
    """A resolver that never answers (no network, broken DNS) becomes a clear error."""
    import time as _time

    def slow_lookup(host, *a, **k):
        _time.sleep(5)
        raise OSError("unreachable")

    monkeypatch.setattr(dl.socket, "getaddrinfo", slow_lookup)
    with pytest.raises(dl.DownloadError, match="Cannot reach .*took over"):
        dl.probe("http://hub.invalid/x/y/resolve/main/f.gguf", timeout=0.2)


def test_a_failing_name_lookup_is_a_clear_error(monkeypatch):
    def no_dns(host, *a, **k):
        raise socket.gaierror(-3, "Temporary failure in name resolution")

    monkeypatch.setattr(dl.socket, "getaddrinfo", no_dns)
    with pytest.raises(dl.DownloadError, match="name resolution.*offline"):
        dl.probe("https://huggingface.co/a/b/resolve/main/f.gguf")


def hub_page(hub, tiny, data_home, qtbot):
    """A Models page whose catalog lists the hub's tiny model (waits for the listing)."""
    from app.gui.models_page import ModelsPage
    from core.config import Settings

    hub.files[FILE] = tiny
    page = ModelsPage(make_store(data_home, entry_for(tiny)), Settings())
    qtbot.addWidget(page)
    qtbot.waitUntil(lambda: page.catalog.rowCount() == 1, timeout=10_000)
    return page


def stop_once_bytes_arrive(page, *, discard: bool) -> None:
    """Pause (or cancel, `discard`) the page's download once bytes arrived: a direct
    connection, since on loopback the whole file would be through before a queued slot ran."""
    from PySide6.QtCore import Qt

    page._bridge.progress.connect(lambda p: p.downloaded and page.stop_download(discard=discard),
                                  Qt.ConnectionType.DirectConnection)


def test_models_page_downloads_with_progress_pause_and_resume(hub, tiny, data_home, qtbot,
                                                              small_chunks):
    page = hub_page(hub, tiny, data_home, qtbot)
    stop_once_bytes_arrive(page, discard=False)  # paused: the partial stays, nothing is listed
    with qtbot.waitSignal(page.download_finished, timeout=10_000) as done:
        page.download("tiny-q8_0")
    assert done.args == [None] and "paused" in page.status.text()
    assert FILE not in listed(page.store) and page.store.pending_downloads()
    qtbot.waitUntil(lambda: "paused at" in page.catalog.item(0, 0).text(), timeout=10_000)

    # resume to the end: the bar reaches 100 % and the model moves to "Your models"
    page._bridge.progress.disconnect()
    page._bridge.progress.connect(page._on_progress)
    values = []
    page._bridge.progress.connect(lambda p: values.append(page.progress.value()))
    page.catalog.selectRow(0)
    with qtbot.waitSignal(page.download_finished, timeout=10_000) as done:
        page.download_selected()
    assert done.args[0].verified and values[-1] == 1000
    assert "sha256 verified" in page.status.text()
    qtbot.waitUntil(lambda: page.installed.rowCount() == 2 and page.catalog.rowCount() == 0,
                    timeout=10_000)


def test_models_page_cancel_deletes_the_partial(hub, tiny, data_home, qtbot, small_chunks):
    page = hub_page(hub, tiny, data_home, qtbot)
    stop_once_bytes_arrive(page, discard=True)
    with qtbot.waitSignal(page.download_finished, timeout=10_000):
        page.download("tiny-q8_0")
    qtbot.waitUntil(lambda: not page.store.pending_downloads(), timeout=10_000)
    assert "cancelled" in page.status.text() and FILE not in listed(page.store)
