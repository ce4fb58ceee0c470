"""The hidden `memory-r1 gui --smoke-test`: drive the real app once, for packaging checks.

It runs the real `app.gui.app.run()` (same bank, settings, model loading and shutdown as a
user's start) and, from inside its event loop, waits for the main window and the models, starts
a new chat, sends one message, waits for the reply from the embedded model and closes the window
(which lets the memory manager finish the turn, as at any exit). Progress goes to stdout as
lines `SMOKE {json}` with `t_s` = seconds since the process was created (psutil), so a caller
(packaging/smoke_check.py) can time start-up from outside the process too:

    window_shown  the main window is on screen (event loop running)
    ready         the models are loaded and the input is enabled (a usable window); `phases` =
                  the start-up phases so far (app/gui/timings.py, seconds since the process start)
    reply         the first reply arrived; `rss_mb` = resident memory at that moment
    done          the event loop ended; `ok` says whether the check passed

Exit code: 0 when a non-empty reply arrived and no error was reported, 1 otherwise (at once
when the window reports an error, e.g. a model that failed to load), 3 on timeout. Called on
the main thread; it needs a display or QT_QPA_PLATFORM=offscreen.
"""

from __future__ import annotations

import json
import time

SMOKE_MESSAGE = "Hi! My name is Ada and I love green tea. What do I like to drink?"
TIMEOUT_EXIT = 3


def _since_start() -> float:
    import psutil

    return round(time.time() - psutil.Process().create_time(), 3)


def emit(event: str, **fields) -> None:
    """One `SMOKE {json}` line on stdout (flushed)."""
    print("SMOKE " + json.dumps({"event": event, "t_s": _since_start(), **fields}), flush=True)


def run_smoke(message: str = SMOKE_MESSAGE, timeout_s: float = 600.0, verbose: bool = False,
              timings: str | None = None) -> int:
    """Run the app once as described in the module docstring; returns the exit code."""
    import psutil
    from PySide6.QtCore import QTimer

    from app.gui import app as gui_app
    from app.gui.main_window import MainWindow

    qapp = gui_app.init_qt_app()  # run() reuses this instance
    state: dict = {"window": None, "reply": None, "sent": False}

    def attach() -> None:  # first turn of the event loop: run() has shown the window
        windows = [w for w in qapp.topLevelWidgets() if isinstance(w, MainWindow)]
        if not windows:
            emit("error", message="no main window")
            qapp.exit(1)
            return
        window = state["window"] = windows[0]
        emit("window_shown", visible=window.isVisible())
        window.replyFinished.connect(on_reply)
        poll.start()
        if window.assistant is not None:
            start()
        else:
            window.assistantReady.connect(start)

    def start() -> None:
        window = state["window"]
        if state["sent"]:
            return
        state["sent"] = True
        from app.gui.timings import RECORDER

        emit("ready", input_enabled=window.chat.input.isEnabled(), phases=RECORDER.phases())
        window.new_chat()
        window.send(message)

    def on_reply(reply) -> None:
        if state["reply"] is not None:
            return
        state["reply"] = reply
        rss = psutil.Process().memory_info().rss
        emit("reply", rss_mb=round(rss / 2**20, 1), chars=len(reply.text), text=reply.text[:300],
             cancelled=bool(reply.cancelled))
        QTimer.singleShot(0, state["window"].close)

    def check_errors() -> None:  # a failed model load shows a dialog and waits: fail at once
        window = state["window"]
        if window is not None and window.errors and state["reply"] is None:
            emit("error", errors=[f"{type(e).__name__}: {e}" for e in window.errors])
            poll.stop()
            qapp.exit(1)

    def timeout() -> None:
        emit("timeout", after_s=timeout_s)
        qapp.exit(TIMEOUT_EXIT)

    poll = QTimer(qapp, interval=500)
    poll.timeout.connect(check_errors)
    QTimer.singleShot(0, attach)
    watchdog = QTimer(qapp, singleShot=True, interval=int(timeout_s * 1000))
    watchdog.timeout.connect(timeout)
    watchdog.start()
    code = gui_app.run(verbose=verbose, timings=timings)
    watchdog.stop()
    poll.stop()
    window, reply = state["window"], state["reply"]
    errors = [f"{type(e).__name__}: {e}" for e in (window.errors if window is not None else [])]
    ok = code == 0 and reply is not None and bool(reply.text.strip()) and not errors
    emit("done", ok=ok, exit_code=code, errors=errors)
    if code not in (0,):
        return code
    return 0 if ok else 1


__all__ = ["run_smoke", "emit", "SMOKE_MESSAGE"]
