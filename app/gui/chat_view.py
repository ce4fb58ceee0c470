"""The chat area: message bubbles, the streaming reply, "memories used", "memory updated"
notices, a forget's "Forgot 2 memories: … [Undo]" notice, and the input box.

Streaming (design.md: long replies must not lag): the worker appends tokens to a
`TokenBuffer`; a 50 ms `QTimer` here takes the batch and inserts it as plain text at the end of
the reply's document (an incremental layout, not a re-render). Markdown is rendered once, when
the reply is complete, with Qt's own CommonMark/GitHub parser with raw HTML disabled (model
output never injects markup). Links open in the desktop's browser only when clicked; nothing is
ever fetched. GUI thread only.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QKeyEvent, QPalette
from PySide6.QtWidgets import (QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QScrollArea, QSizePolicy,
                               QVBoxLayout, QWidget)

from core.types import Memory

from app.gui.bubbles import Bubble, MessageWidget, memory_link, reply_stats
from app.gui.tasks import TokenBuffer

__all__ = ["Bubble", "ChatInput", "ChatView", "MessageWidget", "WelcomeCard", "memory_link", "reply_stats"]

FLUSH_MS = 50
MAX_SHOWN_MESSAGES = 200


class ChatInput(QPlainTextEdit):
    """Enter sends, Shift+Enter is a new line; the box grows with the text up to 8 lines."""

    submitted = Signal()
    MAX_LINES = 8

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("chatInput")
        self.setPlaceholderText("Message Memory-R1…  (Enter sends, Shift+Enter for a new line)")
        self.setTabChangesFocus(True)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.document().documentLayout().documentSizeChanged.connect(self._grow)
        self._grow()

    def _grow(self, *_args) -> None:
        line = self.fontMetrics().lineSpacing()
        lines = min(max(1, int(self.document().size().height())), self.MAX_LINES)
        margins = self.contentsMargins()
        doc_margin = 2 * self.document().documentMargin()
        self.setFixedHeight(int(lines * line + doc_margin + margins.top() + margins.bottom() + 4))

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 - Qt naming
        enter = event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter)
        if enter and not event.modifiers() & Qt.KeyboardModifier.ShiftModifier:
            self.submitted.emit()
            return
        super().keyPressEvent(event)


class WelcomeCard(Bubble):
    """The first-run welcome, shown inline above the chat (non-modal)."""

    dismissed = Signal()

    TEXT = ("<h2>Welcome to Memory-R1</h2>"
            "<p>A private assistant that remembers. Everything stays on this computer: the "
            "models run locally and nothing is sent anywhere.</p>"
            "<p>Chat as usual. After each reply a background <b>memory manager</b> decides "
            "what is worth remembering; the <b>Memory</b> panel on the right shows every "
            "memory, lets you fix or delete it, and shows its history. Replies list the "
            "memories they used.</p>"
            "<p>Use a <b>temporary chat</b> for conversations that should be neither read "
            "from nor written to memory, or <b>pause memory</b> at any time.</p>")

    def __init__(self, parent=None) -> None:
        super().__init__(QPalette.ColorRole.Base, QPalette.ColorRole.Highlight, parent)
        self.setObjectName("welcomeCard")
        label = QLabel(self.TEXT)
        label.setWordWrap(True)
        self.button = QPushButton("Start chatting")
        self.button.clicked.connect(self.dismissed)
        box = QVBoxLayout(self)
        box.addWidget(label)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(self.button)
        box.addLayout(row)


class ChatView(QWidget):
    """The message list, the input, Send/Stop, and the temporary-chat banner.

    Signals: `sendRequested(text)`, `stopRequested()`, `regenerateRequested()`,
    `memoryLinkActivated(memory_id)`, `welcomeDismissed()`, `undoForgetRequested(batch_id)`,
    `editRequested(message_id, text)`, `versionRequested(message_id, index)`,
    `draftPaused(text)`: the typed text, once typing paused for DRAFT_PAUSE_MS (the window
    prefills the reply's prompt with it).
    """

    DRAFT_PAUSE_MS = 300

    editRequested = Signal(int, str)
    versionRequested = Signal(int, int)
    sendRequested = Signal(str)
    draftPaused = Signal(str)
    stopRequested = Signal()
    regenerateRequested = Signal()
    memoryLinkActivated = Signal(int)
    welcomeDismissed = Signal()
    undoForgetRequested = Signal(int)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.messages: list[MessageWidget] = []
        self.streaming: MessageWidget | None = None
        self._buffer: TokenBuffer | None = None
        self._flush_timer = QTimer(self, interval=FLUSH_MS)
        self._flush_timer.timeout.connect(self.flush)
        self._stick_to_bottom = True
        self._warmed_up = False
        self._build()

    def showEvent(self, event) -> None:  # noqa: N802 - Qt naming
        """The first show warms the bubbles up two turns of the event loop later: after the
        window has been drawn (its start-up does not wait for them), long before a reply."""
        super().showEvent(event)
        if not self._warmed_up:
            self._warmed_up = True
            QTimer.singleShot(0, self, lambda: QTimer.singleShot(0, self, self._warm_up))

    def _build(self) -> None:
        self.banner = QLabel("Temporary chat: nothing here is read from or written to memory.")
        self.banner.setObjectName("temporaryBanner")
        self.banner.setWordWrap(True)
        self.banner.setMargin(6)
        self.banner.setAutoFillBackground(True)
        self.banner.setBackgroundRole(QPalette.ColorRole.Highlight)
        self.banner.setForegroundRole(QPalette.ColorRole.HighlightedText)
        self.banner.hide()
        self.welcome = WelcomeCard(self)
        self.welcome.dismissed.connect(self._dismiss_welcome)
        self.welcome.hide()
        self.container = QWidget()
        self.list_layout = QVBoxLayout(self.container)
        self.list_layout.setContentsMargins(8, 8, 8, 8)
        self.list_layout.setSpacing(8)
        self.list_layout.addWidget(self.welcome)
        self.list_layout.addStretch(1)
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.scroll.setWidget(self.container)
        bar = self.scroll.verticalScrollBar()
        bar.rangeChanged.connect(self._on_range)
        bar.valueChanged.connect(self._on_scrolled)
        self.input = ChatInput()
        self.input.submitted.connect(self.submit)
        self._draft_timer = QTimer(self, singleShot=True, interval=self.DRAFT_PAUSE_MS)
        self._draft_timer.timeout.connect(self._draft_paused)
        self.input.textChanged.connect(self._draft_timer.start)
        self.send_button = QPushButton("Send")
        self.send_button.setDefault(True)
        self.send_button.clicked.connect(self.submit)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop the reply (Esc)")
        self.stop_button.clicked.connect(self.stopRequested)
        self.stop_button.hide()
        row = QHBoxLayout()
        row.addWidget(self.input, 1)
        row.addWidget(self.send_button, 0, Qt.AlignmentFlag.AlignBottom)
        row.addWidget(self.stop_button, 0, Qt.AlignmentFlag.AlignBottom)
        box = QVBoxLayout(self)
        box.setContentsMargins(0, 0, 0, 4)
        box.addWidget(self.banner)
        box.addWidget(self.scroll, 1)
        box.addLayout(row)

    def _warm_up(self) -> None:
        """Build and lay out one bubble of each kind once the window is up, off screen: the first
        real one would otherwise pay for font and text-engine initialisation in the middle of a
        chat."""
        for role, text in (("user", "warm-up"), ("assistant", "**warm-up** `code`\n\n- item")):
            bubble = MessageWidget(role, text)
            bubble.resize(600, 200)
            bubble.adjustSize()
            bubble.body.document().size()
            bubble.grab()  # paints once: glyph caches
            bubble.deleteLater()

    # --- welcome / banner / busy ------------------------------------------------------------
    def show_welcome(self, shown: bool) -> None:
        self.welcome.setVisible(shown)

    def _dismiss_welcome(self) -> None:
        self.welcome.hide()
        self.input.setFocus()
        self.welcomeDismissed.emit()

    def set_temporary(self, temporary: bool) -> None:
        self.banner.setVisible(temporary)

    def set_busy(self, busy: bool) -> None:
        """While a reply is generated: Stop instead of Send, no regenerate."""
        self.send_button.setVisible(not busy)
        self.stop_button.setVisible(busy)
        self._update_regenerate(busy)

    def set_input_enabled(self, enabled: bool, reason: str = "") -> None:
        self.input.setReadOnly(not enabled)
        self.send_button.setEnabled(enabled)
        self.input.setPlaceholderText(reason or "Message Memory-R1…  (Enter sends, Shift+Enter for a new line)")

    def _draft_paused(self) -> None:
        text = self.input.toPlainText().strip()
        if text and not self.input.isReadOnly() and self.send_button.isVisible():
            self.draftPaused.emit(text)

    def submit(self) -> None:
        """Send what the input holds (Enter, the Send button; tests and dev tools call it)."""
        text = self.input.toPlainText().strip()
        if not text or not self.send_button.isVisible() or not self.send_button.isEnabled():
            return
        self.input.clear()
        self._draft_timer.stop()
        self.sendRequested.emit(text)

    # --- messages ---------------------------------------------------------------------------
    def clear(self) -> None:
        self.stop_stream()
        for widget in self.messages:
            self.list_layout.removeWidget(widget)
            widget.deleteLater()
        self.messages.clear()

    def show_messages(self, messages: Iterable, memories: dict[int, list[Memory]] | None = None) -> None:
        """Replace the view with stored `ChatMessage`s (the most recent 200)."""
        self.clear()
        memories = memories or {}
        for msg in list(messages)[-MAX_SHOWN_MESSAGES:]:
            if msg.role not in ("user", "assistant"):
                continue
            widget = self._add(MessageWidget(msg.role, msg.content, message_id=msg.id, meta=msg.meta))
            widget.set_memories_used(memories.get(msg.id))
        self._update_regenerate(False)
        self._stick_to_bottom = True

    def add_user_message(self, text: str) -> MessageWidget:
        self._stick_to_bottom = True
        return self._add(MessageWidget("user", text))

    def _add(self, widget: MessageWidget) -> MessageWidget:
        widget.memoryLinkActivated.connect(self.memoryLinkActivated)
        widget.regenerateRequested.connect(self.regenerateRequested)
        widget.undoForgetRequested.connect(self.undoForgetRequested)
        widget.editRequested.connect(self.editRequested)
        widget.versionRequested.connect(self.versionRequested)
        self.list_layout.insertWidget(self.list_layout.count() - 1, widget)
        self.messages.append(widget)
        return widget

    def remove_last_assistant(self) -> None:
        """Drop the last reply from the view (before regenerating it)."""
        if self.messages and self.messages[-1].role == "assistant":
            widget = self.messages.pop()
            self.list_layout.removeWidget(widget)
            widget.deleteLater()

    def remove_from(self, message_id: int) -> None:
        """Drop the bubble of message `message_id` and every later one (edit and resend)."""
        widget = self.message_widget(message_id)
        if widget is None:
            return
        index = self.messages.index(widget)
        for w in self.messages[index:]:
            self.list_layout.removeWidget(w)
            w.deleteLater()
        del self.messages[index:]

    def message_widget(self, message_id: int) -> MessageWidget | None:
        for widget in self.messages:
            if widget.message_id == message_id:
                return widget
        return None

    def reply_to(self, message_id: int | None, *, in_flight: bool = False) -> MessageWidget | None:
        """The assistant bubble answering the user message `message_id`. With `in_flight`, a
        message not shown under its id is the one whose reply is still being stored (the last
        user bubble without an id yet: ids arrive with the finished reply)."""
        user = self.message_widget(message_id) if message_id is not None else None
        if user is None and in_flight:
            user = next((w for w in reversed(self.messages) if w.role == "user" and w.message_id is None), None)
        if user is None or user.role != "user":
            return user
        index = self.messages.index(user)
        follow = self.messages[index + 1:index + 2]
        return follow[0] if follow and follow[0].role == "assistant" else None

    def forget_notice_texts(self, memory_ids: Iterable[int]) -> int:
        """Forgotten memories leave the shown notices and "memories used" lists: each link to
        one of `memory_ids` becomes "(forgotten)". Returns how many links were replaced."""
        heads = [f'<a href="memory:{int(i)}">' for i in memory_ids]
        replaced = 0
        for label in (lab for w in self.messages for lab in (w.notice, w.memories_list)):
            text = label.text()
            for head in heads:
                while (start := text.find(head)) >= 0:
                    end = text.find("</a>", start)
                    text = text[:start] + "<i>(forgotten)</i>" + text[end + 4 if end >= 0 else len(text):]
                    replaced += 1
            if text != label.text():
                label.setText(text)
        return replaced

    def forget_widget(self, batch_id: int) -> MessageWidget | None:
        """The reply whose forget notice is for `batch_id`."""
        return next((w for w in self.messages if w.forget_batch == batch_id), None)

    def last_assistant(self) -> MessageWidget | None:
        for widget in reversed(self.messages):
            if widget.role == "assistant":
                return widget
        return None

    def _update_regenerate(self, busy: bool) -> None:
        last = self.messages[-1] if self.messages else None
        for widget in self.messages:
            widget.set_regenerate_visible(not busy and widget is last and widget.role == "assistant")
            widget.set_editable(not busy and widget.message_id is not None)
            widget.prev_button.setEnabled(not busy and widget.version > 0)
            widget.next_button.setEnabled(not busy and widget.version < widget.versions - 1)

    # --- streaming --------------------------------------------------------------------------
    def start_stream(self, buffer: TokenBuffer) -> MessageWidget:
        """A new assistant bubble fed from `buffer` every FLUSH_MS until `finish_stream`."""
        self.stop_stream()
        self._buffer = buffer
        self.streaming = self._add(MessageWidget("assistant", streaming=True))
        self._stick_to_bottom = True
        self._flush_timer.start()
        return self.streaming

    def flush(self) -> None:
        if self.streaming is not None and self._buffer is not None:
            self.streaming.append_stream(self._buffer.take())

    def finish_stream(self, text: str, *, message_id: int | None, memories: Sequence[Memory] = (),
                      cancelled: bool = False, meta: dict | None = None) -> MessageWidget | None:
        """Render the complete reply (Markdown) and its "memories used"."""
        widget = self.streaming
        self.stop_stream()
        if widget is None:
            return None
        widget.message_id = message_id
        widget.set_streaming(False)
        widget.set_final_text(text)
        widget.set_memories_used(memories)
        widget.set_meta(meta)
        if cancelled:
            widget.mark_stopped()
        return widget

    def stop_stream(self) -> None:
        self._flush_timer.stop()
        if self.streaming is not None:
            self.flush()
            self.streaming.set_streaming(False)
        self.streaming = None
        self._buffer = None

    def discard_stream(self) -> None:
        """The reply failed before producing anything worth keeping: drop its bubble."""
        widget = self.streaming
        self.stop_stream()
        if widget is not None and not widget.raw_text.strip():
            self.messages.remove(widget)
            self.list_layout.removeWidget(widget)
            widget.deleteLater()

    # --- auto-scroll ------------------------------------------------------------------------
    def _on_scrolled(self, value: int) -> None:
        bar = self.scroll.verticalScrollBar()
        self._stick_to_bottom = value >= bar.maximum() - 4

    def _on_range(self, _minimum: int, maximum: int) -> None:
        if self._stick_to_bottom:
            self.scroll.verticalScrollBar().setValue(maximum)

