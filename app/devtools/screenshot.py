"""Screenshots of the real app for the docs: `python -m app.devtools.screenshot OUT_DIR`.

Runs the real window on a fresh data folder (unless $MEMORY_R1_HOME is set) with the real
embedder and the embedded model, performs a short chat, and saves `window.grab()` images:
the first run (welcome + model loading), a chat with a "memory updated" notice, a reply with
its "memories used" list open, the memory panel's history dialog, the settings dialog, and the
same chat in a dark palette; the first-run card and a chat in a window of 800x600
(`take_first_run_and_small`); `take_provenance` (`--provenance`: only those) a memory's "Where
it came from" pane and the memory history with its "not saved" rows, after a chat turn and a few
ingested turns; `take_chat_basics` (`--chat-basics`: only that) a regenerated reply's pager and
statistics beside the memory search. Meant for a desktop or `xvfb-run -a -s "-screen 0 1280x800x24"`.
Main thread only; waits on signals with a timeout (never sleeps the event loop).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path


def _wait(signal, timeout_s: float) -> list | None:
    """Run the event loop until `signal` fires (its args) or the timeout passes (None)."""
    from PySide6.QtCore import QEventLoop, QTimer

    loop, got = QEventLoop(), []
    signal.connect(lambda *args: (got.append(list(args)), loop.quit()))
    QTimer.singleShot(int(timeout_s * 1000), loop.quit)
    loop.exec()
    return got[0] if got else None


def _resize(window, width: int, height: int) -> None:
    """The window at this size with the first-run splitter of a window that wide (as a screen
    with room for it would open it), not the sizes it had for the offscreen screen."""
    from app.gui.layout import splitter_sizes

    window.resize(width, height)
    window.splitter.setSizes(splitter_sizes(width))


def _settle(ms: int = 300) -> None:
    from PySide6.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec()


def _say(window, text: str, timeout_s: float = 300) -> object:
    window.chat.input.setPlainText(text)
    window.chat.submit()
    got = _wait(window.replyFinished, timeout_s)
    return got[0] if got else None


def _light(app) -> None:
    """Back to the platform's light palette (after a dark shot, or a dark system theme)."""
    hints = app.styleHints()
    if hasattr(hints, "unsetColorScheme"):
        hints.unsetColorScheme()
    app.setPalette(app.style().standardPalette())


def _close(app, window, bank, assistant=None) -> None:
    """Close the window, wait until it is gone, stop its models (or `assistant`), close the bank."""
    from app.gui.app import shutdown_window

    window.close()
    while window.isVisible():
        app.processEvents()
    if assistant is not None:
        assistant.close()
    else:
        shutdown_window(window)
    bank.close()


def _dark_palette():
    from PySide6.QtGui import QColor, QPalette

    pal = QPalette()
    roles = {QPalette.ColorRole.Window: "#202124", QPalette.ColorRole.WindowText: "#e8eaed",
             QPalette.ColorRole.Base: "#292a2d", QPalette.ColorRole.AlternateBase: "#35363a",
             QPalette.ColorRole.Text: "#e8eaed", QPalette.ColorRole.Button: "#303134",
             QPalette.ColorRole.ButtonText: "#e8eaed", QPalette.ColorRole.Highlight: "#8ab4f8",
             QPalette.ColorRole.HighlightedText: "#202124", QPalette.ColorRole.Link: "#8ab4f8",
             QPalette.ColorRole.Mid: "#5f6368", QPalette.ColorRole.Midlight: "#4a4b4f",
             QPalette.ColorRole.ToolTipBase: "#303134", QPalette.ColorRole.ToolTipText: "#e8eaed"}
    for role, color in roles.items():
        pal.setColor(role, QColor(color))
    for role in (QPalette.ColorRole.WindowText, QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText):
        pal.setColor(QPalette.ColorGroup.Disabled, role, QColor("#80868b"))
    return pal


def _go_dark(app) -> None:
    """What a system switch to dark mode does (Qt >= 6.8), else a dark palette."""
    from PySide6.QtCore import Qt

    hints = app.styleHints()
    if hasattr(hints, "setColorScheme"):
        hints.setColorScheme(Qt.ColorScheme.Dark)
    _settle(300)
    if app.palette().window().color().lightness() > 128:  # no platform theme (bare X11/xvfb)
        app.setPalette(_dark_palette())  # what a desktop's dark theme hands to Qt


def take(out_dir: Path) -> list[Path]:
    from app.gui.app import init_qt_app, make_assistant_factory
    from app.gui.main_window import MainWindow
    from app.gui.memory_panel import HistoryDialog
    from app.gui.settings_dialog import SettingsDialog
    from app.logs import setup_logging
    from core.config import Settings, settings_path
    from core.memory.bank import MemoryBank

    out_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MEMORY_R1_HOME", tempfile.mkdtemp(prefix="memory-r1-shots-"))
    log_path = setup_logging(stderr=False)
    app = init_qt_app()
    bank = MemoryBank.open()
    settings = Settings.load(settings_path())
    settings.max_tokens = 120
    window = MainWindow(bank, settings, assistant_factory=make_assistant_factory(bank), log_path=log_path)
    _resize(window, 1280, 800)
    window.show()
    saved: list[Path] = []

    def shot(name: str, widget=None) -> None:
        _settle()
        path = out_dir / f"{name}.png"
        (widget or window).grab().save(str(path))
        saved.append(path)

    shot("01-first-run-loading")
    _skip_first_run(window)
    if window.assistant is None and _wait(window.assistantReady, 300) is None:
        raise SystemExit("the models did not load; see " + str(log_path))
    window.chat.welcome.button.click()
    _say(window, "Hi! I'm Sam. I live in Lisbon and I have a dog called Rex.")
    _wait(window.memoryNotice, 240)  # the background manager (the tiny model may find nothing)
    _say(window, "Remember that my sister Ana is a nurse in Porto.")
    shot("02-chat-memory-updated")
    _say(window, "What do you know about my sister?")
    last = window.chat.messages[-1]
    if last.memories_button.isVisible():
        last.memories_button.click()
    shot("03-reply-with-memories-used")
    window.memory.select_memory(bank.list()[0].id)
    _settle(600)
    window.memory.show_history()
    _settle(600)
    dialogs = [d for d in window.memory.findChildren(HistoryDialog) if d.isVisible()]
    if dialogs:
        shot("04-memory-history", dialogs[0])
        dialogs[0].accept()
    window.open_settings()
    dialogs = [d for d in window.findChildren(SettingsDialog) if d.isVisible()]
    if dialogs:
        shot("05-settings", dialogs[0])
        dialogs[0].reject()
    _go_dark(app)
    shot("06-dark")
    _close(app, window, bank)
    return saved


def _skip_first_run(window, name: str = "Sam"):
    """The first-run card, if open: the name typed, then Skip (the embedded model stays)."""
    from app.gui.first_run import FirstRunDialog

    _settle()
    card = window.findChild(FirstRunDialog)
    if card is not None and card.isVisible():
        card.name.setText(name)
        card.skip_button.click()
    return card


def take_first_run_and_small(out_dir: Path) -> list[Path]:
    """The first-run card (a fresh data folder), then a chat with the embedded model in a
    window of 800x600."""
    from app.gui.app import init_qt_app, make_assistant_factory
    from app.gui.first_run import FirstRunDialog
    from app.gui.main_window import MainWindow
    from core.config import Settings
    from core.memory.bank import MemoryBank

    app = init_qt_app()
    home = Path(tempfile.mkdtemp(prefix="memory-r1-first-run-"))
    bank = MemoryBank.open(home / "memory.sqlite3")
    settings = Settings(max_tokens=80)
    window = MainWindow(bank, settings, assistant_factory=make_assistant_factory(bank),
                        settings_file=home / "settings.json")
    window.show()
    _settle(600)
    saved = []
    card = window.findChild(FirstRunDialog)
    if card is not None:
        card.name.setText("Sam")
        _settle()
        saved.append(out_dir / "08-first-run-card.png")
        card.grab().save(str(saved[-1]))
    _skip_first_run(window)
    if window.assistant is None and _wait(window.assistantReady, 300) is None:
        raise SystemExit("the models did not load")
    window.chat.welcome.button.click()
    _resize(window, 800, 600)
    _say(window, "Hi! I live in Lisbon and I have a dog called Rex.")
    _wait(window.memoryNotice, 240)
    _say(window, "What is a good name for a second dog?")
    _settle(600)
    saved.append(out_dir / "09-window-800x600.png")
    window.grab().save(str(saved[-1]))
    _close(app, window, bank)
    return saved


PROVENANCE_TURNS = (("I moved from Lisbon to Berlin last week.", "9:12 am on 3 May, 2026"),
                    ("Haha ok.", "9:13 am on 3 May, 2026"),
                    ("Should I take my dog Rex to the vet?", "9:14 am on 3 May, 2026"),
                    ("Where do I live?", "9:15 am on 3 May, 2026"),
                    ("I started learning the guitar and my teacher is called Marta.", "6:40 pm on 9 May, 2026"))


def take_provenance(out_dir: Path) -> list[Path]:
    """The provenance shots with the embedded model on a fresh data folder. One chat turn (the
    issue's "Hi! I'm Sam ...") and PROVENANCE_TURNS ingested as `notes.jsonl` by the real
    Memory Manager in its default mode (for this model: extractive), then the memory with the
    most source links (a chat one first) selected: 08. Then the same turns read again by the
    free-form extractor (what a small model invents there, the grounding gate refuses) and the
    memory history, every change, with its "not saved" rows: 09."""
    from app.gui.app import init_qt_app, make_assistant_factory
    from app.gui.history_view import HistoryDialog
    from app.gui.main_window import MainWindow
    from app.logs import setup_logging
    from core.agents.manager import ManagerConfig, MemoryManager
    from core.assistant.ingest import IngestTurn, ingest_turns
    from core.config import Settings
    from core.memory.bank import MemoryBank

    out_dir.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="memory-r1-provenance-"))
    os.environ["MEMORY_R1_HOME"] = str(home)
    log_path = setup_logging(stderr=False)
    app = init_qt_app()
    _light(app)
    bank = MemoryBank.open()
    settings = Settings(welcome_shown=True, max_tokens=120)
    window = MainWindow(bank, settings, assistant_factory=make_assistant_factory(bank), log_path=log_path,
                        settings_file=home / "settings.json")
    _resize(window, 1280, 800)
    window.show()
    if window.assistant is None and _wait(window.assistantReady, 300) is None:
        raise SystemExit("the models did not load; see " + str(log_path))
    _say(window, "Hi! I'm Sam. I live in Lisbon and I have a dog called Rex.")
    _wait(window.memoryNotice, 240)
    turns = [IngestTurn("Sam", text, when, f"notes.jsonl:{i}") for i, (text, when) in enumerate(PROVENANCE_TURNS, 1)]
    backend = window.assistant.models.manager  # the GUI's manager thread is idle: its turn is done
    report = ingest_turns(MemoryManager(bank, backend, config=ManagerConfig()), turns)
    print(f"default extraction: {len(report.changes.added)} added, {report.rejected} not saved", file=sys.stderr)
    window.memory.refresh()
    _settle(800)
    links = bank.sources(m.id for m in bank.list(status=None))
    saved: list[Path] = []
    best = max(links, key=lambda i: (len(links[i]), any(s.kind == "chat" for s in links[i]), -i), default=None)
    if best is not None:
        window.memory.select_memory(best)
        _settle(800)
        path = out_dir / "10-memory-sources.png"
        window.grab().save(str(path))
        saved.append(path)
    report = ingest_turns(MemoryManager(bank, backend, config=ManagerConfig(extraction="free")), turns)
    print(f"free-form extraction: {len(report.changes.added)} added, {report.rejected} not saved", file=sys.stderr)
    print("not saved:", [(e.turn, e.new_text, e.reason) for e in bank.rejected()], file=sys.stderr)
    window.memory.show_history(every_change=True)
    _settle(800)
    dialogs = [d for d in window.memory.findChildren(HistoryDialog) if d.isVisible()]
    if dialogs:
        dialogs[0].resize(1100, 420)
        _settle(300)
        path = out_dir / "11-history-not-saved.png"
        dialogs[0].grab().save(str(path))
        saved.append(path)
        dialogs[0].accept()
    _close(app, window, bank)
    return saved


def take_demo(out_dir: Path) -> list[Path]:
    """One UI demo with a *scripted* answer model (core.fakes), so that a reply that selected
    memories can be shown: the 135M embedded model rarely lists any. Named as such."""
    from app.gui.app import init_qt_app
    from app.gui.main_window import MainWindow
    from core.config import Settings
    from core.embeddings import default_embedder
    from core.fakes import FakeBackend
    from core.memory.bank import MemoryBank
    from core.assistant.pipeline import Assistant

    app = init_qt_app()
    _light(app)
    home = Path(tempfile.mkdtemp(prefix="memory-r1-demo-"))
    bank = MemoryBank(home / "memory.sqlite3", default_embedder())
    for text, who, when in (("Sam has a dog named Rex", "User", "9:12 am on 3 May, 2026"),
                            ("Sam lives in Lisbon", "User", "9:12 am on 3 May, 2026"),
                            ("Sam's sister Ana is a nurse in Porto", "User", "6:40 pm on 9 May, 2026")):
        bank.add(text, speaker=who, observed_at=when, source="demo")
    answer = FakeBackend(default="**Memories selected as relevant:**\n- 9:12 am on 3 May, 2026: Sam has a dog named "
                                 "Rex\n**Answer:** Your dog is called **Rex**. Does he like walks along the Tagus?")
    manager = FakeBackend(default='{"facts": []}')
    assistant = Assistant(bank, answer, manager, settings=Settings(welcome_shown=True))
    window = MainWindow(bank, Settings(welcome_shown=True), assistant=assistant, settings_file=home / "s.json")
    window.setWindowTitle("Memory-R1 (UI demo, scripted model)")
    _resize(window, 1280, 800)
    window.show()
    _say(window, "What is my dog called?")
    window.chat.messages[-1].memories_button.click()
    _settle(600)
    path = out_dir / "07-ui-demo-scripted-model-memories-used.png"
    window.grab().save(str(path))
    _close(app, window, bank, assistant)
    return [path]


def take_chat_basics(out_dir: Path) -> list[Path]:
    """With the embedded model: a reply regenerated once (the "< 2/2 >" pager and the reply's
    model, tokens/s and first-token line under it) and the memory panel's search narrowed to
    "Lisbon": 12."""
    from app.gui.app import init_qt_app, make_assistant_factory
    from app.gui.main_window import MainWindow
    from core.config import Settings
    from core.memory.bank import MemoryBank

    out_dir.mkdir(parents=True, exist_ok=True)
    app = init_qt_app()
    _light(app)
    home = Path(tempfile.mkdtemp(prefix="memory-r1-chat-basics-"))
    bank = MemoryBank.open(home / "memory.sqlite3")
    settings = Settings(welcome_shown=True, max_tokens=80, user_name="Sam")
    window = MainWindow(bank, settings, assistant_factory=make_assistant_factory(bank),
                        settings_file=home / "settings.json")
    _resize(window, 1280, 800)
    window.show()
    if window.assistant is None and _wait(window.assistantReady, 300) is None:
        raise SystemExit("the models did not load")
    _say(window, "Hi! I'm Sam. I live in Lisbon and I have a dog called Rex.")
    _wait(window.memoryNotice, 240)
    _say(window, "Where could I walk Rex on Sunday?")
    window.regenerate()
    _wait(window.replyFinished, 300)
    window.memory.search.setText("Lisbon")
    _settle(1200)
    path = out_dir / "12-reply-versions-and-memory-search.png"
    window.grab().save(str(path))
    _close(app, window, bank)
    return [path]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from app.cli.gui_cmd import limit_blas_threads

    limit_blas_threads()
    only_provenance = "--provenance" in argv
    only_chat = "--chat-basics" in argv
    argv = [a for a in argv if a not in ("--provenance", "--chat-basics")]
    out = Path(argv[0] if argv else "screenshots")
    if only_chat:
        shots = take_chat_basics(out)
    elif only_provenance:
        shots = take_provenance(out)
    else:
        shots = (take(out) + take_demo(out) + take_first_run_and_small(out) + take_provenance(out)
                 + take_chat_basics(out))
    for path in shots:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
