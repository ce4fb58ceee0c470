"""The chat actions of a sent conversation, wired to the main window: edit a sent message and
send it again (the later messages are replaced and what their turns wrote to memory is undone,
with a notice), page through a reply's versions, set a chat's own system prompt, export a chat
(Markdown or JSON). GUI thread only; the work runs on the
window's task runner (model lane for the reply, db lane for a version switch).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QFileDialog, QInputDialog

from core.chat_export import export_chat

if TYPE_CHECKING:
    from app.gui.main_window import MainWindow


def connect_chat_actions(window: "MainWindow") -> None:
    window.chat.editRequested.connect(lambda mid, text: edit_message(window, mid, text))
    window.chat.versionRequested.connect(lambda mid, index: select_version(window, mid, index))
    window.conversations.systemPromptRequested.connect(lambda cid: ask_system_prompt(window, cid))
    window.conversations.exportRequested.connect(lambda cid, fmt: ask_export(window, cid, fmt))
    _add_file_menu_exports(window)


def _add_file_menu_exports(window: "MainWindow") -> None:
    """File > "Export chat as Markdown…" / "…JSON…" (the shown chat), above "Export memories…"."""
    file_menu = next((a.menu() for a in window.menuBar().actions() if a.text() == "&File"), None)
    if file_menu is None:
        return
    before = next((a for a in file_menu.actions() if a.text() == "Export memories…"), None)
    window.export_chat_actions = {}
    for fmt, text in (("markdown", "Export chat as Markdown…"), ("json", "Export chat as JSON…")):
        action = QAction(text, window)
        action.triggered.connect(lambda _checked=False, f=fmt: window.current_conversation is not None
                                 and ask_export(window, window.current_conversation.id, f))
        file_menu.insertAction(before, action) if before is not None else file_menu.addAction(action)
        window.export_chat_actions[fmt] = action


def edit_message(window: "MainWindow", message_id: int, text: str) -> None:
    """Replace user message `message_id` of the shown chat by `text` and stream the new reply
    (`Assistant.edit_and_resend`); ignored while a reply is generated or the models load."""
    conv = window.current_conversation
    assistant = window.assistant
    if assistant is None or window.busy() or conv is None or not text.strip():
        return
    window.chat.remove_from(message_id)
    window.chat.add_user_message(text)

    def run(cancel, buffer):  # model worker
        return None, conv.id, assistant.edit_and_resend(conv.id, message_id, text, on_token=buffer.append,
                                                        cancel=cancel, temporary=conv.temporary)

    window.begin_reply(run, "edit and resend")


def select_version(window: "MainWindow", message_id: int, index: int) -> None:
    """Show version `index` of a reply, stored so the next turn's history is what is shown."""
    if window.busy():
        return
    chats = window.bank.chats

    def done(msg) -> None:
        widget = window.chat.message_widget(message_id)
        if widget is not None:
            widget.set_final_text(msg.content)
            widget.set_meta(msg.meta)

    window.runner.submit(chats.select_version, message_id, index, name="reply version", on_done=done,
                         on_error=window.report)


def ask_system_prompt(window: "MainWindow", conversation_id: int) -> QInputDialog:
    """The chat's own system prompt in a (non-modal) dialog; empty = the default in Settings."""
    chats = window.bank.chats
    dialog = QInputDialog(window)
    dialog.setObjectName("chatSystemPrompt")
    dialog.setWindowTitle("Chat system prompt")
    dialog.setLabelText("Instructions for this chat (empty: the default in Settings).\n"
                        "The memory instructions always stay.")
    dialog.setOption(QInputDialog.InputDialogOption.UsePlainTextEditForTextInput)
    dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    dialog.textValueSelected.connect(lambda text: window.runner.submit(
        chats.set_system_prompt, conversation_id, text, name="chat system prompt",
        on_done=lambda _r: window.statusBar().showMessage("Chat system prompt saved.", 5000),
        on_error=window.report))

    def shown(text) -> None:
        dialog.setTextValue(text or "")
        dialog.open()

    window.runner.submit(chats.system_prompt, conversation_id, name="read system prompt", on_done=shown,
                         on_error=window.report)
    return dialog


def ask_export(window: "MainWindow", conversation_id: int, fmt: str) -> QFileDialog:
    """Choose where to save the chat, then `export_to`."""
    suffix = ".md" if fmt == "markdown" else ".json"
    row = window.conversations.model.row_of(conversation_id)
    title = window.conversations.model.conversation_at(row).title if row is not None else "chat"
    name = "".join(c if c.isalnum() or c in " -_" else "_" for c in title).strip() or "chat"
    dialog = QFileDialog(window, "Export chat", str(Path.home() / f"{name}{suffix}"),
                         "Markdown (*.md)" if fmt == "markdown" else "JSON (*.json)")
    dialog.setObjectName("exportChat")
    dialog.setAcceptMode(QFileDialog.AcceptMode.AcceptSave)
    dialog.setDefaultSuffix(suffix[1:])
    dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    dialog.fileSelected.connect(lambda path: export_to(window, conversation_id, Path(path), fmt))
    dialog.open()
    return dialog


def export_to(window: "MainWindow", conversation_id: int, path: Path, fmt: str | None = None) -> None:
    """Write the chat to `path` on the db worker; the status bar says where (errors: dialog)."""
    chats = window.bank.chats
    window.runner.submit(export_chat, chats, conversation_id, path, fmt, name="export chat",
                         on_done=lambda p: window.statusBar().showMessage(f"Chat exported to {p}.", 8000),
                         on_error=window.report)
