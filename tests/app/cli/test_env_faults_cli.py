"""Environment faults through `memory-r1 memory ...`: one sentence on stderr, exit code 1,
nothing half written, and no model loaded before a lock or a read-only file is reported."""

from __future__ import annotations

import errno
import os
import time

import pytest

import core.memory.db as db
from app.cli import main
from core.fakes import HashEmbedder


class NoLoadEmbedder(HashEmbedder):
    """Stands for the real model: embedding means it was loaded."""

    def embed(self, texts):
        raise AssertionError("the embedder was used before the database was checked")


@pytest.fixture
def seeded(monkeypatch, capsys, data_home):
    monkeypatch.setattr("core.memory.bank.lazy_default_embedder", lambda: HashEmbedder())
    assert main(["memory", "add", "Maya has a dog"]) == 0
    monkeypatch.setattr("core.memory.bank.lazy_default_embedder", lambda: NoLoadEmbedder())
    capsys.readouterr()
    return data_home / "memory.sqlite3"


def _run(capsys, *argv):
    code = main(["memory", *argv])
    out, err = capsys.readouterr()
    return code, out, err.strip().splitlines()


def test_a_locked_database_is_said_before_the_model_loads(seeded, capsys):
    holder = db.sqlite3.connect(str(seeded), isolation_level=None)  # another connection = another process
    holder.execute("BEGIN IMMEDIATE")
    try:
        t0 = time.monotonic()
        code, _, err = _run(capsys, "add", "Maya moved to Porto")
        elapsed = time.monotonic() - t0
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert code == 1 and len(err) == 1 and err[0].startswith("error: The memory database") and "locked" in err[0]
    assert elapsed < 8  # the busy timeout (5 s), once
    assert _run(capsys, "list")[1].count("\n") == 1


def test_a_read_only_database_lists_and_refuses_writes_in_one_sentence(seeded, capsys, monkeypatch):
    real = os.access
    monkeypatch.setattr(db.os, "access", lambda p, mode, **k: False if mode & os.W_OK else real(p, mode, **k))
    before = seeded.read_bytes()
    code, out, _ = _run(capsys, "list")
    assert code == 0 and "Maya has a dog" in out
    for argv in (["add", "Maya moved"], ["delete", "1"], ["edit", "1", "Maya has two dogs"]):
        code, _, err = _run(capsys, *argv)
        assert code == 1 and len(err) == 1 and "cannot be written" in err[0], (argv, err)
    assert seeded.read_bytes() == before


def test_an_export_on_a_full_disk_is_one_sentence(seeded, capsys, monkeypatch, tmp_path):
    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    code, _, err = _run(capsys, "export", str(tmp_path / "out.jsonl"))
    assert code == 1 and len(err) == 1 and err[0].startswith("error: The disk is full:")
    assert not (tmp_path / "out.jsonl").exists() and not (tmp_path / "out.jsonl.part").exists()
