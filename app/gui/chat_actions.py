"""The chat actions of a sent conversation, wired to the main window: edit a sent message and
send it again (the later messages are replaced and what their turns wrote to memory is undone,
with a notice), and page through a reply's versions. GUI thread only; the work runs on the
window's task runner (model lane for the reply, db lane for a version switch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.gui.main_window import MainWindow


def connect_chat_actions(window: "MainWindow") -> None:
    window.chat.editRequested.connect(lambda mid, text: edit_message(window, mid, text))
    window.chat.versionRequested.connect(lambda mid, index: select_version(window, mid, index))


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
