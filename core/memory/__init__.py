"""The memory bank: memories, their history, keyword + vector indexes (SQLite; chats: core.chats).

    from core.memory import MemoryBank
    with MemoryBank.open() as bank:
        bank.add("Caroline went to a LGBTQ support group", speaker="Caroline")
        hits = bank.search("What did Caroline do?", k=60)
"""

from core.memory.bank import LazyDefaultEmbedder, MemoryBank
from core.memory.io import ImportReport

__all__ = ["MemoryBank", "ImportReport", "LazyDefaultEmbedder"]
