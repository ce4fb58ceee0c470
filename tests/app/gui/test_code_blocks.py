"""Code blocks in a reply: highlighted, with a "Copy code" link that copies just that block
(real widgets, the real pipeline, a scripted model)."""

from __future__ import annotations

from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QGuiApplication

from core.fakes import FakeBackend

from app.gui.bubbles import MessageWidget

REPLY = ("Try this:\n\n```python\ndef greet(name):\n    return 'hi ' + name  # say hi\n```\n\n"
         "and run:\n\n```\nls -la\n```")


def test_reply_code_blocks_are_highlighted_and_copyable(qtbot, make_window, manager_backend):
    window = make_window(FakeBackend(default=REPLY), manager_backend)
    with qtbot.waitSignal(window.replyFinished, timeout=10_000):
        window.chat.input.setPlainText("How do I greet?")
        qtbot.keyClick(window.chat.input, Qt.Key.Key_Return)
    body = window.chat.messages[-1].body
    assert body.code_blocks == ["def greet(name):\n    return 'hi ' + name  # say hi", "ls -la"]
    html = body.toHtml()
    assert 'href="copy:0"' in html and 'href="copy:1"' in html and "python · " in body.toPlainText()
    try:
        import pygments  # noqa: F401
    except ImportError:
        pass
    else:  # keywords get their own colour
        assert "color:#b04dd6;\">def</span>" in html
    body.anchorClicked.emit(QUrl("copy:0"))
    assert QGuiApplication.clipboard().text() == body.code_blocks[0]
    body.anchorClicked.emit(QUrl("copy:1"))
    assert QGuiApplication.clipboard().text() == "ls -la"
    window.chat.messages[-1].copy_button.click()  # the whole reply, as written
    assert QGuiApplication.clipboard().text() == REPLY


def test_a_user_message_is_never_parsed_as_code(qtbot):
    bubble = MessageWidget("user", "```python\nx = 1\n```")
    qtbot.addWidget(bubble)
    assert bubble.body.code_blocks == [] and bubble.body.toPlainText() == "```python\nx = 1\n```"
