"""The memory bank: memories, their history, keyword + vector indexes, and chats (SQLite).

    from core.memory import MemoryBank
    with MemoryBank.open() as bank:
        bank.add("Caroline went to a LGBTQ support group", speaker="Caroline")
        hits = bank.search("What did Caroline do?", k=60)
"""

from core.memory.bank import LazyDefaultEmbedder, MemoryBank
from core.memory.io import ImportReport


def __getattr__(name: str):
    """`ChatStore`, `Conversation`, `ChatMessage` from core.chats, imported on first use:
    core.chats itself imports core.memory.db, so an eager import here would be circular."""
    if name in ("ChatStore", "Conversation", "ChatMessage"):
        import core.chats

        return getattr(core.chats, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["MemoryBank", "ChatStore", "Conversation", "ChatMessage", "ImportReport", "LazyDefaultEmbedder"]
