"""Database faults: locked by another process, corrupt file, newer schema, a process killed
in the middle of an import or a batch of changes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from core.errors import DatabaseCorruptError, DatabaseLockedError, SchemaTooNewError
from core.memory import MemoryBank

ROOT = Path(__file__).resolve().parents[3]


def _spawn(code: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(proc: subprocess.Popen, marker: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if marker in line:
            return
        if not line and proc.poll() is not None:
            raise AssertionError(f"child exited early: {proc.stderr.read()}")
    raise AssertionError(f"child never printed {marker!r}")


def _integrity(path: Path) -> str:
    import sqlean

    conn = sqlean.connect(str(path))
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


def test_locked_by_another_process(tmp_path, hash_embedder):
    path = tmp_path / "m.sqlite3"
    with MemoryBank(path, hash_embedder) as bank:
        bank.add("before the lock")
    holder = _spawn(f"""
        import sqlean, time
        conn = sqlean.connect({str(path)!r}, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        print("locked", flush=True)
        time.sleep(60)
    """)
    try:
        _wait_for(holder, "locked")
        with MemoryBank(path, hash_embedder, timeout=0.2) as bank:
            assert bank.count() == 1  # readers are not blocked (WAL)
            t0 = time.monotonic()
            with pytest.raises(DatabaseLockedError, match="locked by another program"):
                bank.add("during the lock")
            assert time.monotonic() - t0 < 5
            with pytest.raises(DatabaseLockedError):
                bank.chats.create_conversation("x")
    finally:
        holder.kill()
        holder.wait()
    with MemoryBank(path, hash_embedder) as bank:
        assert [m.text for m in bank.list()] == ["before the lock"]
        bank.add("after the lock")
        assert bank.count() == 2


@pytest.mark.parametrize("content", [
    b"this is not a database at all, just some text\n" * 100,
    bytes(range(256)) * 64,
])
def test_a_garbage_file_is_reported_and_never_overwritten(tmp_path, hash_embedder, content):
    path = tmp_path / "m.sqlite3"
    path.write_bytes(content)
    with pytest.raises(DatabaseCorruptError, match="damaged") as err:
        MemoryBank(path, hash_embedder)
    assert str(path) in str(err.value) and "left untouched" in str(err.value)
    assert path.read_bytes() == content
    assert not path.with_name("m.sqlite3-wal").exists() or path.with_name("m.sqlite3-wal").stat().st_size == 0


def test_damaged_pages_are_reported_and_never_overwritten(tmp_path, hash_embedder):
    path = tmp_path / "m.sqlite3"
    with MemoryBank(path, hash_embedder) as bank:
        for i in range(300):
            bank.add(f"memory number {i} " + "x" * 200)
        bank._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(path.read_bytes())
    page = 4096
    for start in range(page * 2, len(data), page):  # scribble over every page after the first two
        data[start + 8:start + 200] = b"\xde\xad\xbe\xef" * 48
    path.write_bytes(bytes(data))
    before = path.read_bytes()
    with pytest.raises(DatabaseCorruptError):
        with MemoryBank(path, hash_embedder) as bank:
            bank.list(status=None)
            bank.search("memory", k=5, mode="vector")
    assert path.read_bytes() == before


def test_a_newer_schema_is_refused_untouched(tmp_path, hash_embedder):
    path = tmp_path / "m.sqlite3"
    with MemoryBank(path, hash_embedder) as bank:
        bank.add("x")
        bank._conn.execute("PRAGMA user_version = 99")
        bank._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = path.read_bytes()
    with pytest.raises(SchemaTooNewError, match="newer Memory-R1"):
        MemoryBank(path, hash_embedder)
    assert path.read_bytes() == before


_KILL_CHILD = """
    import sys, time
    from core.fakes import HashEmbedder
    from core.memory import MemoryBank, rows
    from core.types import MemoryOp

    real_insert = rows.Batch.insert
    calls = 0

    def slow_insert(self, *a, **k):
        global calls
        calls += 1
        if calls == 150:
            print("inside", flush=True)
            time.sleep(120)
        return real_insert(self, *a, **k)

    rows.Batch.insert = slow_insert
    bank = MemoryBank({path!r}, HashEmbedder())
    {action}
    print("finished", flush=True)
"""


@pytest.mark.parametrize("action", [
    "bank.import_jsonl({src!r})",
    "bank.apply([MemoryOp('ADD', text=f'batch fact {{i}}') for i in range(400)]"
    " + [MemoryOp('DELETE', memory_id=1)])",
])
def test_a_process_killed_mid_write_leaves_all_or_nothing(tmp_path, hash_embedder, action):
    path = tmp_path / "m.sqlite3"
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps({"text": f"imported fact {i}"}) for i in range(400)) + "\n")
    with MemoryBank(path, hash_embedder) as bank:
        bank.add("kept before")
    child = _spawn(_KILL_CHILD.format(path=str(path), action=action.format(src=str(src))))
    try:
        _wait_for(child, "inside")
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL
    assert _integrity(path) == "ok"
    with MemoryBank(path, hash_embedder) as bank:
        assert [m.text for m in bank.list(status=None)] == ["kept before"]
        assert len(bank.history()) == 1
        assert bank.search("fact", k=5, mode="keyword") == []
        # the same work completes normally afterwards
        report = bank.import_jsonl(src)
        assert report.imported == 400
    assert _integrity(path) == "ok"
