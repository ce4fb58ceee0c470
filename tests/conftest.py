"""Shared fixtures. Every test gets its own data dir and no network (loopback only); `bank` is
a real memory bank on the HashEmbedder (`make_bank` for a second one or another embedder)."""

from __future__ import annotations

import ipaddress
import os
import socket

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


class NetworkAccessError(AssertionError):
    pass


def _is_loopback(address) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX path
        return True
    host = address[0]
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any socket connection to a non-loopback address fails the test."""
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def guarded(self, address):
        if not _is_loopback(address):
            raise NetworkAccessError(f"test tried to reach the network: {address!r}")
        return real_connect(self, address)

    def guarded_ex(self, address):
        if not _is_loopback(address):
            raise NetworkAccessError(f"test tried to reach the network: {address!r}")
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    monkeypatch.setattr(socket.socket, "connect_ex", guarded_ex)
    real_gai = socket.getaddrinfo

    def gai(host, *a, **k):
        if host not in (None, "localhost") and not str(host).startswith("127.") and host != "::1":
            try:
                ipaddress.ip_address(host)
            except ValueError:
                raise NetworkAccessError(f"test tried to resolve {host!r}") from None
        return real_gai(host, *a, **k)

    monkeypatch.setattr(socket, "getaddrinfo", gai)
    yield


@pytest.fixture(autouse=True)
def data_home(tmp_path, monkeypatch):
    """A fresh data dir per test, through the one override every component honours."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("MEMORY_R1_HOME", str(home))
    return home


@pytest.fixture(autouse=True)
def _no_background_derivation(request, monkeypatch):
    """`fast_embedded_model` is on by default, so every app or chat started on the embedded
    model would derive its 138 MiB Q8_0 copy in the background into the test's data dir; tests
    load the shipped file instead (the copy is missing there) unless marked `derive`, which
    keeps the real `derive_in_background`."""
    if request.node.get_closest_marker("derive") is None:
        from core.llm import variant

        monkeypatch.setattr(variant, "derive_in_background", lambda *a, **k: None)
    yield


@pytest.fixture(autouse=True)
def _detach_app_log_handlers():
    """CLI tests call setup_logging(); its handlers must not outlive the test (their files
    live in the test's tmp dir)."""
    yield
    from app.logs import remove_app_handlers

    remove_app_handlers()


@pytest.fixture(scope="session")
def real_embedder():
    """The real all-MiniLM-L6-v2 (loaded once per session)."""
    from core.embeddings import default_embedder

    return default_embedder()


@pytest.fixture
def hash_embedder():
    from core.fakes import HashEmbedder

    return HashEmbedder()


@pytest.fixture
def make_bank(data_home, hash_embedder):
    """`make_bank(path=None, embedder=None)` -> an open `MemoryBank` on real SQLite + sqlite-vec,
    closed at teardown. Defaults: the app's own file in the test's data dir
    (`<MEMORY_R1_HOME>/memory.sqlite3`) and this test's `hash_embedder`."""
    from core.memory import MemoryBank

    made = []

    def make(path=None, embedder=None):
        bank = MemoryBank(path or data_home / "memory.sqlite3", embedder or hash_embedder)
        made.append(bank)
        return bank

    yield make
    for bank in made:
        bank.close()


@pytest.fixture
def bank(make_bank):
    """The test's memory bank: real SQLite + sqlite-vec on `hash_embedder` (see `make_bank`)."""
    return make_bank()
