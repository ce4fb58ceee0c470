"""Smoke test of the chat basics with the real embedded GGUF (SmolLM2-135M) through the real
window: the reply's statistics line, regenerate's versions, and edit and resend. Asserts on
structure and storage, not on the tiny model's wording."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_stats_versions_and_edit_with_the_embedded_model(qtbot, bank, data_home):
    from app.gui.app import make_assistant_factory, shutdown_window
    from app.gui.main_window import MainWindow
    from core.config import Settings

    settings = Settings(welcome_shown=True, max_tokens=24, temperature=0.7, system_prompt="Answer in one sentence.")
    window = MainWindow(bank, settings, assistant_factory=make_assistant_factory(bank),
                        settings_file=data_home / "settings.json", log_path=data_home / "logs" / "memory-r1.log")
    window.show()
    try:
        qtbot.waitSignal(window.assistantReady, timeout=120_000).wait()
        with qtbot.waitSignal(window.replyFinished, timeout=180_000) as blocker:
            window.chat.input.setPlainText("I have a cat called Tom.")
            window.chat.submit()
        reply = blocker.args[0]
        meta = bank.chats.get_message(reply.message_id).meta
        assert "SmolLM2" in meta["model"] and meta["ttft_s"] > 0
        bubble = window.chat.messages[-1]
        assert bubble.stats.text().startswith(meta["model"]) and "first token" in bubble.stats.text()
        with qtbot.waitSignal(window.replyFinished, timeout=180_000):
            bubble.regenerate_button.click()
        assert window.chat.messages[-1].version_label.text() == "2/2"
        assert window.assistant.wait_idle(120)
        user = window.chat.messages[0]
        qtbot.waitUntil(user.edit_button.isVisible)
        user.edit_button.click()
        user.editor.setPlainText("I have a dog called Rex.")
        with qtbot.waitSignal(window.replyFinished, timeout=180_000) as blocker:
            user.edit_send.click()
        edited = blocker.args[0]
        assert [m.content for m in bank.chats.messages(window.current_conversation.id)][0] == "I have a dog called Rex."
        assert edited.undone is not None and not edited.cancelled
        assert window.assistant.wait_idle(120)
        assert not any("Tom" in m.text for m in bank.list())  # what the replaced turn wrote is undone
        assert window.errors == []
    finally:
        window.close()
        qtbot.waitUntil(lambda: not window.isVisible(), timeout=60_000)
        shutdown_window(window)
        window.deleteLater()
        qtbot.wait(1)
