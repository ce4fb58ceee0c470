"""`memory-r1 mcp`: serve the memory to MCP clients (Claude Desktop, Cursor...) on stdin/stdout.

Registration imports nothing heavy: the `mcp` SDK, the bank and the models are imported when
the command runs. The server (app/server/mcp_server.py) opens the same data folder as the app
(`--data-dir` / MEMORY_R1_HOME); its changes are logged with actor "tool". Logs go to the log
file (and warnings to stderr), never to stdout, which carries the protocol.
"""

from __future__ import annotations

from app.cli.options import add_command


def register(sub) -> None:
    add_command(sub, run_mcp, "mcp", help="serve your memory to other apps over MCP (stdio)",
                description='An MCP server on stdin/stdout for Claude Desktop, Cursor and other MCP clients: '
                            '{"mcpServers": {"memory-r1": {"command": "memory-r1", "args": ["mcp"]}}}. '
                            "Tools: search_memories, list_memories, remember, add_memory, update_memory, "
                            "forget_memory, answer, export_memories.")


def run_mcp(args) -> int:
    from core.memory import MemoryBank

    from app.server.mcp_server import serve_stdio
    from app.server.service import MemoryService

    bank = MemoryBank.open()
    service = MemoryService(bank, client="mcp")
    try:
        serve_stdio(service)
    finally:
        service.close()
        bank.close()
    return 0
