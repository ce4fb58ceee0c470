"""The desktop app's start-up probe for Qt's X11 platform plugin: a missing system library or
an unreachable X server is one line naming the fix (exit 2), never Qt's abort (exit 134)."""

from __future__ import annotations

import pytest

from app.cli import gui_cmd, main


def _loader(missing: set[str], calls: list[str] | None = None):
    def load(soname: str):
        if calls is not None:
            calls.append(soname)
        if soname in missing:
            raise OSError(f"{soname}: cannot open shared object file: No such file or directory")
        return object()
    return load


def test_missing_xcb_libraries_are_named_by_their_packages():
    line = gui_cmd.qt_platform_problem({"DISPLAY": ":0"}, "linux",
                                       _loader({"libxcb-icccm.so.4", "libxcb-keysyms.so.1"}))
    assert line is not None and "\n" not in line
    assert "`sudo apt install libxcb-icccm4 libxcb-keysyms1`" in line
    assert "libxcb-cursor0" not in line and "memory-r1 chat" in line


def test_an_unreachable_x_server_is_said(monkeypatch):
    monkeypatch.setattr(gui_cmd, "_x_server_reachable", lambda display, load: False)
    line = gui_cmd.qt_platform_problem({"DISPLAY": ":99"}, "linux", _loader(set()))
    assert line is not None and "':99'" in line and "no X server" in line


def test_a_stale_display_is_detected_by_the_real_libxcb():
    try:
        gui_cmd._dlopen("libxcb.so.1")
    except OSError:
        pytest.skip("no libxcb here")
    assert gui_cmd._x_server_reachable(":4711") is False


@pytest.mark.parametrize("environ, platform", [
    ({"DISPLAY": ":0", "QT_QPA_PLATFORM": "offscreen"}, "linux"),
    ({"WAYLAND_DISPLAY": "wayland-0"}, "linux"),
    ({"WAYLAND_DISPLAY": "wayland-0", "DISPLAY": ":0", "QT_QPA_PLATFORM": "wayland"}, "linux"),
    ({"DISPLAY": ":0"}, "win32"),
    ({"DISPLAY": ":0"}, "darwin"),
])
def test_no_probe_where_qt_does_not_use_xcb(environ, platform):
    calls: list[str] = []
    assert gui_cmd.qt_platform_problem(environ, platform, _loader(set(gui_cmd.XCB_LIBRARIES), calls)) is None
    assert calls == []


def test_all_libraries_present_and_a_server_there_is_no_problem(monkeypatch):
    monkeypatch.setattr(gui_cmd, "_x_server_reachable", lambda display, load: True)
    calls: list[str] = []
    assert gui_cmd.qt_platform_problem({"DISPLAY": ":0", "QT_QPA_PLATFORM": "xcb"}, "linux",
                                       _loader(set(), calls)) is None
    assert calls == list(gui_cmd.XCB_LIBRARIES)


def test_a_probe_that_breaks_does_not_stop_the_start():
    def broken(soname):
        raise RuntimeError("ctypes misbehaving")
    assert gui_cmd.qt_platform_problem({"DISPLAY": ":0"}, "linux", broken) is None


def test_the_gui_command_prints_one_line_and_exits_2_before_qt_starts(monkeypatch, capsys, data_home):
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setattr(gui_cmd, "_dlopen", _loader({"libxcb-cursor.so.0"}))

    def no_qt(**kw):
        raise AssertionError("Qt was started although its platform plugin cannot load")

    monkeypatch.setattr("app.gui.app.run", no_qt)
    assert main(["gui"]) == gui_cmd.NO_DISPLAY_EXIT == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "libxcb-cursor0" in err[0] and "Traceback" not in err[0]


@pytest.mark.parametrize("argv", [[], ["gui"], ["-v"], ["--data-dir", "gui"], ["--data-dir=/d", "-v", "gui"],
                                  ["gui", "--timings"], ["gui", "--timings", "t.json", "--exit-when-ready"],
                                  ["--verbose", "gui", "--smoke-test"]])
def test_the_apps_command_line_parses_the_same_with_the_gui_command_alone(argv):
    from app.cli import build_parser, opens_the_app

    assert opens_the_app(argv)
    alone = build_parser(argv)
    assert list(alone._subparsers._group_actions[0].choices) == ["gui"]
    assert vars(alone.parse_args(argv)) == vars(build_parser().parse_args(argv))


@pytest.mark.parametrize("argv", [["-h"], ["--help", "gui"], ["memory", "list"], ["--data-dir", "d", "chat"],
                                  ["guix"], ["-vv", "gui"]])
def test_any_other_command_line_gets_every_command(argv):
    from app.cli import COMMAND_MODULES, build_parser, opens_the_app

    assert not opens_the_app(argv)
    choices = list(build_parser(argv)._subparsers._group_actions[0].choices)
    assert "memory" in choices and len(choices) >= len(COMMAND_MODULES) - 2  # eval/train may be absent


def test_gui_help_and_errors_read_as_with_every_command(capsys):
    from app.cli import build_parser

    for argv in (["gui", "--help"], ["gui", "--no-such-option"]):
        outs = []
        for parser in (build_parser(argv), build_parser()):
            with pytest.raises(SystemExit):
                parser.parse_args(argv)
            outs.append(capsys.readouterr())
        assert outs[0].out == outs[1].out and outs[0].err == outs[1].err and (outs[0].out or outs[0].err)
