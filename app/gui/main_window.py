"""The main window: chats on the left, the conversation in the middle, memory on the right.

It wires widgets to `core/` through the one `TaskRunner`: the "model" lane runs model loading
and replies (one owner for the `Llama` instances), the "db" lane runs chat-store and bank
calls. Listeners that `core/` calls from its own threads (the bank's change listener, the
pipeline's manager and error listeners) are forwarded to the GUI thread by `_Bridge` signals.
Every memory change reaches the GUI one way: the bank's listener -> `_Bridge.bank_changed` ->
the memory panel's rows and, for a chat turn (`MemoryChanges.turn`), the "memory updated"
notice under that turn's reply.

Construction is injectable (tests pass a bank on `HashEmbedder` and an `Assistant` on
`FakeBackend`; `app.cli.gui_cmd.run_gui` wires the real ones):
`MainWindow(bank, settings, assistant=..., assistant_factory=..., backend_loader=...,
settings_file=..., log_path=..., first_run=...)`. With `assistant_factory(settings, progress) -> Assistant`
the models load in the background, started once the window is on screen (`showEvent`), while
the window is already usable (which phase is running: the status bar, the input's placeholder,
the first-run card through `loadStatusChanged`). `first_run` (default: the welcome was never
shown) opens the first-run card (app/gui/first_run.py) once the window is up. The size,
splitter and panel visibility are restored from `window.json` next to the settings file
(app/gui/layout.py) and saved at close.
GUI thread only, except `_Bridge`'s emitters.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Callable

from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtGui import QCloseEvent, QIcon
from PySide6.QtWidgets import (QDialog, QFrame, QLabel, QMainWindow, QProgressBar, QPushButton, QScrollArea,
                               QSplitter, QVBoxLayout)

from core.config import Settings, settings_path
from core.paths import assets_dir, data_dir
from core.types import MemoryChanges, TurnRef

from app.gui import timings
from app.gui.appearance import apply_appearance
from app.gui.chat_actions import connect_chat_actions
from app.gui.chat_view import MAX_SHOWN_MESSAGES, ChatView
from app.gui.conversation_list import ConversationPanel
from app.gui.dialogs import report_error, show_user_error
from app.gui.first_run import open_first_run
from app.gui.layout import layout_path, restore_layout, save_layout
from app.gui.memory_details import connect_sources
from app.gui.memory_panel import MemoryPanel
from app.gui.menus import build_menus
from app.gui.models_control import ModelControl
from app.gui.tasks import Task, TaskRunner, TokenBuffer

log = logging.getLogger(__name__)

CLOSE_GRACE_MS = 30_000
DRAIN_S = 20.0


class _Bridge(QObject):
    """Signals emitted from core's threads, delivered on the GUI thread (queued)."""

    bank_changed = Signal(object)  # MemoryChanges: every committed change, the one change path
    turn_remembered = Signal(object, object)  # MemoryChanges, turn text: the manager finished a turn
    pipeline_error = Signal(object)

    def emit_safely(self, signal_name: str, *args) -> None:  # any thread
        try:
            getattr(self, signal_name).emit(*args)
        except RuntimeError:  # the window (and this bridge) is gone: nothing to redraw
            pass


class MainWindow(QMainWindow):
    """Signals: `replyFinished(Reply)`, `assistantReady()`, `modelsChanged("ok"|"failed")`,
    `memoryNotice(MemoryChanges, TurnRef)` (the manager finished a turn; its changes may be
    empty, and any notice was already placed), `conversationsLoaded()`, `conversationShown(id)`."""

    replyFinished = Signal(object)
    assistantReady = Signal()
    modelsChanged = Signal(str)  # "ok" | "failed" (never a bool: see tasks.py)
    memoryNotice = Signal(object, object)
    conversationsLoaded = Signal()
    conversationShown = Signal(int)
    loadStatusChanged = Signal(str)  # `load_status`: the start-up load's phase line (the first-run card)

    def __init__(self, bank, settings: Settings, *, assistant=None,
                 assistant_factory: Callable | None = None, backend_loader: Callable | None = None,
                 settings_file: Path | None = None, log_path: Path | None = None,
                 runner: TaskRunner | None = None, first_run: bool | None = None, parent=None) -> None:
        super().__init__(parent)
        self.bank = bank
        self.settings = settings
        self.assistant = None
        self.settings_file = settings_file or settings_path()
        self.log_path = log_path
        self._factory = assistant_factory
        self._pending_models = (settings.answer_model, settings.manager_model)
        self.runner = runner or TaskRunner(self)
        self.models = ModelControl(self.runner, backend_loader, self)
        self.bridge = _Bridge(self)
        self.current_conversation = None  # core.memory Conversation, or None before the first message
        self._new_chat_temporary = False
        self._reply_task: Task | None = None
        self._closing = False
        self._drained = False
        self._deferred_load: Settings | None = None
        self.load_status = ""  # what the model load is doing now (the first-run card shows it too)
        self.errors: list[BaseException] = []  # every error reported, for tests and the log
        self.setWindowTitle("Memory-R1")
        icon = assets_dir() / "icons" / "memory-r1.svg"
        if icon.exists():
            self.setWindowIcon(QIcon(str(icon)))
        self._build()
        build_menus(self)
        restore_layout(self, layout_path(self.settings_file))
        self._connect()
        apply_appearance(settings.theme, settings.font_size)
        self._bank_listener = lambda changes: self.bridge.emit_safely("bank_changed", changes)
        self.bank.add_listener(self._bank_listener)
        if assistant is not None:
            self._set_assistant(assistant)
        elif assistant_factory is not None:  # loaded once the window is on screen (`showEvent`)
            self._deferred_load = settings
            self.chat.set_input_enabled(False, "Loading the models…")
        self.chat.show_welcome(not settings.welcome_shown)
        self.memory.pause.setChecked(settings.memory_paused)
        self.load_conversations(select_latest=True)
        self.memory.refresh()
        if first_run if first_run is not None else not settings.welcome_shown:
            QTimer.singleShot(0, lambda: open_first_run(self))

    def showEvent(self, event) -> None:  # noqa: N802 - Qt naming
        """The first show starts the model load, on the next turn of the event loop: the window
        is drawn before the loader threads (imports of llama_cpp, the embedder) compete with
        the GUI thread for the GIL and the CPU."""
        super().showEvent(event)
        if self._deferred_load is not None:
            QTimer.singleShot(0, self._start_deferred_load)

    def _start_deferred_load(self) -> None:
        settings, self._deferred_load = self._deferred_load, None
        if settings is not None and self._factory is not None and self.assistant is None and not self._closing:
            self.models.load(self._factory, settings)

    # --- construction -----------------------------------------------------------------------
    def _build(self) -> None:
        self.conversations = ConversationPanel()
        self.chat = ChatView()
        self.memory = MemoryPanel(self.bank, self.runner)
        # the panel's button rows are ~360 px wide: narrower, it scrolls instead of squeezing the chat
        self.memory_box = QScrollArea(widgetResizable=True, frameShape=QFrame.Shape.NoFrame)
        self.memory_box.setObjectName("memoryBox")
        self.memory_box.setWidget(self.memory)
        self.memory_box.setMinimumWidth(220)
        self.chat.setMinimumWidth(300)  # a bubble's own minimum (header, Copy, Regenerate) fits
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        for widget in (self.conversations, self.chat, self.memory_box):
            self.splitter.addWidget(widget)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setCollapsible(1, False)
        self._panels = {"chats": self.conversations, "memory": self.memory_box}
        self.setCentralWidget(self.splitter)
        self.model_label = QLabel()
        self.progress = QProgressBar(maximumWidth=160, textVisible=False)
        self.progress.setRange(0, 0)  # indeterminate: llama.cpp reports no load fraction here
        self.progress.hide()
        self.undo_chat_button = QPushButton("Undo delete")
        self.undo_chat_button.hide()
        self._undo_chat_timer = QTimer(self, singleShot=True, interval=15_000)
        self._undo_chat_timer.timeout.connect(self.undo_chat_button.hide)
        bar = self.statusBar()
        bar.addPermanentWidget(self.undo_chat_button)
        bar.addPermanentWidget(self.progress)
        bar.addPermanentWidget(self.model_label)

    def _connect(self) -> None:
        self.runner.unhandled.connect(lambda _task, exc: self.report(exc))
        self.runner.idle.connect(self._maybe_finish_close)
        self.bridge.bank_changed.connect(self._on_bank_changed)
        self.bridge.turn_remembered.connect(
            lambda changes, turn: self.memoryNotice.emit(changes, TurnRef.of(turn)))
        self.bridge.pipeline_error.connect(self._on_pipeline_error)
        self.models.progress.connect(self._load_progress)
        self.models.busyStarted.connect(lambda text: self._busy_progress(True, text))
        self.models.busyEnded.connect(lambda text: self._busy_progress(False, text))
        self.models.loaded.connect(self._set_assistant)
        self.models.loadFailed.connect(self._load_failed)
        self.models.swapped.connect(self._swapped)
        self.chat.sendRequested.connect(self.send)
        self.chat.draftPaused.connect(self.prefill)
        self.chat.stopRequested.connect(self.stop_reply)
        self.chat.regenerateRequested.connect(self.regenerate)
        self.chat.undoForgetRequested.connect(self.undo_forget)
        self.chat.memoryLinkActivated.connect(self.show_memory)
        self.chat.welcomeDismissed.connect(self._welcome_done)
        self.conversations.selected.connect(self.open_conversation)
        self.conversations.newRequested.connect(self.new_chat)
        self.conversations.renameRequested.connect(self.rename_conversation)
        self.conversations.deleteRequested.connect(self.delete_conversation)
        self.conversations.searchChanged.connect(lambda _q: self.load_conversations())
        self.conversations.trashToggled.connect(lambda _shown: self.load_conversations())
        self.conversations.restoreRequested.connect(
            lambda cid: self._chat_op(self.bank.chats.restore_conversation, cid, "Chat restored."))
        self.conversations.purgeRequested.connect(
            lambda cid: self._chat_op(self.bank.chats.purge_conversation, cid, "Chat deleted for good."))
        self.undo_chat_button.clicked.connect(self._undo_delete_chat)
        self.memory.externalChange.connect(self.load_conversations)  # e.g. `serve` added a chat
        self.memory.error.connect(self.report)
        self.memory.message.connect(lambda text: self.statusBar().showMessage(text, 8000))
        self.memory.pauseToggled.connect(self.set_memory_paused)
        connect_sources(self)  # "Where it came from": a chat source opens its message
        connect_chat_actions(self)  # edit and resend, reply versions

    # --- errors -----------------------------------------------------------------------------
    def report(self, exc: BaseException) -> None:
        """A plain dialog for a UserError, the crash dialog (with the log path) for a bug."""
        self.errors.append(exc)
        if not self._closing:
            report_error(self, exc, self.log_path)

    def _on_pipeline_error(self, exc: BaseException) -> None:
        """The background manager failed on a turn: a notice, not a modal dialog per turn."""
        self.errors.append(exc)
        where = f" (details in {self.log_path})" if self.log_path else ""
        self.statusBar().showMessage(f"Memory update failed: {exc}{where}", 15_000)

    # --- assistant and models ---------------------------------------------------------------
    def _set_assistant(self, assistant) -> None:
        self.assistant = assistant
        assistant.add_memory_listener(lambda ch, turn: self.bridge.emit_safely("turn_remembered", ch, turn))
        assistant.add_error_listener(lambda exc: self.bridge.emit_safely("pipeline_error", exc))
        self._apply_runtime_settings()
        self.chat.set_input_enabled(True)
        timings.mark("input_enabled")
        self.load_status = "Ready."
        self.model_label.setText(self._model_text())
        self.runner.submit(assistant.resume_pending, name="resume memory", on_done=self._resumed, on_error=self.report)
        self.assistantReady.emit()

    def _load_progress(self, text: str) -> None:
        """A line from the model load (app.gui.app.LoadProgress: which phase is running): the
        status bar, and the input's placeholder until the window is usable."""
        self.statusBar().showMessage(text)
        if text.startswith("Loading") and self.assistant is None and not self._closing:
            self.load_status = text
            self.chat.set_input_enabled(False, text)
            self.loadStatusChanged.emit(text)

    def _resumed(self, count: int) -> None:
        """Turns an earlier run stored but never gave to the manager are being processed now."""
        if count:
            self.statusBar().showMessage(f"Remembering {count} earlier message{'s' if count != 1 else ''}…", 15_000)

    def _load_failed(self, exc: BaseException) -> None:
        self.load_status = f"No model could be loaded: {exc}"
        self.chat.set_input_enabled(False, "No model could be loaded: choose one in Settings (Ctrl+,).")
        timings.mark("load_failed")
        self.report(exc)

    def _busy_progress(self, busy: bool, text: str) -> None:
        self.progress.setVisible(busy)
        if busy and self.assistant is None:
            self.load_status = text
            self.chat.set_input_enabled(False, text)
        if text:
            self.statusBar().showMessage(text, 0 if busy else 5000)

    def _model_text(self) -> str:
        """The answer model, and whether the loaded backend runs the user's or a shipped adapter."""
        from core.catalog.shipped import is_shipped

        spec = self.settings.answer_model
        name = Path(spec.path).name if spec.path else "SmolLM2-135M (embedded)"
        loaded = self.assistant.models.adapter_path("answer") if self.assistant is not None else None
        shipped = not spec.adapter and is_shipped(loaded)
        return f"Model: {name}" + (" + shipped adapter" if shipped else " + adapter" if spec.adapter else "")

    def _apply_runtime_settings(self) -> None:
        """Sampling and pause settings the pipeline reads per reply."""
        target = getattr(self.assistant, "settings", None)
        if target is not None and target is not self.settings:
            for name in ("temperature", "max_tokens", "memory_paused", "use_shipped_adapters", "fast_embedded_model",
                         "user_name", "top_p", "top_k", "repeat_penalty", "system_prompt", "prefill_while_typing"):
                setattr(target, name, getattr(self.settings, name))
        if self.assistant is not None:
            self.assistant.user_name = self.settings.speaker()
        apply_appearance(self.settings.theme, self.settings.font_size)

    def save_settings(self) -> None:
        try:
            self.settings.save(self.settings_file)
        except (OSError, ValueError) as exc:
            show_user_error(self, f"The settings could not be saved to {self.settings_file}: {exc}")

    def open_settings(self) -> None:
        from app.gui.settings_dialog import SettingsDialog

        dialog = SettingsDialog(self.settings, data_dir(), self, server=self.local_server())
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.applied.connect(self.apply_settings)
        dialog.open()

    def local_server(self):
        """The in-process API server behind Settings' switch (made on first use, with a new key;
        stopped when the window closes). It shares the window's assistant and models (one copy
        of each model, one manager thread); made before they load, it loads its own."""
        if getattr(self, "_local_server", None) is None:
            from app.server.http_server import LocalServer, new_api_key

            assistant = self.assistant
            self._local_server = LocalServer(self.bank, settings=self.settings, api_key=new_api_key(),
                                             models=assistant.models if assistant is not None else None,
                                             assistant=assistant)
        return self._local_server

    def open_models(self) -> None:
        """The model manager (app/gui/models_page.py) in a dialog; a role it changes is applied
        like a change in Settings (loaded in the background; a failure keeps the old model)."""
        from core.catalog.store import ModelStore

        from app.gui.models_page import ModelsPage

        dialog = QDialog(self)
        dialog.setObjectName("modelsDialog")
        dialog.setWindowTitle("Models")
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        page = ModelsPage(ModelStore(), copy.deepcopy(self.settings), dialog)
        page.settings_changed.connect(self.apply_settings)
        QVBoxLayout(dialog).addWidget(page)
        dialog.resize(900, 600)
        dialog.open()

    def apply_settings(self, new: Settings) -> None:
        """Persist `new`; if a model changed, load it in the background and swap it in on success.

        A model that fails to load is reported and the previous one stays (and stays saved).
        """
        old = copy.deepcopy(self.settings)  # a snapshot: the assistant may share (and get) these
        models_changed = (new.answer_model, new.manager_model, new.use_shipped_adapters, new.fast_embedded_model) != (
            old.answer_model, old.manager_model, old.use_shipped_adapters, old.fast_embedded_model)
        self.settings = copy.deepcopy(new)
        self.settings.answer_model, self.settings.manager_model = old.answer_model, old.manager_model
        self._apply_runtime_settings()
        self.save_settings()
        if not models_changed:
            return
        self._pending_models = (new.answer_model, new.manager_model)
        if self.assistant is not None:
            self.models.swap(self.assistant, old, new)
        elif self._factory is not None:  # nothing loaded yet (a failed first load): load afresh
            self._deferred_load = None
            self.settings.answer_model, self.settings.manager_model = self._pending_models
            self.models.load(self._factory, self.settings)

    def _swapped(self, exc) -> None:
        if exc is None:
            self.settings.answer_model, self.settings.manager_model = self._pending_models
            self.save_settings()
            self.model_label.setText(self._model_text())
        else:
            self.report(exc)
        self.modelsChanged.emit("failed" if exc is not None else "ok")

    def set_memory_paused(self, paused: bool) -> None:
        if self.settings.memory_paused != paused:
            self.settings.memory_paused = paused
            self._apply_runtime_settings()
            self.save_settings()
        self.statusBar().showMessage("Memory paused: nothing new is remembered." if paused
                                     else "Memory on.", 6000)

    # --- layout -------------------------------------------------------------------------------
    def panel_shown(self, name: str) -> bool:
        """Whether the "chats" list or the "memory" panel is shown (its View action's state)."""
        return self.panel_actions[name].isChecked()

    def set_panel_shown(self, name: str, shown: bool) -> None:
        self.panel_actions[name].setChecked(shown)
        self._panels[name].setVisible(shown)

    def save_layout(self) -> None:
        save_layout(self, layout_path(self.settings_file))

    def _welcome_done(self) -> None:
        self.settings.welcome_shown = True
        self.save_settings()

    # --- conversations ----------------------------------------------------------------------
    def load_conversations(self, select_latest: bool = False) -> None:
        query = self.conversations.search.text().strip() or None
        chats = self.bank.chats
        trash = self.conversations.in_trash()

        def done(convs):
            current = self.current_conversation.id if self.current_conversation and not trash else None
            if select_latest and current is None and convs and not query and not trash:
                self.current_conversation = convs[0]
                current = convs[0].id
                self._show_conversation(convs[0])
            self.conversations.set_conversations(convs, current)
            self.conversationsLoaded.emit()

        self.runner.submit(lambda: chats.list_conversations(query=query, deleted_only=trash), name="list chats",
                           on_done=done, on_error=self.report)

    def new_chat(self, temporary: bool = False) -> None:
        """An empty chat; it is created in the store when the first message is sent."""
        self.current_conversation = None
        self._new_chat_temporary = bool(temporary)
        self.chat.clear()
        self.chat.set_temporary(self._new_chat_temporary)
        self.conversations.set_conversations(
            [self.conversations.model.conversation_at(r) for r in range(self.conversations.model.rowCount())], None)
        self.chat.input.setFocus()

    def open_conversation(self, conversation_id: int) -> None:
        chats = self.bank.chats
        self.runner.submit(chats.get_conversation, conversation_id, name="open chat",
                           on_done=self._show_conversation, on_error=self.report)

    def _show_conversation(self, conv) -> None:
        self.current_conversation = conv
        self.chat.set_temporary(conv.temporary)
        chats, bank = self.bank.chats, self.bank

        def fetch():  # db worker: the messages and the memories each reply used
            messages = chats.messages(conv.id, limit=MAX_SHOWN_MESSAGES)
            used = {}
            for msg in messages:
                ids = (msg.meta or {}).get("selected") if isinstance(msg.meta, dict) else None
                if ids:
                    used[msg.id] = [m for m in (_get_or_none(bank, i) for i in ids) if m is not None]
            return messages, used

        def done(result):
            if self.current_conversation is not None and self.current_conversation.id == conv.id:
                self.chat.show_messages(*result)  # a reply still streaming goes on unseen
                self.conversationShown.emit(conv.id)

        self.runner.submit(fetch, name="load messages", on_done=done, on_error=self.report)

    def rename_conversation(self, conversation_id: int, title: str) -> None:
        self.runner.submit(self.bank.chats.rename_conversation, conversation_id, title, name="rename chat",
                           on_done=lambda _r: self.load_conversations(), on_error=self.report)

    def delete_conversation(self, conversation_id: int) -> None:
        def done(_result):
            if self.current_conversation is not None and self.current_conversation.id == conversation_id:
                self.new_chat()
            self._deleted_chat = conversation_id
            self.undo_chat_button.show()
            self._undo_chat_timer.start()
            self.statusBar().showMessage("Chat deleted.", 15_000)
            self.load_conversations()

        self.runner.submit(self.bank.chats.delete_conversation, conversation_id, name="delete chat",
                           on_done=done, on_error=self.report)

    def _undo_delete_chat(self) -> None:
        conversation_id = getattr(self, "_deleted_chat", None)
        self.undo_chat_button.hide()
        if conversation_id is not None:
            self._chat_op(self.bank.chats.restore_conversation, conversation_id)

    def _chat_op(self, fn: Callable, conversation_id: int, done_text: str = "") -> None:
        """`fn(conversation_id)` on the db lane (restore, purge), then the list again."""
        def done(_result) -> None:
            if done_text:
                self.statusBar().showMessage(done_text, 8000)
            self.load_conversations()

        self.runner.submit(fn, conversation_id, name=fn.__name__, on_done=done, on_error=self.report)

    # --- chatting ---------------------------------------------------------------------------
    def busy(self) -> bool:
        return self._reply_task is not None

    def prefill(self, draft: str) -> None:
        """Typing paused: the assistant evaluates the reply's prompt for `draft` in the
        background (`Assistant.prefill`; the GUI thread only hands the text over)."""
        if self.assistant is None or self.busy():
            return
        conv = self.current_conversation
        if conv is None:
            self.assistant.prefill(None, draft, temporary=self._new_chat_temporary)
        else:
            self.assistant.prefill(conv.id, draft, temporary=conv.temporary)

    def send(self, text: str) -> None:
        """Show the message, create the chat if needed, stream the reply (model lane)."""
        if self.assistant is None or self.busy():
            return
        self.chat.add_user_message(text)
        self.chat.show_welcome(False)
        conv = self.current_conversation
        if conv is None:
            temporary = self._new_chat_temporary
            title = _title_from(text)
            self._start_reply(lambda c: self.bank.chats.create_conversation(title, temporary=temporary),
                              text, temporary)
        else:
            self._start_reply(None, text, conv.temporary, conv.id)

    def _start_reply(self, create: Callable | None, text: str, temporary: bool,
                     conversation_id: int | None = None) -> None:
        buffer = TokenBuffer()
        assistant = self.assistant

        def run(cancel):  # model worker
            cid = conversation_id
            conv = None
            if create is not None:
                conv = create(None)
                cid = conv.id
            reply = assistant.reply(cid, text, on_token=buffer.append, cancel=cancel, temporary=temporary)
            return conv, cid, reply

        self.chat.start_stream(buffer)
        self.chat.set_busy(True)
        self._reply_task = self.runner.submit(run, name="reply", lane="model", pass_cancel=True,
                                              on_done=self._reply_done, on_error=self._reply_failed)

    def regenerate(self) -> None:
        if self.assistant is None or self.busy() or self.current_conversation is None:
            return
        cid = self.current_conversation.id
        assistant = self.assistant
        self.chat.remove_last_assistant()
        self.begin_reply(lambda cancel, buffer: (None, cid, assistant.regenerate(cid, on_token=buffer.append,
                                                                                  cancel=cancel)), "regenerate")

    def begin_reply(self, run: Callable, name: str) -> None:
        """Stream `run(cancel, buffer) -> (conversation or None, conversation id, Reply)` (model
        lane) into a new reply bubble; the result goes where a sent message's reply goes."""
        buffer = TokenBuffer()
        self.chat.start_stream(buffer)
        self.chat.set_busy(True)
        self._reply_task = self.runner.submit(lambda cancel: run(cancel, buffer), name=name, lane="model",
                                              pass_cancel=True, on_done=self._reply_done,
                                              on_error=self._reply_failed)

    def stop_reply(self) -> None:
        """Esc / Stop: the worker stops within one token; the partial reply is kept."""
        if self._reply_task is not None:
            self._reply_task.cancel.cancel()
            self.statusBar().showMessage("Stopping…", 3000)

    def _reply_done(self, result) -> None:
        """The reply is stored. If the user switched chats meanwhile, the view is left alone
        (or reloaded, if they came back to this chat)."""
        conv, cid, reply = result
        self._reply_task = None
        self.chat.set_busy(False)
        still_shown = self.chat.streaming is not None
        if conv is not None and self.current_conversation is None and still_shown:
            self.current_conversation = conv
        if self.current_conversation is not None and self.current_conversation.id == cid:
            widget = self.chat.finish_stream(reply.text, message_id=reply.message_id,
                                             memories=reply.selected, cancelled=reply.cancelled, meta=reply.meta)
            if widget is None:
                self._show_conversation(self.current_conversation)
            if widget is not None and len(self.chat.messages) >= 2:
                user = self.chat.messages[-2]
                if user.role == "user" and user.message_id is None:
                    user.message_id = reply.user_message_id
            if widget is not None and reply.command == "forget" and reply.changes:
                widget.show_forget_notice(reply.changes)  # with [Undo]
            if widget is not None and reply.undone_count:
                self.statusBar().showMessage(widget.show_undone_notice(reply.undone_count), 8000)
            self.chat.set_busy(False)
        else:
            self.chat.stop_stream()
        self.replyFinished.emit(reply)
        self.load_conversations()

    def undo_forget(self, batch_id: int) -> None:
        """[Undo] of a forget notice: `bank.undo(batch=...)` on the db worker, then the notice
        says the memories are back (an error goes to the error dialog)."""
        bank = self.bank

        def done(changes: MemoryChanges) -> None:
            widget = self.chat.forget_widget(batch_id)
            if widget is not None:
                widget.forget_undone(len(changes.added))
            self.statusBar().showMessage(f"Undid the forget: {changes.summary()}.", 8000)

        def failed(exc: BaseException) -> None:
            widget = self.chat.forget_widget(batch_id)
            if widget is not None:
                widget.undo_forget_button.setEnabled(True)
            self.report(exc)

        self.runner.submit(lambda: bank.undo(batch=batch_id), name="undo forget", on_done=done, on_error=failed)

    def _reply_failed(self, exc: BaseException) -> None:
        self._reply_task = None
        self.chat.discard_stream()
        self.chat.set_busy(False)
        self.report(exc)

    # --- memory changes ---------------------------------------------------------------------
    def _on_bank_changed(self, changes: MemoryChanges) -> None:
        """Every committed memory change (GUI thread): the panel redraws its rows; a change
        caused by a chat turn also gets a notice under that turn's reply (see `_place_notice`); a
        forgotten memory's text is taken out of the notices and "memories used" lists shown."""
        self.memory.apply_changes(changes)
        if changes.forgotten:  # their text leaves the chat's notices too
            self.chat.forget_notice_texts(changes.forgotten)
        turn = changes.turn
        if changes and turn is not None and turn.is_chat:
            self._place_notice(changes, turn)

    def _place_notice(self, changes: MemoryChanges, turn: TurnRef) -> None:
        """Under the reply to `turn`'s user message when that chat is shown, else the status
        bar only. A turn of the shown chat whose reply is still being stored (the manager or a
        remember command can commit before the reply's ids reach the window) is the bubble
        still waiting for its id; a chat being created is the shown one unless it is listed."""
        shown = self.current_conversation.id if self.current_conversation is not None else None
        ours = turn.conversation_id == shown or (
            shown is None and self.conversations.model.row_of(turn.conversation_id) is None)
        widget = self.chat.reply_to(turn.message_id, in_flight=self._reply_task is not None) if ours else None
        if widget is not None:
            widget.show_notice(changes)
        self.statusBar().showMessage(f"Memory updated: {changes.summary()}.", 8000)

    def show_memory(self, memory_id: int) -> None:
        self.set_panel_shown("memory", True)
        self.memory.select_memory(memory_id)

    def focus_memory_search(self) -> None:
        self.set_panel_shown("memory", True)
        self.memory.search.setFocus()
        self.memory.search.selectAll()

    # --- closing ----------------------------------------------------------------------------
    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt naming
        """Stop a streaming reply (the pipeline stores the partial text) and let the manager
        finish the queued turns (up to DRAIN_S), in the background, then close."""
        if getattr(self, "_force_close", False) or (self._drained and not self.runner.busy()):
            self._closing = True
            self.chat.stop_stream()
            self.save_layout()
            self.bank.remove_listener(self._bank_listener)
            if getattr(self, "_local_server", None) is not None:
                self._local_server.stop(drain_timeout=0)  # its queued turns stay pending for the next start
            event.accept()
            return
        event.ignore()
        if self._closing:
            return
        self._closing = True
        self.runner.cancel_all()
        self.chat.set_input_enabled(False, "Closing…")
        self.statusBar().showMessage("Saving the last memory updates before closing…")
        QTimer.singleShot(CLOSE_GRACE_MS, self._force_close_now)
        assistant = self.assistant

        def drain():  # model worker: after any reply (same lane), wait for the manager
            return assistant.wait_idle(DRAIN_S) if assistant is not None else True

        def drained(ok):
            if not ok:
                log.warning("the memory manager had not finished within %d s at exit", DRAIN_S)
            self._drained = True

        self.runner.submit(drain, name="drain manager", lane="model", on_done=drained,
                           on_error=lambda exc: drained(False))

    def _maybe_finish_close(self) -> None:
        if self._closing and self._drained and not self.runner.busy():
            QTimer.singleShot(0, self.close)

    def _force_close_now(self) -> None:
        if self.isVisible():
            log.warning("background work did not stop within %d ms; closing anyway", CLOSE_GRACE_MS)
            self._force_close = True
            self.close()


def _get_or_none(bank, memory_id):
    try:
        return bank.get(int(memory_id))
    except Exception:  # noqa: BLE001 - a forgotten memory is simply not shown
        return None


def _title_from(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= 48 else line[:47].rstrip() + "…"
