"""One chat message as a bubble: the text (Markdown for replies, code blocks highlighted with
a Copy button), "memories used", notices, the reply's versions pager and statistics, and the
inline editor of a sent user message. GUI thread only.
"""

from __future__ import annotations

import html
from typing import Sequence

from PySide6.QtCore import QEvent, QRectF, QSize, Qt, QUrl, Signal
from PySide6.QtGui import (QDesktopServices, QGuiApplication, QPainter, QPalette, QPen, QTextCursor,
                           QTextDocument)
from PySide6.QtWidgets import (QFrame, QHBoxLayout, QLabel, QPlainTextEdit, QPushButton,
                               QSizePolicy, QTextBrowser, QToolButton, QVBoxLayout)

from core.types import Memory, MemoryChanges

from app.gui.code_blocks import COPY_SCHEME, decorate_code

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
        self.code_blocks: list[str] = []  # the code of each "Copy code" link ("copy:<n>")
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

    def _open_link(self, url: QUrl) -> None:
        if url.scheme() == COPY_SCHEME:
            try:
                QGuiApplication.clipboard().setText(self.code_blocks[int(url.path())])
            except (ValueError, IndexError):
                pass
        elif url.scheme() in ("http", "https", "mailto"):
            QDesktopServices.openUrl(url)


class MessageWidget(Bubble):
    """One chat message. Assistant messages carry "memories used", actions and notices."""

    memoryLinkActivated = Signal(int)
    regenerateRequested = Signal()
    undoForgetRequested = Signal(int)  # the forget's batch id
    editRequested = Signal(int, str)  # a user message's id, its new text
    versionRequested = Signal(int, int)  # a reply's id, the version index to show

    def __init__(self, role: str, text: str = "", *, message_id: int | None = None,
                 streaming: bool = False, meta: dict | None = None, parent=None) -> None:
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
        self.undone_notice = self._link_label("undoneNotice")
        self.forget_batch: int | None = None  # the batch of the forget this reply's notice shows
        self.undo_forget_button = QPushButton("Undo")
        self.undo_forget_button.setObjectName("undoForget")
        self.undo_forget_button.hide()
        self.undo_forget_button.clicked.connect(self._undo_forget)
        self.copy_button = QPushButton("Copy")
        self.regenerate_button = QPushButton("Regenerate")
        self.edit_button = QPushButton("Edit")
        self.edit_button.setObjectName("editMessage")
        self.edit_button.setToolTip("Edit this message and send it again (the later messages are replaced)")
        self.editor = QPlainTextEdit(self)
        self.editor.setObjectName("messageEditor")
        self.editor.hide()
        self.edit_send = QPushButton("Send")
        self.edit_cancel = QPushButton("Cancel")
        for b in (self.edit_send, self.edit_cancel):
            b.hide()
        self.prev_button = QToolButton(self)
        self.prev_button.setArrowType(Qt.ArrowType.LeftArrow)
        self.prev_button.setAutoRaise(True)
        self.prev_button.setToolTip("Previous version of this reply")
        self.next_button = QToolButton(self)
        self.next_button.setArrowType(Qt.ArrowType.RightArrow)
        self.next_button.setAutoRaise(True)
        self.next_button.setToolTip("Next version of this reply")
        self.version_label = QLabel(self)
        self.version_label.setObjectName("versionLabel")
        self.stats = QLabel(self)
        self.stats.setObjectName("replyStats")
        self.stats.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        self.stats.hide()
        self.versions = 1
        self.version = 0
        self._layout()
        self.memories_button.toggled.connect(self._toggle_memories)
        self.copy_button.clicked.connect(self.copy)
        self.regenerate_button.clicked.connect(self.regenerateRequested)
        self.edit_button.clicked.connect(self.start_edit)
        self.edit_cancel.clicked.connect(self.cancel_edit)
        self.edit_send.clicked.connect(self._send_edit)
        self.prev_button.clicked.connect(lambda: self._page(-1))
        self.next_button.clicked.connect(lambda: self._page(1))
        self.set_memories_used(None)
        self.set_regenerate_visible(False)
        self.set_streaming(streaming)
        if text:
            self.set_final_text(text)
        self.set_meta(meta)

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
        box.addWidget(self.undone_notice)
        box.addWidget(self.editor)
        box.addWidget(self.stats)
        actions = QHBoxLayout()
        actions.addWidget(self.undo_forget_button)
        actions.addWidget(self.prev_button)
        actions.addWidget(self.version_label)
        actions.addWidget(self.next_button)
        actions.addStretch(1)
        actions.addWidget(self.edit_send)
        actions.addWidget(self.edit_cancel)
        actions.addWidget(self.edit_button)
        actions.addWidget(self.copy_button)
        actions.addWidget(self.regenerate_button)
        box.addLayout(actions)
        if self.role == "user":
            self.copy_button.hide()
        else:
            self.edit_button.hide()

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
            self.body.code_blocks = decorate_code(self.body.document())
        else:
            self.body.setPlainText(text)
            self.body.code_blocks = []

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

    def show_undone_notice(self, count: int) -> str:
        """After an edit and resend: what undoing the replaced messages' memory changes did."""
        text = f"Undid {count} memory change{'' if count == 1 else 's'} from the replaced messages"
        self.undone_notice.setText(f"<b>{html.escape(text)}.</b>")
        self.undone_notice.show()
        return text

    def _undo_forget(self) -> None:
        if self.forget_batch is not None:
            self.undo_forget_button.setEnabled(False)
            self.undoForgetRequested.emit(self.forget_batch)

    # --- reply versions and statistics -------------------------------------------------------
    def set_meta(self, meta: dict | None) -> None:
        """A reply's stored meta: its versions (the "< 2/3 >" pager) and, under it, the model,
        tokens/s and time to first token."""
        meta = meta or {}
        versions = meta.get("versions")
        self.versions = len(versions) if isinstance(versions, list) and versions else 1
        version = meta.get("version", self.versions - 1)
        self.version = version if isinstance(version, int) and 0 <= version < self.versions else self.versions - 1
        paged = self.role == "assistant" and self.versions > 1
        for w in (self.prev_button, self.version_label, self.next_button):
            w.setVisible(paged)
        self.version_label.setText(f"{self.version + 1}/{self.versions}")
        self.prev_button.setEnabled(self.version > 0)
        self.next_button.setEnabled(self.version < self.versions - 1)
        text = reply_stats(meta) if self.role == "assistant" else ""
        self.stats.setText(text)
        self.stats.setVisible(bool(text))

    def _page(self, step: int) -> None:
        index = self.version + step
        if self.message_id is not None and 0 <= index < self.versions:
            self.versionRequested.emit(self.message_id, index)

    # --- editing a sent message ---------------------------------------------------------------
    def set_editable(self, editable: bool) -> None:
        """The Edit button of a user message (hidden while a reply is generated)."""
        self.edit_button.setVisible(editable and self.role == "user" and not self.editor.isVisible())

    def start_edit(self) -> None:
        """Show the message's text in an editor with Send and Cancel."""
        self.editor.setPlainText(self.raw_text)
        self.editor.setFixedHeight(max(60, int(self.body.height()) + 24))
        self.body.hide()
        self.editor.show()
        self.edit_send.show()
        self.edit_cancel.show()
        self.edit_button.hide()
        self.editor.setFocus()

    def cancel_edit(self) -> None:
        self.editor.hide()
        self.edit_send.hide()
        self.edit_cancel.hide()
        self.body.show()
        self.edit_button.show()

    def _send_edit(self) -> None:
        text = self.editor.toPlainText().strip()
        if not text or self.message_id is None:
            return
        self.cancel_edit()
        self.editRequested.emit(self.message_id, text)

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


def reply_stats(meta: dict) -> str:
    """"SmolLM2-135M · 41.2 tokens/s · first token 0.31 s" from a reply's meta ("" if none)."""
    parts = []
    if meta.get("model"):
        parts.append(str(meta["model"]))
    speed, ttft = meta.get("tokens_per_s"), meta.get("ttft_s")
    if isinstance(speed, (int, float)):
        parts.append(f"{speed:.1f} tokens/s")
    if isinstance(ttft, (int, float)):
        parts.append(f"first token {ttft:.2f} s")
    return " · ".join(parts)
