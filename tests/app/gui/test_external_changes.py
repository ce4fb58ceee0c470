"""The window follows changes another process makes to the same data folder (`memory-r1 serve`,
`mcp`, the CLI): the memory panel's poll of `PRAGMA data_version` also reloads the chat list."""

from __future__ import annotations


def test_chat_list_follows_another_process(qtbot, make_window, make_bank, data_home):
    """A conversation another process adds (here: a second connection, as `serve` has) shows up
    in the window's chat list without any action in the window."""
    from core.fakes import FakeBackend

    window = make_window(FakeBackend(["Hi."]), FakeBackend(default='{"facts": []}'))
    window.memory.external_poll.setInterval(50)
    qtbot.waitUntil(lambda: window.memory._seen_version is not None, timeout=5000)
    before = window.conversations.model.rowCount()
    other = make_bank(data_home / "memory.sqlite3")
    other.chats.create_conversation("API: me")
    qtbot.waitUntil(lambda: window.conversations.model.rowCount() == before + 1, timeout=5000)
    assert "API: me" in [window.conversations.model.conversation_at(r).title
                         for r in range(window.conversations.model.rowCount())]
