"""Kill test: SIGKILL a chat process at random points, restart it, and check that every stored
user message was given to the Memory Manager exactly once (a real bank, scripted models)."""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.fakes import HashEmbedder
from core.memory.bank import MemoryBank

CHILD = Path(__file__).with_name("kill_child.py")
ROOT = Path(__file__).resolve().parents[3]
TRIALS = 50
SEED = 20261201


def _start(bank_path: Path, trial: int, *extra: str) -> tuple[subprocess.Popen, int]:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, str(CHILD), str(bank_path), str(trial), str(SEED + trial), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    line = proc.stdout.readline() if ready else ""
    if not line.startswith("READY"):
        proc.kill()
        pytest.fail(f"child did not start: {line!r} {proc.stderr.read()[-2000:]}")
    return proc, int(line.split()[1])


def ledger(bank: MemoryBank) -> dict:
    """Per stored user message: how many manager batches carry its turn; plus what is pending."""
    with bank.reader() as conn:
        users = conn.execute("SELECT id, conversation_id FROM messages WHERE role = 'user'").fetchall()
        batches = dict(conn.execute("SELECT turn, count(DISTINCT batch) FROM memory_events "
                                    "WHERE actor = 'manager' GROUP BY turn").fetchall())
    applied = {mid: batches.get(f"chat:{cid}/{mid}", 0) for mid, cid in users}
    return {"messages": len(users), "lost": sum(1 for n in applied.values() if n == 0),
            "doubled": sum(1 for n in applied.values() if n > 1), "pending": len(bank.chats.pending_turns())}


def test_sigkill_at_random_points_loses_and_doubles_nothing(tmp_path, capsys):
    bank_path = tmp_path / "memory.sqlite3"
    rng = random.Random(SEED)
    resumed_total = 0
    started = time.monotonic()
    for trial in range(TRIALS):
        proc, resumed = _start(bank_path, trial)
        resumed_total += resumed
        time.sleep(rng.uniform(0.0, 0.35))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()
    proc, left = _start(bank_path, TRIALS, "--drain")
    assert proc.wait(90) == 0, proc.stderr.read()[-2000:]
    proc.stdout.close()
    proc.stderr.close()
    with MemoryBank(bank_path, HashEmbedder()) as bank:
        figures = ledger(bank)
    with capsys.disabled():
        print(f"\nkill test: {TRIALS} trials in {time.monotonic() - started:.1f} s, {figures['messages']} "
              f"acknowledged messages, {resumed_total} turns resumed by a restarted run (counted at each restart), "
              f"{left} left for the final run, lost {figures['lost']}, "
              f"doubled {figures['doubled']}, pending {figures['pending']}")
    assert figures["messages"] >= TRIALS  # the kills let most trials store messages
    assert resumed_total > 0  # some kills landed with manager work outstanding
    assert figures["lost"] == 0 and figures["doubled"] == 0 and figures["pending"] == 0
