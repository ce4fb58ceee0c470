"""Where a memory came from: the memory panel's "Where it came from" pane, and opening a chat
source in the window.

`source_lines(memory, sources)` renders a memory's provenance links (`MemoryBank.memory_sources`,
`core.types.MemorySource`) as one HTML line each: its role ("added from", "updated from",
"said again", "edited by you", "superseded by #N", ...), the speaker, the time and the quoted
text; a chat source links to its message ("chat:<conversation>/<message>"), an ingested turn
shows its ref, and a source whose text is gone (its chat deleted, or the text removed) says
"source deleted". `SourcesView` shows those lines and emits `chatMessageRequested(conversation,
message)` / `memoryRequested(id)` for a click. `connect_sources(window)` wires a `MainWindow`:
a chat source click opens that chat, scrolls to the message and highlights it for a moment.

GUI thread only; nothing here calls the bank (the panel fetches the links on its db lane).
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Sequence

from PySide6.QtCore import QTimer, Signal
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QGraphicsColorizeEffect, QTextBrowser

from core.types import Memory, MemorySource, TurnRef

from app.gui.memory_model import compact_time, local_time

if TYPE_CHECKING:
    from app.gui.main_window import MainWindow

ROLE_TEXT = {"added": "added from", "updated": "updated from", "repeated": "said again",
             "edited": "edited", "remembered": "added", "imported": "imported from",
             "superseded": "superseded"}
QUOTE_LIMIT = 220
HIGHLIGHT_MS = 2500
PLACEHOLDER = "Select one memory to see where it came from."


def _quote(text: str, limit: int = QUOTE_LIMIT) -> str:
    flat = " ".join(text.split())
    if len(flat) > limit:
        flat = flat[:limit - 1].rstrip() + "…"
    return "“" + html.escape(flat) + "”"


def _when(src: MemorySource) -> str:
    if src.said_at:
        return compact_time(src.said_at)
    return local_time(src.linked_at) if src.linked_at else ""


def role_text(src: MemorySource, memory: Memory | None = None) -> str:
    """How the memory used this source, in words ("added from", "edited by you", ...)."""
    if src.kind == "user":
        return f"{ROLE_TEXT.get(src.role, src.role)} by you"
    if src.role == "superseded":
        newer = memory.superseded_by if memory is not None else None
        return f"superseded by #{newer}" if newer is not None else "superseded"
    return ROLE_TEXT.get(src.role, src.role)


def source_line(src: MemorySource, memory: Memory | None = None) -> str:
    """One link as HTML: role, kind/ref, speaker, time, then the quote or "source deleted"."""
    role = html.escape(role_text(src, memory))
    if src.role == "superseded" and memory is not None and memory.superseded_by is not None:
        role = role.replace(f"#{memory.superseded_by}",
                            f'<a href="memory:{memory.superseded_by}">#{memory.superseded_by}</a>')
    parts = [f"<b>{role}</b>"]
    if src.kind == "user":
        when = local_time(src.linked_at)
        return parts[0] + (f" · {html.escape(when)}" if when else "")
    ref = TurnRef.of(src.ref)
    if src.kind == "chat":
        parts.append("chat")
    elif src.kind == "import":
        parts.append(f"import {html.escape(src.ref or '')}".strip())
    elif src.ref:
        parts.append(f"turn {html.escape(src.ref)}")
    else:
        parts.append("turn")
    if src.speaker:
        parts.append(html.escape(src.speaker))
    when = _when(src)
    if when:
        parts.append(html.escape(when))
    head = " · ".join(parts)
    if src.deleted or not src.text:
        return head + " — <i>source deleted</i>"
    quote = _quote(src.text)
    if src.kind == "chat" and ref is not None and ref.is_chat and ref.message_id is not None:
        quote += f' <a href="chat:{ref.conversation_id}/{ref.message_id}">open chat</a>'
    return head + " — " + quote


def source_lines(memory: Memory, sources: Sequence[MemorySource]) -> list[str]:
    """Every line of `memory`'s pane: its links, oldest first; a superseded memory without a
    "superseded" link still says by which memory; no link at all says so (with the old
    free-text source, if any)."""
    lines = [source_line(src, memory) for src in sources]
    if memory.status == "superseded" and memory.superseded_by is not None \
            and not any(src.role == "superseded" for src in sources):
        lines.append(f'<b>superseded by <a href="memory:{memory.superseded_by}">#{memory.superseded_by}</a></b>')
    if not sources:
        legacy = f" (recorded as “{html.escape(memory.source)}”)" if memory.source else ""
        lines.insert(0, f"<i>No recorded source{legacy}.</i>")
    return lines


class SourcesView(QTextBrowser):
    """The pane under the memory table. `show_sources(memory, sources)`, `show_text(text)`.

    Signals: `chatMessageRequested(conversation_id, message_id)`, `memoryRequested(id)`."""

    chatMessageRequested = Signal(int, int)
    memoryRequested = Signal(int)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("memorySources")
        self.setOpenLinks(False)
        self.anchorClicked.connect(lambda url: self.activate(url.toString()))
        self.setMaximumHeight(self.fontMetrics().lineSpacing() * 7 + 12)
        self.memory_id: int | None = None
        self.show_text(PLACEHOLDER)

    def show_text(self, text: str) -> None:
        self.memory_id = None
        self.setHtml(f"<i>{html.escape(text)}</i>")

    def show_sources(self, memory: Memory, sources: Sequence[MemorySource]) -> None:
        self.memory_id = memory.id
        body = "<br>".join(source_lines(memory, sources))
        self.setHtml(f"<b>Where #{memory.id} came from</b><br>{body}")

    def activate(self, href: str) -> None:
        """A click on a link: "chat:<conversation>/<message>" or "memory:<id>"."""
        if href.startswith("memory:") and href[7:].isdigit():
            self.memoryRequested.emit(int(href[7:]))
            return
        ref = TurnRef.of(href)
        if ref is not None and ref.is_chat and ref.conversation_id is not None and ref.message_id is not None:
            self.chatMessageRequested.emit(ref.conversation_id, ref.message_id)


def highlight_message(window: "MainWindow", message_id: int) -> bool:
    """Scroll the shown chat to the message and tint it for HIGHLIGHT_MS; False when the
    message is not shown (deleted, or older than the shown part of the chat)."""
    widget = window.chat.message_widget(message_id)
    if widget is None:
        return False
    effect = QGraphicsColorizeEffect(widget)
    effect.setObjectName("sourceHighlight")
    effect.setColor(widget.palette().color(QPalette.ColorRole.Highlight))
    effect.setStrength(0.35)
    widget.setGraphicsEffect(effect)

    def scroll() -> None:
        if window.chat.message_widget(message_id) is widget:
            window.chat.scroll.ensureWidgetVisible(widget, 0, 40)

    def clear() -> None:
        if window.chat.message_widget(message_id) is widget and widget.graphicsEffect() is effect:
            widget.setGraphicsEffect(None)  # type: ignore[arg-type]

    scroll()
    for delay in (0, 150):  # again once the new bubbles are laid out
        QTimer.singleShot(delay, widget, scroll)
    QTimer.singleShot(HIGHLIGHT_MS, widget, clear)
    return True


def open_chat_message(window: "MainWindow", conversation_id: int, message_id: int) -> None:
    """Show the chat `conversation_id` (opening it unless it is the shown one), then scroll to
    and highlight `message_id`; the status bar says when the message is not there."""

    def done() -> None:
        if not highlight_message(window, message_id):
            window.statusBar().showMessage("That message is no longer in the chat.", 8000)

    current = window.current_conversation
    if current is not None and current.id == conversation_id and window.chat.message_widget(message_id):
        done()
        return

    def shown(cid: int) -> None:
        if cid == conversation_id:
            window.conversationShown.disconnect(shown)
            done()

    window.conversationShown.connect(shown)
    window.open_conversation(conversation_id)
    window.load_conversations()  # the list marks the chat now shown


def connect_sources(window: "MainWindow") -> None:
    """Wire the memory panel's source links to the window (called once by MainWindow)."""
    window.memory.sources_view.chatMessageRequested.connect(
        lambda cid, mid: open_chat_message(window, cid, mid))

    def reload_chat() -> None:  # a forget removed what was said: the shown chat may quote it
        if window.current_conversation is not None:
            window.open_conversation(window.current_conversation.id)

    window.memory.sourcesRemoved.connect(reload_chat)
