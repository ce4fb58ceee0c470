"""MemoryBank basics on real SQLite + sqlite-vec (HashEmbedder for speed)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from core.errors import ConflictError, InvalidInputError, NotFoundError
from core.memory import MemoryBank
from core.memory.migrations import LATEST
from core.types import MemoryOp


def test_open_defaults_to_the_data_dir(data_home, hash_embedder):
    with MemoryBank.open(embedder=hash_embedder) as b:
        assert b.path == data_home / "memory.sqlite3"
        assert b.schema_version == LATEST
        mode = b._conn.execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"
        assert b._conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert b._conn.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
        names = [r[0] for r in b._conn.execute("SELECT name FROM schema_migrations ORDER BY version")]
        assert len(names) == LATEST


def test_add_get_list_count(bank):
    a = bank.add("Caroline went to a support group", speaker="Caroline", observed_at="1:56 pm on 8 May, 2023",
                 source="chat:1/2").memory
    b = bank.add("Melanie painted a sunrise", speaker="Melanie").memory
    assert bank.get(a.id) == a
    assert a.status == "active" and a.version == 1
    assert a.created_at.endswith("+00:00") and "T" in a.created_at
    assert a.prompt_line() == "1:56 pm on 8 May, 2023: Caroline went to a support group"
    assert [m.id for m in bank.list()] == [b.id, a.id]  # newest first
    assert [m.id for m in bank.list(speaker="Caroline")] == [a.id]
    assert [m.id for m in bank.list(limit=1, offset=1)] == [a.id]
    assert bank.count() == 2 and bank.count(None) == 2 and bank.count("deleted") == 0
    assert bank.speakers() == ["Caroline", "Melanie"]


def test_unknown_ids_raise_not_found(bank):
    bank.add("one")
    for call in (lambda: bank.get(999), lambda: bank.edit(999, "x"), lambda: bank.delete(999),
                 lambda: bank.restore(999), lambda: bank.forget(999), lambda: bank.history(999),
                 lambda: bank.get("1; DROP TABLE memories"), lambda: bank.undo(12345)):
        with pytest.raises(NotFoundError):
            call()
    assert bank.count() == 1


def test_numpy_integer_ids_are_ids_and_numpy_bools_are_not(bank):
    a = bank.add("one").memory
    assert bank.get(np.int64(a.id)) == a and bank.get(np.int32(a.id)) == a
    for bad in (True, np.bool_(True), np.float64(a.id), float(a.id)):
        with pytest.raises(NotFoundError):
            bank.get(bad)


def test_the_vector_extension_is_sqlite_vecs_own_file_found_without_importing_it():
    import subprocess
    import sys

    import sqlite_vec

    from core.memory.db import vec0_path

    assert vec0_path() == sqlite_vec.loadable_path()
    code = ("import sys; from core.memory.db import vec0_path; vec0_path(); "
            "print([m for m in ('sqlite_vec', 'numpy') if m in sys.modules])")
    root = Path(__file__).resolve().parents[3]
    res = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == "[]", res.stdout + res.stderr


@pytest.mark.parametrize("text", ["", "   ", "\n\t  ", "\x00\x00"])
def test_empty_text_is_rejected(bank, text):
    with pytest.raises(InvalidInputError):
        bank.add(text)
    with pytest.raises(InvalidInputError):
        bank.apply([MemoryOp("ADD", text="fine"), MemoryOp("ADD", text=text)])
    assert bank.count(None) == 0


def test_one_megabyte_text_round_trips(bank):
    text = ("The quick brown fox jumps over the lazy dog 1234. " * 21000)[:1_000_000].strip()
    mem = bank.add(text).memory
    assert len(bank.get(mem.id).text) == len(text)
    assert bank.search("lazy dog", k=1, mode="keyword")[0].memory.id == mem.id


def test_control_characters_and_odd_unicode_are_kept(bank):
    odd = "tab\there\x07bell\x1b[31mred\u202eRTL\u200bzw e\u0301 \U0001F600 \ufeff \u0000nul \ud800lone"
    mem = bank.add(odd).memory
    got = bank.get(mem.id).text
    assert "\x07bell\x1b[31mred\u202eRTL\u200bzw" in got
    assert "\U0001F600" in got and "e\u0301" in got
    assert "\x00" not in got  # NULs are dropped
    assert "\ufffdlone" in got  # a lone surrogate cannot be stored as UTF-8
    assert bank.search("bell", k=1, mode="keyword")[0].memory.id == mem.id


def test_sql_looking_text_is_stored_and_searchable_verbatim(bank):
    evil = "Robert'); DROP TABLE memories;-- \" OR 1=1 NEAR(a b) col:x * ^ AND NOT"
    mem = bank.add(evil, speaker="x' OR '1'='1").memory
    assert bank.get(mem.id).text == evil
    for mode in ("keyword", "hybrid", "vector"):
        hits = bank.search(evil, k=5, mode=mode)
        assert hits and hits[0].memory.id == mem.id
    assert bank.search("\"", k=5, mode="keyword") == []
    assert bank.list(speaker="x' OR '1'='1")[0].id == mem.id
    assert bank.count() == 1


def test_edit_with_optimistic_version(bank):
    mem = bank.add("Caroline likes tea").memory
    edited = bank.edit(mem.id, "Caroline likes green tea", expected_version=1).memory
    assert edited.version == 2 and edited.text == "Caroline likes green tea"
    with pytest.raises(ConflictError):
        bank.edit(mem.id, "Caroline likes coffee", expected_version=1)
    assert bank.get(mem.id).text == "Caroline likes green tea"
    assert bank.search("green tea", k=1, mode="keyword")[0].memory.id == mem.id
    assert bank.search("likes tea", k=5, mode="keyword")[0].memory.text == "Caroline likes green tea"


def test_soft_delete_and_restore(bank):
    mem = bank.add("Melanie has two kids").memory
    deleted = bank.delete(mem.id).memory
    assert deleted.status == "deleted"
    assert bank.count() == 0 and bank.count("deleted") == 1
    assert bank.search("Melanie kids", k=5) == []
    assert bank.search("Melanie kids", k=5, status="deleted")[0].memory.id == mem.id
    with pytest.raises(ConflictError):
        bank.delete(mem.id)
    with pytest.raises(ConflictError):
        bank.edit(mem.id, "changed")
    assert bank.restore(mem.id).memory.status == "active"
    assert bank.search("Melanie kids", k=1)[0].memory.id == mem.id
    with pytest.raises(ConflictError):
        bank.restore(mem.id)


def test_apply_is_all_or_nothing(bank):
    keep = bank.add("Caroline is a counsellor").memory
    ops = [MemoryOp("ADD", text="Caroline adopted a dog"),
           MemoryOp("UPDATE", memory_id=keep.id, text="Caroline is a school counsellor"),
           MemoryOp("DELETE", memory_id=424242)]
    with pytest.raises(NotFoundError):
        bank.apply(ops, turn="chat:1/1")
    assert bank.count(None) == 1 and bank.get(keep.id).text == "Caroline is a counsellor"
    assert len(bank.history()) == 1
    assert bank.search("adopted dog", k=5, mode="keyword") == []


def test_apply_records_events_and_returns_changes(bank):
    a = bank.add("Caroline is a counsellor").memory
    b = bank.add("Melanie runs").memory
    seen = []
    bank.add_listener(seen.append)
    changes = bank.apply([MemoryOp("ADD", text="Caroline adopted a dog", speaker="Caroline"),
                          MemoryOp("UPDATE", memory_id=a.id, text="Caroline is a school counsellor"),
                          MemoryOp("DELETE", memory_id=b.id),
                          MemoryOp("NOOP", text="Caroline likes dogs", memory_id=a.id),
                          MemoryOp("UPDATE", memory_id=a.id, text="Caroline is a school counsellor")],
                         turn="chat:3/17")
    assert [m.text for m in changes.added] == ["Caroline adopted a dog"]
    assert [m.id for m in changes.updated] == [a.id] and [m.id for m in changes.deleted] == [b.id]
    assert changes.noops == 2 and changes.summary() == "1 added, 1 updated, 1 deleted"
    assert seen == [changes]
    events = bank.history(limit=5)
    assert [e.event for e in events] == ["NOOP", "NOOP", "DELETE", "UPDATE", "ADD"]
    assert all(e.actor == "manager" and e.turn == "chat:3/17" for e in events)
    update = events[3]
    assert (update.old_text, update.new_text) == ("Caroline is a counsellor", "Caroline is a school counsellor")
    with pytest.raises(NotFoundError):  # a deleted memory is not a valid manager target
        bank.apply([MemoryOp("UPDATE", memory_id=b.id, text="Melanie swims")])


def test_apply_rejects_bad_ops_before_writing(bank):
    with pytest.raises(InvalidInputError):
        bank.apply([MemoryOp("ADD", text="ok"), MemoryOp("MERGE", text="x")])  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        bank.apply([MemoryOp("UPDATE", text="no id")])
    with pytest.raises(NotFoundError):
        bank.apply([MemoryOp("DELETE", memory_id="m3")])  # an alias that was never mapped
    assert bank.count(None) == 0 and bank.history() == []


def test_find_duplicate_exact_and_semantic(bank):
    mem = bank.add("Caroline  went to the   LGBTQ support group", speaker="Caroline").memory
    assert bank.find_duplicate("caroline went to the lgbtq SUPPORT group") == mem
    assert bank.find_duplicate("caroline went to the lgbtq support group", speaker="Melanie") is None
    near = bank.find_duplicate("Caroline went to the LGBTQ support group!", threshold=0.9)
    assert near == mem
    assert bank.find_duplicate("Melanie bought a violin") is None
    vec = bank.embed(["Caroline went to the LGBTQ support group."])[0]
    assert bank.find_duplicate("anything", vec=vec, threshold=0.9) == mem
    bank.delete(mem.id)
    assert bank.find_duplicate("Caroline went to the LGBTQ support group") is None


def test_embedder_change_rebuilds_the_index(tmp_path, hash_embedder, caplog):
    from core.fakes import HashEmbedder

    path = tmp_path / "m.sqlite3"
    with MemoryBank(path, hash_embedder) as b:
        mem = b.add("Caroline paints landscapes").memory
    other = HashEmbedder(dim=64, name="hash-64")
    with caplog.at_level("WARNING"):
        b2 = MemoryBank(path, other)
    assert "embedder changed" in caplog.text
    with b2:
        assert b2.stats()["embedder"] == "hash-64" and b2.stats()["dim"] == 64
        vec = b2._conn.execute("SELECT embedding FROM memory_vectors WHERE rowid = ?", (mem.id,)).fetchone()[0]
        assert len(vec) == 64 * 4
        hits = b2.search_by_vector(other.embed(["Caroline paints landscapes"])[0], k=1)
        assert hits[0].memory.id == mem.id and hits[0].score == pytest.approx(1.0, abs=1e-5)
    caplog.clear()
    with caplog.at_level("WARNING"), MemoryBank(path, other):
        pass
    assert "embedder changed" not in caplog.text


def test_mirror_matches_vec0_and_follows_every_change(bank):
    rng = np.random.default_rng(1)
    vecs = rng.standard_normal((40, bank.embedder.dim)).astype(np.float32)
    ops = [MemoryOp("ADD", text=f"fact {i}", speaker="A" if i % 2 else "B") for i in range(40)]
    mems = bank.apply(ops, vectors=vecs).added
    bank.delete(mems[3].id)
    bank.edit(mems[5].id, "completely different words now")
    bank.forget(mems[7].id)
    bank.apply([MemoryOp("UPDATE", memory_id=mems[9].id, text="new words")], vectors=-vecs[9:10])
    q = rng.standard_normal(bank.embedder.dim).astype(np.float32)
    q /= np.linalg.norm(q)
    mirror = [(h.memory.id, h.score) for h in bank.search_by_vector(q, k=60)]
    active = {m.id for m in bank.list()}
    ref = [(i, s) for i, s in bank.vec0_search(q, k=60) if i in active]
    assert [i for i, _ in mirror] == [i for i, _ in ref] and len(mirror) == len(active) == 38
    assert all(abs(a[1] - b[1]) < 1e-5 for a, b in zip(mirror, ref))
    only_a = bank.search_by_vector(q, k=60, speaker="A")
    assert len(only_a) == 18 and all(h.memory.speaker == "A" for h in only_a)
    assert [h.memory.id for h in only_a] == [i for i, _ in mirror if bank.get(i).speaker == "A"]
    fresh = MemoryBank(bank.path, bank.embedder)  # the mirror loaded from the file agrees
    assert [(h.memory.id, h.score) for h in fresh.search_by_vector(q, k=60)] == mirror
    fresh.close()


def test_another_connection_sees_changes(tmp_path, hash_embedder):
    path = tmp_path / "m.sqlite3"
    with MemoryBank(path, hash_embedder) as a, MemoryBank(path, hash_embedder) as b:
        a.add("Caroline likes hiking")
        assert b.search("hiking", k=1, mode="vector")[0].memory.text == "Caroline likes hiking"
        b.add("Melanie likes swimming")
        assert a.search("swimming", k=1, mode="vector")[0].memory.text == "Melanie likes swimming"


def test_threads_write_and_read_concurrently(bank):
    errors = []

    def writer(tag):
        try:
            for i in range(25):
                bank.add(f"{tag} fact {i}")
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    def reader():
        try:
            for _ in range(25):
                bank.search("fact", k=5)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in "ab"] + [threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert bank.count() == 50
    assert len(bank.search_by_vector(bank.embed(["fact"])[0], k=100)) == 50


def test_reindex_and_stats(bank):
    for t in ("alpha one", "beta two", "gamma three"):
        bank.add(t, speaker="S")
    bank.chats.add_message(bank.chats.create_conversation().id, "user", "hi")
    bank._conn.execute("DELETE FROM memory_vectors")  # simulate a lost index
    bank.reindex()
    assert bank.search("beta two", k=1, mode="vector")[0].memory.text == "beta two"
    assert bank.search("gamma", k=1, mode="keyword")[0].memory.text == "gamma three"
    stats = bank.stats()
    assert stats["memories"] == {"active": 3, "deleted": 0, "superseded": 0}
    assert stats["events"] == 3 and stats["speakers"] == 1
    assert stats["conversations"] == 1 and stats["messages"] == 1


def test_search_validates_options(bank):
    bank.add("x")
    with pytest.raises(InvalidInputError):
        bank.search("x", mode="fuzzy")
    with pytest.raises(InvalidInputError):
        bank.search("x", k=0)
    with pytest.raises(InvalidInputError):
        bank.search("   ")
    with pytest.raises(InvalidInputError):
        bank.list(status="gone")
    with pytest.raises(InvalidInputError):
        bank.search_by_vector(np.ones(7, np.float32), k=3)


def test_closed_bank_raises_a_user_error(tmp_path, hash_embedder):
    b = MemoryBank(tmp_path / "m.sqlite3", hash_embedder)
    b.close()
    b.close()
    with pytest.raises(InvalidInputError):
        b.add("late")


def test_semantic_and_hybrid_search_with_the_real_embedder(tmp_path, real_embedder):
    facts = ["Melanie plays the violin in a community orchestra",
             "Caroline adopted a golden retriever puppy",
             "John's flight to Denver is UA 2281 on Friday",
             "The kitchen sink leaks when the dishwasher runs",
             "Caroline is researching adoption agencies"]
    with MemoryBank(tmp_path / "m.sqlite3", real_embedder) as bank:
        assert bank.stats()["embedder"] == "all-MiniLM-L6-v2" and bank.stats()["dim"] == 384
        bank.apply([MemoryOp("ADD", text=t) for t in facts])
        top = bank.search("Which musical instrument does Melanie know?", k=1, mode="vector")[0]
        assert top.memory.text == facts[0] and 0.3 < top.score <= 1.0
        assert bank.search("What kind of dog does she have?", k=1, mode="vector")[0].memory.text == facts[1]
        assert bank.search("2281", k=1, mode="keyword")[0].memory.text == facts[2]
        hybrid = [h.memory.text for h in bank.search("plumbing problem 2281", k=2, mode="hybrid")]
        assert set(hybrid) == {facts[2], facts[3]}


def test_mirror_grows_and_reloads_from_vec0_chunks(tmp_path, hash_embedder):
    """3000 rows span three vec0 chunks; deletions leave holes in the chunk validity bitmaps."""
    from core.memory import index

    rng = np.random.default_rng(7)
    vecs = rng.standard_normal((3000, hash_embedder.dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    path = tmp_path / "m.sqlite3"
    with MemoryBank(path, hash_embedder) as bank:
        bank.search_by_vector(vecs[0], k=1)  # the mirror exists from the start and grows
        ids = [m.id for m in bank.apply([MemoryOp("ADD", text=f"r{i}") for i in range(3000)], vectors=vecs).added]
        for i in range(0, 3000, 7):
            bank.forget(ids[i]) if i % 2 else bank.delete(ids[i])
        keep = np.array([i % 7 != 0 for i in range(3000)])
        q = vecs[5]
        expected = np.flatnonzero(keep)[np.argsort(-(vecs[keep] @ q), kind="stable")][:60]
        live = [h.memory.id for h in bank.search_by_vector(q, k=60)]
        assert live == [ids[i] for i in expected]
        chunk_ids, chunk_mat = index._read_chunks(bank._conn, hash_embedder.dim)
        row_ids, row_mat = index._read_rows(bank._conn, hash_embedder.dim)
        order_c, order_r = np.argsort(chunk_ids), np.argsort(row_ids)
        assert np.array_equal(chunk_ids[order_c], row_ids[order_r])
        assert np.array_equal(chunk_mat[order_c], row_mat[order_r])
    with MemoryBank(path, hash_embedder) as bank:
        assert [h.memory.id for h in bank.search_by_vector(q, k=60)] == live
        assert len(bank._mirror) == 3000 - len(range(7, 3000, 14))  # deleted rows stay, forgotten go
