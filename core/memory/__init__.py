"""The memory bank: memories, their history, keyword + vector indexes, and chats (SQLite).

    from core.memory import MemoryBank
    with MemoryBank.open() as bank:
        bank.add("Caroline went to a LGBTQ support group", speaker="Caroline")
        hits = bank.search("What did Caroline do?", k=60)
"""

from .bank import LazyDefaultEmbedder, MemoryBank
from .chats import ChatMessage, ChatStore, Conversation
from .io import ImportReport

__all__ = ["MemoryBank", "ChatStore", "Conversation", "ChatMessage", "ImportReport", "LazyDefaultEmbedder"]
