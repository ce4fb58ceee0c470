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

import html
from typing import Iterable, Sequence

from PySide6.QtCore import QEvent, QRectF, QSize, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import (QDesktopServices, QGuiApplication, QKeyEvent, QPainter, QPalette, QPen, QTextCursor,
                           QTextDocument)
from PySide6.QtWidgets import (QFrame, QHBoxLayout, QLabel, QPlainTextEdit, QPushButton,
                               QScrollArea, QSizePolicy, QTextBrowser, QToolButton, QVBoxLayout, QWidget)

from core.types import Memory, MemoryChanges

from app.gui.tasks import TokenBuffer

FLUSH_MS = 50
MAX_SHOWN_MESSAGES = 200
_MD = (QTextDocument.MarkdownFeature.MarkdownDialectGitHub | QTextDocument.MarkdownFeature.MarkdownNoHTML)


def memory_link(mem: Memory, limit: int = 90) -> str:
    text = mem.text if len(mem.text) <= limit else mem.text[: limit - 1] + "…"
    return f'<a href="memory:{mem.id}">{html.escape(text)}</a>'


class Bubble(QFrame):
    """A rounded panel painted from the *current* palette at every paint, so a switch between
    light and dark mode applies at once (style-sheet palette() colours are resolved only once).
    `fill`: the palette role of the background; `border`: the role of the outline."""

    RADIUS = 10

    def __init__(self, fill: QPalette.ColorRole, border: QPalette.ColorRole = QPalette.ColorRole.Mid,
                 parent=None) -> None:
        super().__init__(parent)
        self._fill, self._border = fill, border

    def paintEvent(self, _event) -> None:  # noqa: N802 - Qt naming
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        palette = self.palette()
        painter.setPen(QPen(palette.color(self._border), 1))
        painter.setBrush(palette.color(self._fill))
        painter.drawRoundedRect(QRectF(self.rect()).adjusted(0.5, 0.5, -0.5, -0.5), self.RADIUS, self.RADIUS)


class MessageText(QTextBrowser):
    """A read-only, selectable text block whose height follows its content (no scrollbar)."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setOpenLinks(False)
        self.anchorClicked.connect(self._open_link)
        self.viewport().setAutoFillBackground(False)
        self.document().setDocumentMargin(2)
        self.document().documentLayout().documentSizeChanged.connect(self._fit)
        self._fit()

    def _fit(self, *_args) -> None:
        height = int(self.document().size().height()) + 2 * self.frameWidth() + 2
        if height != self.height():
            self.setFixedHeight(max(height, 20))

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt naming
        return QSize(200, self.height())

    @staticmethod
    def _open_link(url: QUrl) -> None:
        if url.scheme() in ("http", "https", "mailto"):
            QDesktopServices.openUrl(url)


class MessageWidget(Bubble):
    """One chat message. Assistant messages carry "memories used", actions and notices."""

    memoryLinkActivated = Signal(int)
    regenerateRequested = Signal()
    undoForgetRequested = Signal(int)  # the forget's batch id

    def __init__(self, role: str, text: str = "", *, message_id: int | None = None,
                 streaming: bool = False, parent=None) -> None:
        super().__init__(QPalette.ColorRole.AlternateBase if role == "user" else QPalette.ColorRole.Base,
                         parent=parent)
        self.role = role
        self.message_id = message_id
        self.raw_text = text
        self.setObjectName("userMessage" if role == "user" else "assistantMessage")
        self.header = QLabel("You" if role == "user" else "Assistant")
        font = self.header.font()
        font.setBold(True)
        self.header.setFont(font)
        self.body = MessageText(self)
        self.memories_button = QToolButton(self, checkable=True)
        self.memories_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.memories_button.setArrowType(Qt.ArrowType.RightArrow)
        self.memories_button.setAutoRaise(True)
        self.memories_list = self._link_label("memoriesUsed")
        self.notice = self._link_label("memoryNotice")
        self.forget_batch: int | None = None  # the batch of the forget this reply's notice shows
        self.undo_forget_button = QPushButton("Undo")
        self.undo_forget_button.setObjectName("undoForget")
        self.undo_forget_button.hide()
        self.undo_forget_button.clicked.connect(self._undo_forget)
        self.copy_button = QPushButton("Copy")
        self.regenerate_button = QPushButton("Regenerate")
        self._layout()
        self.memories_button.toggled.connect(self._toggle_memories)
        self.copy_button.clicked.connect(self.copy)
        self.regenerate_button.clicked.connect(self.regenerateRequested)
        self.set_memories_used(None)
        self.set_regenerate_visible(False)
        self.set_streaming(streaming)
        if text:
            self.set_final_text(text)

    def _link_label(self, name: str) -> QLabel:
        label = QLabel(self)
        label.setObjectName(name)
        label.setWordWrap(True)
        label.setTextFormat(Qt.TextFormat.RichText)
        label.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)
        label.setOpenExternalLinks(False)
        label.linkActivated.connect(self._on_link)
        label.hide()
        return label

    def _layout(self) -> None:
        box = QVBoxLayout(self)
        box.setContentsMargins(8, 6, 8, 6)
        box.setSpacing(2)
        box.addWidget(self.header)
        box.addWidget(self.body)
        box.addWidget(self.memories_button)
        box.addWidget(self.memories_list)
        box.addWidget(self.notice)
        actions = QHBoxLayout()
        actions.addWidget(self.undo_forget_button)
        actions.addStretch(1)
        actions.addWidget(self.copy_button)
        actions.addWidget(self.regenerate_button)
        box.addLayout(actions)
        if self.role == "user":
            self.copy_button.hide()

    # --- content ----------------------------------------------------------------------------
    def append_stream(self, piece: str) -> None:
        """Insert streamed text at the end as plain text (incremental layout)."""
        if not piece:
            return
        self.raw_text += piece
        cursor = QTextCursor(self.body.document())
        cursor.movePosition(QTextCursor.MoveOperation.End)
        cursor.insertText(piece)

    def set_final_text(self, text: str) -> None:
        """The complete message: user text as plain text, assistant text rendered as Markdown."""
        self.raw_text = text
        if self.role == "assistant":
            self.body.document().setMarkdown(text, _MD)
        else:
            self.body.setPlainText(text)

    def set_streaming(self, streaming: bool) -> None:
        self.copy_button.setEnabled(not streaming)
        if streaming:
            self.header.setText("Assistant · writing…")
        elif self.role == "assistant":
            self.header.setText("Assistant")

    def mark_stopped(self) -> None:
        self.header.setText("Assistant · stopped")

    def set_memories_used(self, memories: Sequence[Memory] | None) -> None:
        """The answer agent's selection for this reply; hidden when there is none."""
        memories = list(memories or [])
        self.memories_button.setVisible(bool(memories) and self.role == "assistant")
        self.memories_button.setText(f"Memories used ({len(memories)})")
        self.memories_list.setText("<br>".join("• " + memory_link(m) for m in memories))
        self._toggle_memories(self.memories_button.isChecked())

    def _toggle_memories(self, shown: bool) -> None:
        self.memories_button.setArrowType(Qt.ArrowType.DownArrow if shown else Qt.ArrowType.RightArrow)
        self.memories_list.setVisible(shown and self.memories_button.isVisible())

    def show_notice(self, changes: MemoryChanges) -> None:
        """"Memory updated: added …, updated …, deleted …" — each item links to the memory."""
        groups = []
        for verb, rows in (("added", changes.added), ("updated", changes.updated), ("deleted", changes.deleted)):
            if rows:
                groups.append(f"{verb} " + ", ".join(memory_link(m, 60) for m in rows))
        if not groups or (self.forget_batch is not None and changes.batch_id == self.forget_batch):
            return  # the forget notice already says it
        self.notice.setText("<b>Memory updated:</b> " + "; ".join(groups))
        self.notice.show()

    def show_forget_notice(self, changes: MemoryChanges) -> None:
        """"Forgot 2 memories: … [Undo]" for a forget asked for in this chat; Undo emits
        `undoForgetRequested(batch)`."""
        rows = changes.deleted
        if not rows or changes.batch_id is None:
            return
        self.forget_batch = changes.batch_id
        n = len(rows)
        self.notice.setText(f"<b>Forgot {n} memor{'y' if n == 1 else 'ies'}:</b> "
                            + "; ".join(memory_link(m, 60) for m in rows))
        self.notice.show()
        self.undo_forget_button.setEnabled(True)
        self.undo_forget_button.show()

    def forget_undone(self, count: int) -> None:
        """The forget was undone: say so, and no second undo."""
        self.undo_forget_button.hide()
        self.notice.setText(f"<b>Undone:</b> {count} memor{'y is' if count == 1 else 'ies are'} back.")
        self.notice.show()

    def _undo_forget(self) -> None:
        if self.forget_batch is not None:
            self.undo_forget_button.setEnabled(False)
            self.undoForgetRequested.emit(self.forget_batch)

    def set_regenerate_visible(self, visible: bool) -> None:
        self.regenerate_button.setVisible(visible and self.role == "assistant")

    def copy(self) -> None:
        QGuiApplication.clipboard().setText(self.raw_text)

    def changeEvent(self, event) -> None:  # noqa: N802 - Qt naming
        """Light/dark switch: rich-text link colours are fixed when the text is set; set it again."""
        if event.type() == QEvent.Type.PaletteChange:
            for label in (self.memories_list, self.notice):
                if label.text():
                    text = label.text()
                    label.clear()
                    label.setText(text)
        super().changeEvent(event)

    def _on_link(self, link: str) -> None:
        if link.startswith("memory:"):
            try:
                self.memoryLinkActivated.emit(int(link.split(":", 1)[1]))
            except ValueError:
                pass


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
    `memoryLinkActivated(memory_id)`, `welcomeDismissed()`, `undoForgetRequested(batch_id)`.
    """

    sendRequested = Signal(str)
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
        self._build()
        self._warm_up()

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
        """Build and lay out one bubble of each kind at start-up, off screen: the first real one
        would otherwise pay for font and text-engine initialisation in the middle of a chat."""
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

    def submit(self) -> None:
        """Send what the input holds (Enter, the Send button; tests and dev tools call it)."""
        text = self.input.toPlainText().strip()
        if not text or not self.send_button.isVisible() or not self.send_button.isEnabled():
            return
        self.input.clear()
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
            widget = self._add(MessageWidget(msg.role, msg.content, message_id=msg.id))
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
        self.list_layout.insertWidget(self.list_layout.count() - 1, widget)
        self.messages.append(widget)
        return widget

    def remove_last_assistant(self) -> None:
        """Drop the last reply from the view (before regenerating it)."""
        if self.messages and self.messages[-1].role == "assistant":
            widget = self.messages.pop()
            self.list_layout.removeWidget(widget)
            widget.deleteLater()

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
                      cancelled: bool = False) -> MessageWidget | None:
        """Render the complete reply (Markdown) and its "memories used"."""
        widget = self.streaming
        self.stop_stream()
        if widget is None:
            return None
        widget.message_id = message_id
        widget.set_streaming(False)
        widget.set_final_text(text)
        widget.set_memories_used(memories)
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

