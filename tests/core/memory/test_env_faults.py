"""Environment faults, one sentence each: a fresh folder opened by two processes at once, a
write lock held past the busy timeout, a full disk, a data folder deleted under the app, a
read-only database. Tests run as root here, so read-only is simulated by making
`os.access(..., W_OK)` answer False (the bank then opens with `mode=ro` + `query_only`)."""

from __future__ import annotations

import errno
import multiprocessing
import os
import shutil
import time

import pytest

import core.memory.db as db
from core.errors import DatabaseFullError, DatabaseReadOnlyError, DataFolderGoneError, DiskFullError
from core.fakes import HashEmbedder
from core.fileio import atomic_write_text
from core.memory import MemoryBank

PAIRS = 20


def _open_fresh(path: str, barrier, results) -> None:
    try:
        barrier.wait(timeout=30)
        with MemoryBank(path, HashEmbedder()) as bank:
            bank.count()
        results.put("ok")
    except BaseException as exc:  # reported to the parent
        results.put(f"{type(exc).__name__}: {exc}")


def test_pairs_of_processes_opening_a_fresh_folder_at_once_never_fail(tmp_path):
    ctx = multiprocessing.get_context("fork")
    failures = []
    for i in range(PAIRS):
        path = str(tmp_path / f"home{i}" / "memory.sqlite3")  # the folder does not exist yet
        barrier, results = ctx.Barrier(2), ctx.Queue()
        procs = [ctx.Process(target=_open_fresh, args=(path, barrier, results)) for _ in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        failures += [r for r in (results.get(timeout=10) for _ in procs) if r != "ok"]
    assert failures == []


def test_a_full_database_is_one_sentence_and_nothing_is_half_written(bank):
    bank.add("Maya has a dog")
    with bank.reader() as conn:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages + 2}")
    with pytest.raises(DatabaseFullError, match=r"^The disk is full: the last change to .* was not saved; free"):
        bank.add("Maya wrote a long letter " + "x" * 200_000)
    assert [m.text for m in bank.list()] == ["Maya has a dog"] and len(bank.history()) == 1


def test_a_disk_io_error_on_a_full_disk_is_the_disk_full_sentence(monkeypatch, tmp_path):
    err = db.sqlite3.OperationalError("disk I/O error")
    assert not isinstance(db.to_user_error(err, tmp_path / "m.sqlite3"), DiskFullError)
    monkeypatch.setattr(db.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9, 0))
    assert isinstance(db.to_user_error(err, tmp_path / "m.sqlite3"), DatabaseFullError)


def test_a_file_write_on_a_full_disk_is_one_sentence_and_keeps_the_old_file(monkeypatch, tmp_path):
    (tmp_path / "d").mkdir()
    target = tmp_path / "d" / "settings.json"
    target.write_text("old")

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(DiskFullError, match=r"^The disk is full: .*settings\.json was not written"):
        atomic_write_text(target, "new")
    assert target.read_text() == "old" and sorted(p.name for p in target.parent.iterdir()) == ["settings.json"]


def test_a_data_folder_deleted_under_the_app_is_said_before_anything_is_lost(tmp_path):
    folder = tmp_path / "home"
    with MemoryBank(folder / "memory.sqlite3", HashEmbedder()) as bank:
        bank.add("Maya has a dog")
        shutil.rmtree(folder)
        with pytest.raises(DataFolderGoneError, match="was deleted or moved while Memory-R1 was running"):
            bank.add("Maya moved to Porto")
        with pytest.raises(DataFolderGoneError):
            bank.chats.create_conversation("x")
        assert [m.text for m in bank.list()] == ["Maya has a dog"]  # what was open still reads
    assert not folder.exists()


def test_a_read_only_database_still_reads_and_every_write_is_one_sentence(make_bank, data_home, monkeypatch):
    path = data_home / "memory.sqlite3"
    bank = make_bank(path)
    bank.add("Maya has a dog")
    bank.close()
    before = path.read_bytes()
    real = os.access
    monkeypatch.setattr(db.os, "access", lambda p, mode, **k: False if mode & os.W_OK else real(p, mode, **k))
    with MemoryBank(path, HashEmbedder()) as ro:
        assert [m.text for m in ro.list()] == ["Maya has a dog"]
        assert ro.search("dog", k=1)[0].memory.text == "Maya has a dog"
        for write in (lambda: ro.add("Maya moved"), lambda: ro.delete(1), lambda: ro.chats.create_conversation("x")):
            with pytest.raises(DatabaseReadOnlyError, match="can show your memories but not change them"):
                write()
        with pytest.raises(DatabaseReadOnlyError):
            db.check_writable(path)
    assert path.read_bytes() == before


def test_a_lock_held_past_the_busy_timeout_is_said_at_once_by_check_writable(tmp_path):
    path = tmp_path / "m.sqlite3"
    with MemoryBank(path, HashEmbedder()):
        pass
    holder = db.sqlite3.connect(str(path), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        t0 = time.monotonic()
        with pytest.raises(db.DatabaseLockedError, match="locked by another program"):
            db.check_writable(path, timeout=0.3)
        assert time.monotonic() - t0 < 2
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    db.check_writable(path, timeout=0.3)
