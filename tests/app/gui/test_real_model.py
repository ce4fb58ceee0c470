"""Smoke test with the real embedded GGUF (SmolLM2-135M) through the real window, wired by the
same factory `run_gui` uses. Asserts on structure and storage, not on the tiny model's wording."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_chat_with_the_embedded_model(qtbot, bank, data_home):
    from app.gui.app import make_assistant_factory
    from app.gui.main_window import MainWindow
    from core.config import Settings

    settings = Settings(welcome_shown=True, max_tokens=48, temperature=0.0)
    window = MainWindow(bank, settings, assistant_factory=make_assistant_factory(bank),
                        settings_file=data_home / "settings.json", log_path=data_home / "logs" / "memory-r1.log")
    window.show()
    try:
        qtbot.waitSignal(window.assistantReady, timeout=120_000).wait()
        assert "SmolLM2" in window.model_label.text()
        with qtbot.waitSignal(window.replyFinished, timeout=180_000) as blocker:
            window.chat.input.setPlainText("Hi! My name is Sam and I have a cat called Tom.")
            window.chat.submit()
        reply = blocker.args[0]
        assert reply.text.strip() and not reply.cancelled
        stored = bank.chats.messages(window.current_conversation.id)
        assert [m.role for m in stored] == ["user", "assistant"] and stored[1].content == reply.text
        bubble = window.chat.messages[-1]
        assert bubble.message_id == reply.message_id and bubble.body.toPlainText().strip()
        assert window.errors == []
    finally:
        window.close()
        qtbot.waitUntil(lambda: not window.isVisible(), timeout=60_000)
        from app.gui.app import shutdown_window

        shutdown_window(window)
        window.deleteLater()
        qtbot.wait(1)
