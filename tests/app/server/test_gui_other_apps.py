"""The GUI side (real widgets, offscreen): Settings' "Use your memory in other apps" (the MCP JSON
and its Copy button; the switch starts a real in-process server on a free loopback port that a
real HTTP GET /v1/models answers, and stops it), and the memory panel reloading when another
connection (another process) writes to the bank."""

from __future__ import annotations

import http.client
import json

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QtMsgType, qInstallMessageHandler  # noqa: E402

from core.config import Settings  # noqa: E402
from core.fakes import FakeBackend  # noqa: E402
from core.llm.modelset import ModelSet  # noqa: E402


@pytest.fixture(autouse=True)
def fail_on_qt_warnings(qapp):
    seen: list[str] = []

    def handler(mode, context, message):
        if mode in (QtMsgType.QtWarningMsg, QtMsgType.QtCriticalMsg, QtMsgType.QtFatalMsg) \
                and "propagateSizeHints" not in message:
            seen.append(message)

    previous = qInstallMessageHandler(handler)
    yield
    qInstallMessageHandler(previous)
    assert not seen, seen


def _get_models(port: int, key: str):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/v1/models", headers={"Authorization": f"Bearer {key}"})
    resp = conn.getresponse()
    out = resp.status, json.loads(resp.read())
    conn.close()
    return out


def test_settings_shows_mcp_config_and_switch_runs_a_real_server(qtbot, bank, data_home):
    from PySide6.QtGui import QGuiApplication

    from app.gui.settings_dialog import SettingsDialog
    from app.server.http_server import LocalServer, new_api_key

    server = LocalServer(bank, models=ModelSet.of(answer=FakeBackend(default="hi")), api_key=new_api_key())
    dialog = SettingsDialog(Settings(), data_home, server=server)
    qtbot.addWidget(dialog)
    dialog.show()
    box = dialog.other_apps
    config = json.loads(box.config.toPlainText())
    entry = config["mcpServers"]["memory-r1"]
    assert entry["args"][-1] == "mcp" and entry["command"].startswith("/")
    assert "--data-dir" in entry["args"]  # MEMORY_R1_HOME is set here: the same folder is passed on
    box.copy.click()
    assert json.loads(QGuiApplication.clipboard().text()) == config

    assert not box.switch.isChecked() and box.address.text() == ""
    box.switch.setChecked(True)
    try:
        assert server.running and box.address.text() == server.url
        assert server.url.startswith("http://127.0.0.1:")
        assert box.key.text() == server.api_key
        status, body = _get_models(server.port, box.key.text())
        assert status == 200 and body["data"][0]["id"] == "memory-r1"
        assert _get_models(server.port, "wrong")[0] == 401
    finally:
        box.switch.setChecked(False)
    assert not server.running and box.address.text() == ""
    with pytest.raises(OSError):
        _get_models(server.port, server.api_key)


def test_switch_is_disabled_without_a_server(qtbot, data_home):
    from app.gui.settings_dialog import SettingsDialog

    dialog = SettingsDialog(Settings(), data_home)
    qtbot.addWidget(dialog)
    assert not dialog.other_apps.switch.isEnabled()


def test_memory_panel_reloads_when_another_connection_writes(qtbot, bank, make_bank, data_home):
    from app.gui.memory_panel import MemoryPanel
    from app.gui.tasks import TaskRunner

    runner = TaskRunner()
    panel = MemoryPanel(bank, runner)
    qtbot.addWidget(panel)
    panel.external_poll.setInterval(50)
    with qtbot.waitSignal(panel.loaded, timeout=5000):
        panel.refresh()
    assert panel.model.rowCount() == 0
    other = make_bank(data_home / "memory.sqlite3")  # another connection, as another process has
    other.add("Ann moved to Lisbon.", actor="tool")
    with qtbot.waitSignal(panel.loaded, timeout=5000):
        pass
    assert panel.model.rowCount() == 1
    panel.external_poll.stop()
    runner.shutdown()

