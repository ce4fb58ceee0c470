"""`memory-r1 mcp`: the memory bank as an MCP server (the official `mcp` SDK, `MCPServer`).

Tools (typed, documented parameters; small JSON results): `search_memories`, `list_memories`,
`add_memory`, `update_memory`, `forget_memory` (a soft, undoable delete), `remember` (the
Memory Manager on a message, as in the chat), `answer` (the Answer Agent: answer + the
memories it used), `export_memories`. They call `app.server.service.MemoryService`, so every
change is logged with actor "tool" and the turn "tool:mcp" (History and Undo in the app).

`build_server(service)` makes the server (tests connect to it in process with
`mcp.Client(server)`); `serve_stdio(service)` runs it on stdin/stdout until the client hangs
up. The SDK runs these sync tools on worker threads; the service is thread-safe. A
`UserError` (unknown id, empty text) becomes a tool error result with its one sentence;
anything else is a bug the SDK logs and reports without its text.
"""

from __future__ import annotations

from typing import Annotated, Any, Callable

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from core.errors import UserError

from app.server.service import MAX_K, MAX_LIST, MemoryService

INSTRUCTIONS = (
    "Long-term memory of the user, kept on their computer by Memory-R1. Search it before answering "
    "questions about the user; use `remember` for what the user tells you about themselves (it "
    "deduplicates and updates), `add_memory` only for a fact already phrased as a memory."
)

MemoryId = Annotated[int, Field(ge=1, description="The memory's id (from search_memories or list_memories).")]
MemoryText = Annotated[str, Field(min_length=1, max_length=4000,
                                  description="One short, self-contained fact, e.g. 'Ann is allergic to peanuts.'")]


def _call(fn: Callable[..., Any], *args, **kw) -> Any:
    try:
        return fn(*args, **kw)
    except UserError as exc:
        raise ToolError(str(exc)) from exc


def build_server(service: MemoryService) -> MCPServer:
    """An MCPServer named "memory-r1" with the tools over `service`."""
    server = MCPServer("memory-r1", instructions=INSTRUCTIONS)

    @server.tool()
    def search_memories(
        query: Annotated[str, Field(min_length=1, description="What to look for, in words or meaning.")],
        k: Annotated[int, Field(ge=1, le=MAX_K, description="How many memories to return.")] = 10,
        speaker: Annotated[str | None, Field(description="Only memories about this person.")] = None,
    ) -> dict[str, Any]:
        """Search the user's memories (meaning + keywords), best first, with a relevance score."""
        return {"memories": _call(service.search, query, k=k, speaker=speaker)}

    @server.tool()
    def list_memories(
        limit: Annotated[int, Field(ge=1, le=MAX_LIST, description="How many to return, newest first.")] = 50,
    ) -> dict[str, Any]:
        """The most recent active memories, newest first."""
        return {"memories": _call(service.list, limit)}

    @server.tool()
    def remember(
        text: Annotated[str, Field(min_length=1, max_length=20000,
                                   description="What the user said, in their words.")],
    ) -> dict[str, Any]:
        """Let the Memory Manager read a message of the user and update the memory: new facts are
        added, duplicates skipped, changed facts updated. Returns what changed."""
        return _call(service.remember, text)

    @server.tool()
    def add_memory(text: MemoryText) -> dict[str, Any]:
        """Add one memory as given (no deduplication). Returns the new memory under "added"."""
        return _call(service.add, text)

    @server.tool()
    def update_memory(id: MemoryId, text: MemoryText) -> dict[str, Any]:  # noqa: A002 - the tool's parameter name
        """Replace the text of an active memory. Returns the updated memory under "updated"."""
        return _call(service.update, id, text)

    @server.tool()
    def forget_memory(id: MemoryId) -> dict[str, Any]:  # noqa: A002
        """Delete a memory (the user can restore it in Memory-R1). Returns it under "deleted"."""
        return _call(service.delete, id)

    @server.tool()
    def answer(
        question: Annotated[str, Field(min_length=1, max_length=4000, description="A question about the user.")],
    ) -> dict[str, Any]:
        """Answer a question from the memories (Memory-R1's Answer Agent); returns the answer and
        the memories it used."""
        return _call(service.answer, question)

    @server.tool()
    def export_memories() -> dict[str, Any]:
        """Export every memory with its history to a JSONL file in the data folder; returns its
        path and the number of memories."""
        return _call(service.export)

    return server


def serve_stdio(service: MemoryService) -> None:
    """Serve on stdin/stdout until the client closes the connection (blocks)."""
    build_server(service).run("stdio")
