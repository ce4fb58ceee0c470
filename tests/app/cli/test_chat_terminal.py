"""The terminal chat's line editing and history (readline; plain input() without it) and its
quiet terminal (no progress bars mid-conversation)."""

from __future__ import annotations

import os
import stat
import types

import pytest

from app.cli import chat_cmd, main
from tests.app.cli.test_chat_cli import feed_input, loader  # noqa: F401 - the fixture


class FakeReadline(types.SimpleNamespace):
    """The few readline calls LineEditing makes, over a list of lines."""

    def __init__(self, lines=()):
        super().__init__(lines=list(lines), length=None, read=[], written=[])

    def set_history_length(self, n):
        self.length = n

    def read_history_file(self, path):
        self.read.append(path)
        with open(path, encoding="utf-8") as fh:
            self.lines = fh.read().splitlines()

    def write_history_file(self, path):
        self.written.append(path)
        with open(path, "w", encoding="utf-8") as fh:  # as readline does: the umask decides
            fh.write("\n".join(self.lines[-self.length:]) + "\n")


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_history_is_loaded_and_saved_owner_only(tmp_path):
    path = tmp_path / "chat_history"
    path.write_text("earlier question\n")
    path.chmod(0o644)
    rl = FakeReadline()
    previous = os.umask(0o022)
    try:
        with chat_cmd.LineEditing(path, module=rl, interactive=True, platform="linux") as editing:
            assert editing.active and rl.lines == ["earlier question"] and _mode(path) == 0o600
            rl.lines.append("a new line")
    finally:
        os.umask(previous)
    assert rl.length == chat_cmd.HISTORY_LENGTH
    assert path.read_text().splitlines() == ["earlier question", "a new line"]
    assert _mode(path) == 0o600


def test_a_first_history_file_is_created_owner_only(tmp_path):
    path = tmp_path / "chat_history"
    rl = FakeReadline(["hello"])
    previous = os.umask(0o022)
    try:
        with chat_cmd.LineEditing(path, module=rl, interactive=True, platform="linux"):
            assert rl.read == []
    finally:
        os.umask(previous)
    assert path.read_text() == "hello\n" and _mode(path) == 0o600


def test_a_temporary_chat_writes_no_history(tmp_path):
    path = tmp_path / "chat_history"
    rl = FakeReadline(["secret"])
    with chat_cmd.LineEditing(path, save=False, module=rl, interactive=True, platform="linux"):
        pass
    assert rl.written == [] and not path.exists()


@pytest.mark.parametrize("interactive, platform", [(True, "win32"), (False, "linux")])
def test_no_readline_on_windows_or_a_pipe(tmp_path, interactive, platform):
    editing = chat_cmd.LineEditing(tmp_path / "h", interactive=interactive, platform=platform)
    with editing:
        assert not editing.active
    assert not (tmp_path / "h").exists()


def test_the_real_readline_round_trips_the_history(tmp_path):
    readline = pytest.importorskip("readline")
    path = tmp_path / "chat_history"
    with chat_cmd.LineEditing(path, module=readline, interactive=True, platform="linux"):
        readline.add_history("where does Maya live?")
    readline.clear_history()
    with chat_cmd.LineEditing(path, module=readline, interactive=True, platform="linux"):
        n = readline.get_current_history_length()
        assert readline.get_history_item(n) == "where does Maya live?"
    assert _mode(path) == 0o600
    readline.clear_history()


def test_an_unreadable_history_file_does_not_stop_the_chat(tmp_path, capsys):
    folder = tmp_path / "chat_history"
    folder.mkdir()  # a folder where the file should be: reading and writing fail
    rl = FakeReadline()
    rl.read_history_file = lambda p: (_ for _ in ()).throw(IsADirectoryError(21, "Is a directory"))
    with chat_cmd.LineEditing(folder, module=rl, interactive=True, platform="linux"):
        pass
    err = capsys.readouterr().err
    assert "chat history not loaded" in err and "chat history not saved" in err


def test_chat_uses_line_editing_with_the_history_in_the_data_dir_and_silences_progress_bars(
        loader, monkeypatch, capsys, data_home):  # noqa: F811
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    rl = FakeReadline()
    monkeypatch.setitem(__import__("sys").modules, "readline", rl)
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("sys.platform", "linux")
    feed_input(monkeypatch, ["hello there", "/quit"])
    assert main(["chat"]) == 0
    assert rl.written == [str(data_home / chat_cmd.HISTORY_FILE)]
    assert _mode(data_home / chat_cmd.HISTORY_FILE) == 0o600
    assert os.environ.get("TQDM_DISABLE") == "1" and os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS") == "1"
    assert "assistant> fine" in capsys.readouterr().out
