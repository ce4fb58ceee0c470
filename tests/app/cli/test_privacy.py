"""Private by default: the data folder is 0700 and what the app writes in it 0600, whatever
the user's umask; an older install is fixed at start-up; an unwritable log does not stop a
command (it logs to stderr)."""

from __future__ import annotations

import os
import stat

import pytest

from app.cli import main
from core import paths
from core.fakes import HashEmbedder


def _mode(p) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


@pytest.fixture(autouse=True)
def fast_embedder(monkeypatch):
    monkeypatch.setattr("core.memory.bank.lazy_default_embedder", lambda: HashEmbedder())


@pytest.fixture
def loose_umask():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_a_fresh_data_folder_is_owner_only(tmp_path, monkeypatch, loose_umask, capsys):
    home = tmp_path / "home"
    monkeypatch.setenv(paths.ENV_HOME, str(home))
    assert main(["memory", "add", "Ann likes tea", "--json"]) == 0
    files = [p for p in home.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"memory.sqlite3", "memory-r1.log"}
    assert _mode(home) == 0o700 and _mode(home / "logs") == 0o700
    assert {p.name: _mode(p) for p in files} == {p.name: 0o600 for p in files}
    assert os.umask(0o022) == 0o022  # main() put the caller's umask back


def test_an_existing_install_is_fixed_at_start(tmp_path, monkeypatch, loose_umask, capsys):
    home = tmp_path / "home"
    (home / "logs").mkdir(parents=True)
    os.chmod(home, 0o755)
    (home / "settings.json").write_text("{}")
    os.chmod(home / "settings.json", 0o644)
    outside = tmp_path / "shared.txt"
    outside.write_text("x")
    os.chmod(outside, 0o644)
    (home / "link").symlink_to(outside)  # a link is not followed
    monkeypatch.setenv(paths.ENV_HOME, str(home))
    assert main(["memory", "list", "--json"]) == 0
    assert _mode(home) == 0o700 and _mode(home / "logs") == 0o700
    assert _mode(home / "settings.json") == 0o600
    assert _mode(outside) == 0o644
    assert paths.make_private(home) == 0  # nothing left to change


def test_an_unwritable_log_falls_back_to_stderr(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(paths.ENV_HOME, str(tmp_path / "home"))

    def refuse(base=None):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("app.logs.log_dir", refuse)
    assert main(["memory", "list", "--json"]) == 0
    err = capsys.readouterr().err
    assert err.count("cannot write the log file") == 1 and "Traceback" not in err
