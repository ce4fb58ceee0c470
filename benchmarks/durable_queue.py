"""Durable manager queue with the real embedded model: SIGKILL a chat at random points, restart.

    .venv/bin/python benchmarks/durable_queue.py               # 10 trials, printed
    .venv/bin/python benchmarks/durable_queue.py --trials 3 --json

Each trial starts a child process running the `Assistant` (answer and manager on one
embedded SmolLM2-135M, `core.llm.runtime.load_backend(ModelSpec())`, as `memory-r1 chat`
shares it) over one bank file; the child first resumes what earlier (killed) children left,
then chats with short replies until it is SIGKILLed at a random moment (`--kill-min`..
`--kill-max` seconds after it is ready). A final child only drains the queue. Then every
stored user message must have a manager record and at most one applied batch: `lost` counts
those never recorded, `doubled` those with more than one batch (both expected 0); `pending`
those a final run that did not drain within `--drain-timeout` left for the next start
(`drained: false`; 0 when it drained). The embedder is the HashEmbedder unless
`--real-embedder` (loading MiniLM in every child costs seconds); it does not touch the queue.
"""

from __future__ import annotations

import argparse
import os
import random
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import finish  # noqa: E402

ITEMS = ["bike", "guitar", "lamp", "kayak", "camera", "teapot", "tent", "violin", "scarf", "drone"]
COLOURS = ["red", "blue", "green", "yellow", "black", "white", "orange", "purple"]


def child(bank_path: str, trial: int, seed: int, drain: float, real_embedder: bool) -> int:
    from core.assistant.pipeline import Assistant
    from core.config import ModelSpec, Settings
    from core.fakes import HashEmbedder
    from core.llm.runtime import load_backend
    from core.memory.bank import MemoryBank

    bank = MemoryBank.open(bank_path, None if real_embedder else HashEmbedder())
    backend = load_backend(ModelSpec())
    assistant = Assistant(bank, backend, settings=Settings(max_tokens=24, temperature=0.0), user_name="Ann")
    print(f"READY {assistant.resume_pending()}", flush=True)
    if drain:
        ok = assistant.wait_idle(drain)
        assistant.close()
        backend.close()
        bank.close()
        return 0 if ok else 1
    rng = random.Random(seed)
    cid = bank.chats.create_conversation(f"Trial {trial}").id
    for _ in range(10_000):
        assistant.reply(cid, f"I bought a {rng.choice(COLOURS)} {rng.choice(ITEMS)} today.")
        time.sleep(rng.uniform(0.5, 2.5))  # room for the manager: a reply pre-empts its shared model
    return 0


def _start(args, bank_path: Path, trial: int, drain: bool) -> tuple[subprocess.Popen, int]:
    cmd = [sys.executable, __file__, "--child", str(bank_path), str(trial), str(args.seed + trial)]
    cmd += ["--drain", str(args.drain_timeout)] if drain else []
    cmd += ["--real-embedder"] if args.real_embedder else []
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    ready, _, _ = select.select([proc.stdout], [], [], 120)
    line = proc.stdout.readline() if ready else ""
    if not line.startswith("READY"):
        proc.kill()
        raise SystemExit(f"trial {trial}: the child did not start ({line!r})")
    return proc, int(line.split()[1])


def ledger(bank_path: Path) -> dict:
    from core.fakes import HashEmbedder
    from core.memory.bank import MemoryBank

    with MemoryBank(bank_path, HashEmbedder()) as bank, bank.reader() as conn:
        users = conn.execute("SELECT m.id, m.conversation_id, q.outcome, q.message_id IS NOT NULL FROM messages m "
                             "LEFT JOIN manager_queue q ON q.message_id = m.id WHERE m.role = 'user'").fetchall()
        batches = dict(conn.execute("SELECT turn, count(DISTINCT batch) FROM memory_events "
                                    "WHERE actor = 'manager' GROUP BY turn").fetchall())
    outcomes = [o for _, _, o, _ in users]
    return {"acknowledged": len(users), "lost": sum(1 for *_, queued in users if not queued),
            "pending": sum(1 for *_, o, queued in users if queued and o is None),
            "doubled": sum(1 for mid, cid, *_ in users if batches.get(f"chat:{cid}/{mid}", 0) > 1),
            **{o: outcomes.count(o) for o in ("applied", "nothing", "failed")}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--kill-min", type=float, default=1.0)
    p.add_argument("--kill-max", type=float, default=5.0)
    p.add_argument("--drain-timeout", type=float, default=90.0, help="seconds the final run may take")
    p.add_argument("--real-embedder", action="store_true", help="all-MiniLM-L6-v2 instead of the HashEmbedder")
    p.add_argument("--json", action="store_true")
    p.add_argument("--child", nargs=3, metavar=("BANK", "TRIAL", "SEED"), help=argparse.SUPPRESS)
    p.add_argument("--drain", type=float, default=0.0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(args.child[0], int(args.child[1]), int(args.child[2]), args.drain, args.real_embedder)
    rng = random.Random(args.seed)
    started = time.monotonic()
    resumed = 0
    with tempfile.TemporaryDirectory() as tmp:
        bank_path = Path(tmp) / "memory.sqlite3"
        for trial in range(args.trials):
            proc, n = _start(args, bank_path, trial, drain=False)
            resumed += n
            time.sleep(rng.uniform(args.kill_min, args.kill_max))
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            print(f"trial {trial}: killed ({n} earlier turns had been resumed)", flush=True)
        proc, left = _start(args, bank_path, args.trials, drain=True)
        resumed += left
        drained = proc.wait(args.drain_timeout + 60) == 0
        result = {"trials": args.trials, **ledger(bank_path), "resumed": resumed, "left_for_final": left,
                  "drained": drained, "seconds": round(time.monotonic() - started, 1)}
    print(f"trials {result['trials']}, acknowledged messages {result['acknowledged']}, lost {result['lost']}, "
          f"doubled {result['doubled']}, still pending {result['pending']} (applied {result['applied']}, "
          f"nothing {result['nothing']}, "
          f"failed {result['failed']}; {result['resumed']} turns resumed after restarts, "
          f"{left} left for the final run; {result['seconds']} s)")
    return finish(result, args.json)


if __name__ == "__main__":
    sys.exit(main())
