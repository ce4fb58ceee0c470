"""Several processes, one bank: two processes adding at once (as two `memory-r1 serve` or an MCP
server beside the app would) lose nothing and double nothing; each sees the other's writes."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
N = 100

WORKER = """
import sys, time
from core.fakes import HashEmbedder
from core.memory import MemoryBank
from app.server.service import MemoryService

path, name, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
bank = MemoryBank(path, HashEmbedder())
service = MemoryService(bank, client=name)
while time.time() < start:
    time.sleep(0.005)
for i in range(int(sys.argv[4])):
    service.add(f"{name} fact number {i}.")
print(bank.count())
bank.close()
"""


def test_two_processes_adding_at_once_lose_and_double_nothing(data_home, make_bank):
    path = data_home / "memory.sqlite3"
    make_bank(path).close()  # created and migrated once, like the app does
    start = time.time() + 3.0  # both start adding at the same moment
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(path), name, str(start), str(N)], cwd=ROOT,
                              env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for name in ("one", "two")]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    bank = make_bank(path)
    texts = [m.text for m in bank.list(limit=None)]
    assert sorted(texts) == sorted(f"{name} fact number {i}." for name in ("one", "two") for i in range(N))
    assert len({m.id for m in bank.list(limit=None)}) == 2 * N
    adds = [e for e in bank.history(limit=10_000) if e.event == "ADD"]
    assert len(adds) == 2 * N and {e.actor for e in adds} == {"tool"}
    assert bank.search("two fact number 7", k=1, mode="keyword")[0].memory.text == "two fact number 7."
    # the process that finished last counted the other's memories too
    assert max(int(out) for out, _ in outs) == 2 * N
