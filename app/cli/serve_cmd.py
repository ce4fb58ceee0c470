"""`memory-r1 serve`: an OpenAI-compatible HTTP API over your memory (app/server/http_server.py).

Registration imports nothing heavy: FastAPI, uvicorn, the bank and the models are imported
when the command runs. Bound to 127.0.0.1 unless `--host` says otherwise; `--api-key KEY` (or
$MEMORY_R1_API_KEY) makes every request need `Authorization: Bearer KEY`. Ctrl-C stops it
after the queued memory updates are saved (up to a minute).
"""

from __future__ import annotations

import os
import sys

from app.cli.options import add_command, port


def register(sub) -> None:
    p = add_command(sub, run_serve, "serve", help="an OpenAI-compatible API over your memory (local HTTP)",
                    description="Serve /v1/models, /v1/chat/completions (streaming too) and /v1/memories for "
                                'OpenAI clients: OpenAI(base_url="http://127.0.0.1:PORT/v1", api_key=KEY).')
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this computer only)")
    p.add_argument("--port", type=port, default=8765, help="port (default 8765; 0 picks a free one)")
    p.add_argument("--api-key", metavar="KEY", default=os.environ.get("MEMORY_R1_API_KEY"),
                   help="require this Bearer key (default: $MEMORY_R1_API_KEY, else none)")


def run_serve(args) -> int:
    from core.memory import MemoryBank

    from app.server.http_server import LocalServer, check_key

    key = check_key(args.api_key)
    bank = MemoryBank.open()
    try:
        server = LocalServer(bank, host=args.host, port=args.port, api_key=key)
        try:
            sock = server.bind()
        except OSError as exc:
            from core.errors import InvalidInputError

            raise InvalidInputError(f"Cannot listen on {args.host}:{args.port} ({exc.strerror or exc}).") from None
        print(f"Memory-R1 API on {server.url} (model \"memory-r1\""
              + (", Bearer key required" if key else ", no key") + "). Ctrl-C stops it.", file=sys.stderr, flush=True)
        server.serve(sock)
    finally:
        bank.close()
    return 0
