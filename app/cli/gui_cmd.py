"""`memory-r1 gui` (and `memory-r1` with no command): open the desktop app.

Registration imports nothing heavy; Qt is imported only when the app really starts. Where no
display exists (Linux/BSD without $DISPLAY or $WAYLAND_DISPLAY, and QT_QPA_PLATFORM not set to
an off-screen platform), or where Qt's X11 platform plugin could not start (a system
library it links is missing, or $DISPLAY names no reachable X server), one clear line is
printed on stderr and the exit code is 2 (NO_DISPLAY_EXIT) — no traceback, no Qt abort. The
code stays 2, not 0, so that a script can tell "the app did not open here" from "the app ran
and was closed"; the Makefile's `run` target treats 2 as a clean exit.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from app.cli.options import add_command

NO_DISPLAY_EXIT = 2
_HEADLESS_PLATFORMS = ("offscreen", "minimal", "vnc", "eglfs", "linuxfb")

# The shared libraries Qt 6's xcb platform plugin (plugins/platforms/libqxcb.so and
# libQt6XcbQpa) and QtGui link, by soname, with the Debian/Ubuntu package that ships each; the
# ones a minimal or server install lacks come first. Taken from `ldd` on the PySide6 6.11
# plugin. README.md lists the same packages.
XCB_LIBRARIES = {
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libxcb-util.so.1": "libxcb-util1",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxcb-render.so.0": "libxcb-render0",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libxcb.so.1": "libxcb1",
    "libEGL.so.1": "libegl1",
    "libGL.so.1": "libgl1",
    "libfontconfig.so.1": "libfontconfig1",
    "libdbus-1.so.3": "libdbus-1-3",
}


def register(subparsers) -> None:
    parser = add_command(subparsers, run_gui, "gui", help="open the desktop app (the default when no command is given)")
    # hidden: drive the real app once (chat, reply, exit) for packaging/smoke_check.py
    parser.add_argument("--smoke-test", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--timings", nargs="?", const="-", default=None, metavar="FILE",
                        help="time each start-up phase (imports, window shown, each model and the embedder "
                             "loaded, input enabled): printed on stderr, or written to FILE as JSON")
    # hidden: close the window as soon as it is usable (benchmarks/startup.py)
    parser.add_argument("--exit-when-ready", action="store_true", help=argparse.SUPPRESS)


def display_available(environ=None, platform: str | None = None) -> bool:
    """Whether Qt can open a window here (a display server, or an explicit off-screen platform)."""
    environ = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    qpa = environ.get("QT_QPA_PLATFORM", "").split(":", 1)[0].strip().lower()
    if qpa in _HEADLESS_PLATFORMS:
        return True
    if platform.startswith(("win", "darwin")):
        return True
    return bool(environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY"))


def _uses_xcb(environ, platform: str) -> bool:
    """Whether Qt will pick its X11 (xcb) platform plugin: Linux/BSD, QT_QPA_PLATFORM unset or
    "xcb", and an X display named (a Wayland-only session uses the wayland plugin)."""
    if platform.startswith(("win", "darwin")):
        return False
    qpa = environ.get("QT_QPA_PLATFORM", "").split(";", 1)[0].split(":", 1)[0].strip().lower()
    if qpa not in ("", "xcb"):
        return False
    return bool(environ.get("DISPLAY")) and (qpa == "xcb" or not environ.get("WAYLAND_DISPLAY"))


def _dlopen(soname: str) -> object:
    import ctypes

    return ctypes.CDLL(soname)


def _x_server_reachable(display: str, load: Callable[[str], object] = _dlopen) -> bool:
    """Whether libxcb can connect to the X server `display` (connect, check, disconnect)."""
    import ctypes

    try:
        xcb = load("libxcb.so.1")
        xcb.xcb_connect.restype = ctypes.c_void_p
        xcb.xcb_connect.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
        xcb.xcb_connection_has_error.argtypes = [ctypes.c_void_p]
        xcb.xcb_disconnect.argtypes = [ctypes.c_void_p]
        conn = xcb.xcb_connect(display.encode(), None)
        try:
            return xcb.xcb_connection_has_error(conn) == 0
        finally:
            xcb.xcb_disconnect(conn)
    except (OSError, AttributeError):  # no libxcb at all: said by the library check
        return True


def qt_platform_problem(environ=None, platform: str | None = None,
                        load: Callable[[str], object] | None = None) -> str | None:
    """One line saying why Qt's X11 platform plugin cannot start here, or None when it can
    (or when Qt will not use the xcb plugin at all).

    Qt aborts the whole process (SIGABRT, exit 134, a screenful of hints) when the xcb plugin
    fails to load; nothing can catch that once `QApplication` is being created. So, before
    Qt is imported, each shared library of `XCB_LIBRARIES` is opened with `load(soname)`
    (`ctypes.CDLL`: the dynamic loader's own search, ~1 ms for all of them, no subprocess, no
    `ldd`), and the missing ones are named by their Debian/Ubuntu package; then libxcb
    connects once to $DISPLAY to tell a stale DISPLAY (no X server there) apart. A check
    that itself fails says nothing (the start goes on as before). `load` raising OSError
    means "missing" (default `ctypes.CDLL`; tests inject one). Any thread; raises nothing.
    """
    environ = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    if not _uses_xcb(environ, platform):
        return None
    load = load or _dlopen
    missing = []
    for soname, package in XCB_LIBRARIES.items():
        try:
            load(soname)
        except OSError:
            missing.append(package)
        except Exception:  # noqa: BLE001 - a probe must never stop the start
            return None
    if missing:
        return ("memory-r1: the desktop app cannot start: Qt's X11 platform plugin needs system libraries "
                f"that are missing; install them with `sudo apt install {' '.join(missing)}` "
                "(Debian/Ubuntu; see README.md), or use `memory-r1 chat` for the terminal chat.")
    display = environ.get("DISPLAY", "")
    if not _x_server_reachable(display, load):
        return (f"memory-r1: cannot connect to the X display {display!r} (no X server there); run it on a "
                "desktop, or use `memory-r1 chat` for the terminal chat.")
    return None


def limit_blas_threads() -> None:
    """One OpenBLAS thread in the app process, set before numpy loads it.

    The app only does matrix-vector products (retrieval over the memory mirror); a multi-
    threaded BLAS spins its threads against llama.cpp's and the GUI's: measured here on a busy
    2-core machine, one top-k search took 33 ms with the default threads and 0.17 ms with one.
    """
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def run_gui(args) -> int:
    """Open the main window and run the event loop; returns the exit code."""
    if not display_available():
        print("memory-r1: no display found (neither DISPLAY nor WAYLAND_DISPLAY is set); run it on a "
              "desktop, or use `memory-r1 chat` for the terminal chat.", file=sys.stderr)
        return NO_DISPLAY_EXIT
    problem = qt_platform_problem()
    if problem:
        print(problem, file=sys.stderr)
        return NO_DISPLAY_EXIT
    limit_blas_threads()
    verbose = bool(getattr(args, "verbose", False))
    timings = getattr(args, "timings", None)
    if getattr(args, "smoke_test", False):
        from app.devtools.smoke import run_smoke

        return run_smoke(verbose=verbose, timings=timings)
    from app.gui.app import run

    return run(verbose=verbose, timings=timings, exit_when_ready=bool(getattr(args, "exit_when_ready", False)))
