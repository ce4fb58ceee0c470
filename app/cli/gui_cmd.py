"""`memory-r1 gui` (and `memory-r1` with no command): open the desktop app.

Registration imports nothing heavy; Qt is imported only when the app really starts. Where no
display exists (Linux/BSD without $DISPLAY or $WAYLAND_DISPLAY, and QT_QPA_PLATFORM not set to
an off-screen platform), one clear line is printed on stderr and the exit code is 2 — no
traceback, no Qt abort.
"""

from __future__ import annotations

import argparse
import os
import sys

from app.cli.options import add_command

NO_DISPLAY_EXIT = 2
_HEADLESS_PLATFORMS = ("offscreen", "minimal", "vnc", "eglfs", "linuxfb")


def register(subparsers) -> None:
    parser = add_command(subparsers, run_gui, "gui", help="open the desktop app (the default when no command is given)")
    # hidden: drive the real app once (chat, reply, exit) for packaging/smoke_check.py
    parser.add_argument("--smoke-test", action="store_true", help=argparse.SUPPRESS)


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
    limit_blas_threads()
    verbose = bool(getattr(args, "verbose", False))
    if getattr(args, "smoke_test", False):
        from app.devtools.smoke import run_smoke

        return run_smoke(verbose=verbose)
    from app.gui.app import run

    return run(verbose=verbose)
