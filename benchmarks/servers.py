"""Server benchmarks: `search_memories` over MCP and the first token through `serve`.

    .venv/bin/python benchmarks/servers.py               # both, printed
    .venv/bin/python benchmarks/servers.py --json        # last line: one JSON object
    .venv/bin/python benchmarks/servers.py --skip-model  # MCP search only (no LLM)

1. `search_memories` through a real MCP client session in process (the SDK's in-memory
   connection, JSON-RPC framing included) over a bank of `--memories` memories (default
   1,000) on the real all-MiniLM-L6-v2: p50/p95 of `--queries` calls, end to end.
2. First token of a streamed chat completion through `memory-r1 serve` (uvicorn on a free
   loopback port, the `openai` client) with the embedded SmolLM2-135M, over the same bank:
   the first request (model load included) and the p50 of `--completions` later ones.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import finish, percentile as pct  # noqa: E402

TOPICS = ["cat", "dog", "Lisbon", "violin", "peanuts", "marathon", "sister", "job at a bank", "tea", "piano"]


def build_bank(folder: Path, n: int):
    from core.embeddings import default_embedder
    from core.memory import MemoryBank
    from core.types import MemoryOp

    bank = MemoryBank(folder / "memory.sqlite3", default_embedder())
    ops = [MemoryOp("ADD", text=f"User mentioned {TOPICS[i % len(TOPICS)]} in conversation {i}.", speaker="User")
           for i in range(n)]
    for i in range(0, n, 200):
        bank.apply(ops[i:i + 200], actor="import")
    return bank


def bench_mcp(bank, queries: int) -> dict:
    import anyio
    from mcp import Client

    from app.server.mcp_server import build_server
    from app.server.service import MemoryService

    server = build_server(MemoryService(bank))
    times: list[float] = []

    async def main():
        async with Client(server) as client:
            await client.call_tool("search_memories", {"query": "warm-up"})
            for i in range(queries):
                start = time.perf_counter()
                res = await client.call_tool("search_memories", {"query": f"what about the {TOPICS[i % 10]}?"})
                times.append(time.perf_counter() - start)
                assert not res.is_error

    anyio.run(main)
    return {"mcp_search_p50_ms": pct(times, 50, scale=1000), "mcp_search_p95_ms": pct(times, 95, scale=1000)}


def bench_serve(bank, completions: int) -> dict:
    import openai

    from core.config import Settings

    from app.server.http_server import LocalServer

    server = LocalServer(bank, settings=Settings(), api_key="bench")
    server.start()
    client = openai.OpenAI(base_url=server.url, api_key="bench", max_retries=0, timeout=600)
    firsts: list[float] = []
    try:
        for i in range(completions + 1):
            start = time.perf_counter()
            first = None
            stream = client.chat.completions.create(
                model="memory-r1", stream=True, max_tokens=32,
                messages=[{"role": "user", "content": f"Do you remember my {TOPICS[i % 10]}?"}])
            for chunk in stream:
                if first is None and chunk.choices and chunk.choices[0].delta.content:
                    first = time.perf_counter() - start
            firsts.append(first if first is not None else float("nan"))
            server.app.state.sessions.assistant().wait_idle(600)  # the manager: not part of the latency
    finally:
        server.stop()
    return {"serve_first_token_cold_s": firsts[0], "serve_first_token_p50_s": pct(firsts[1:], 50)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--memories", type=int, default=1000)
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--completions", type=int, default=3)
    ap.add_argument("--skip-model", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bank = build_bank(Path(tmp), args.memories)
        try:
            result = {"memories": args.memories, **bench_mcp(bank, args.queries)}
            print(f"MCP search_memories ({args.memories} memories, in process): "
                  f"p50 {result['mcp_search_p50_ms']:.1f} ms, p95 {result['mcp_search_p95_ms']:.1f} ms")
            if not args.skip_model:
                result.update(bench_serve(bank, args.completions))
                print(f"serve, streamed completion, first token: {result['serve_first_token_cold_s']:.2f} s "
                      f"(first request, model load included), p50 {result['serve_first_token_p50_s']:.2f} s after")
        finally:
            bank.close()
    return finish(result, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
