"""The settings dialog: models, adapters, the embedded model's faster copy, sampling, context,
threads; the default system prompt; theme and font size; days deleted chats stay in the trash;
the data folder; "Use your memory in other apps".

It only edits a copy of `Settings`; `applied(Settings)` hands the validated copy to the main
window, which persists it and (re)loads models in the background (a model that fails to load
is reported there and the previous one stays). GUI thread only.

"Use your memory in other apps" (`OtherAppsBox`) shows the MCP configuration for Claude Desktop
or Cursor with a Copy button, and a switch that starts or stops the local OpenAI-compatible
server in this process (`app.server.http_server.LocalServer`, owned by the caller so it
outlives the dialog; without one the switch is disabled), showing its address and key.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QFontDatabase, QGuiApplication
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFileDialog,
                               QFormLayout, QGroupBox, QHBoxLayout, QLabel, QLineEdit, QPlainTextEdit,
                               QPushButton, QSpinBox, QVBoxLayout, QWidget)

from core.config import ModelSpec, Settings
from core.errors import InvalidInputError

EMBEDDED_LABEL = "Embedded SmolLM2-135M (default)"


class PathField(QWidget):
    """A file path with Browse… and Clear (empty = the default)."""

    def __init__(self, placeholder: str, file_filter: str, parent=None) -> None:
        super().__init__(parent)
        self.edit = QLineEdit(placeholderText=placeholder, clearButtonEnabled=True)
        self._filter = file_filter
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.edit, 1)
        row.addWidget(browse)

    def _browse(self) -> None:
        start = os.path.dirname(self.edit.text()) or str(Path.home())
        dialog = QFileDialog(self, "Choose a file", start, self._filter)
        dialog.setFileMode(QFileDialog.FileMode.ExistingFile)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.fileSelected.connect(self.edit.setText)
        dialog.open()

    def value(self) -> str | None:
        text = self.edit.text().strip()
        return os.path.expanduser(text) if text else None

    def set_value(self, value: str | None) -> None:
        self.edit.setText(value or "")


class ModelBox(QGroupBox):
    """One role's model: GGUF file and LoRA adapter."""

    def __init__(self, title: str, spec: ModelSpec, parent=None) -> None:
        super().__init__(title, parent)
        self.model = PathField(EMBEDDED_LABEL, "GGUF models (*.gguf);;All files (*)")
        self.adapter = PathField("None", "GGUF LoRA adapters (*.gguf);;All files (*)")
        self.model.set_value(spec.path)
        self.adapter.set_value(spec.adapter)
        form = QFormLayout(self)
        form.addRow("Model file:", self.model)
        form.addRow("LoRA adapter:", self.adapter)


class OtherAppsBox(QGroupBox):
    """The MCP configuration to copy and the local server's switch, address and key."""

    def __init__(self, server=None, parent=None) -> None:
        super().__init__("Use your memory in other apps", parent)
        from app.server.client_config import mcp_config_json

        self.server = server
        self.config = QPlainTextEdit(mcp_config_json(), readOnly=True)
        self.config.setObjectName("mcpConfig")
        self.config.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.config.setMaximumHeight(130)
        self.copy = QPushButton("Copy")
        self.copy.setObjectName("copyMcpConfig")
        self.copy.clicked.connect(lambda: self._copy(self.config.toPlainText()))
        self.switch = QCheckBox("Local OpenAI-compatible server (this computer only)")
        self.switch.setObjectName("serverSwitch")
        self.address = QLineEdit(readOnly=True, placeholderText="off")
        self.address.setObjectName("serverAddress")
        self.key = QLineEdit(readOnly=True)
        self.key.setObjectName("serverKey")
        self.status = QLabel(wordWrap=True)
        self.status.setObjectName("serverStatus")
        copy_row = QHBoxLayout()
        copy_row.addWidget(QLabel("Claude Desktop, Cursor and other MCP apps: add this to their MCP settings."), 1)
        copy_row.addWidget(self.copy)
        form = QFormLayout()
        form.addRow("Address:", self.address)
        form.addRow("API key:", self.key)
        box = QVBoxLayout(self)
        box.addLayout(copy_row)
        box.addWidget(self.config)
        box.addWidget(self.switch)
        box.addLayout(form)
        box.addWidget(self.status)
        if server is None:
            self.switch.setEnabled(False)
            self.switch.setToolTip("Run `memory-r1 serve` for the server outside the app.")
        self._show_state()
        self.switch.toggled.connect(self._toggle)

    @staticmethod
    def _copy(text: str) -> None:
        QGuiApplication.clipboard().setText(text)

    def _toggle(self, on: bool) -> None:
        if self.server is None or on == self.server.running:
            return
        try:
            self.server.start() if on else self.server.stop()
        except (OSError, RuntimeError) as exc:
            self.status.setText(f"The server could not start: {exc}")
        else:
            self.status.setText("")
        self._show_state()

    def _show_state(self) -> None:
        running = self.server is not None and self.server.running
        self.switch.blockSignals(True)
        self.switch.setChecked(running)
        self.switch.blockSignals(False)
        self.address.setText(self.server.url if running else "")
        self.key.setText((self.server.api_key or "none") if running else "")
        if running:
            self.status.setText(f'OpenAI(base_url="{self.server.url}", api_key=<the key>), model "memory-r1"')


class SettingsDialog(QDialog):
    """Edits a copy of `settings`; emits `applied(new_settings)` when OK'd with valid values."""

    applied = Signal(object)

    def __init__(self, settings: Settings, data_folder: Path, parent=None, *, server=None) -> None:
        super().__init__(parent)
        self.setObjectName("settingsDialog")
        self.setWindowTitle("Settings")
        self.setMinimumWidth(560)
        self._original = settings
        self.answer = ModelBox("Answer model (writes the replies)", settings.answer_model)
        self.manager = ModelBox("Memory manager model (decides what to remember)", settings.manager_model)
        self.shipped = QCheckBox("Use the trained adapters shipped with Memory-R1 when no adapter is set")
        self.shipped.setChecked(settings.use_shipped_adapters)
        self.fast_embedded = QCheckBox("Faster embedded model (a Q8_0 copy of the shipped file, derived once)")
        self.fast_embedded.setObjectName("fastEmbedded")
        self.fast_embedded.setToolTip(
            "For a role without a model file of its own. The first time, the copy is made in the background "
            "and used from the next start; once it exists, switching reloads the model at once.")
        self.fast_embedded.setChecked(settings.fast_embedded_model)
        self.temperature = QDoubleSpinBox(minimum=0.0, maximum=2.0, singleStep=0.05, decimals=2)
        self.temperature.setValue(settings.temperature)
        self.top_p = QDoubleSpinBox(minimum=0.01, maximum=1.0, singleStep=0.05, decimals=2)
        self.top_p.setObjectName("topP")
        self.top_p.setValue(settings.top_p)
        self.top_k = QSpinBox(minimum=0, maximum=1000)
        self.top_k.setObjectName("topK")
        self.top_k.setSpecialValueText("off")
        self.top_k.setValue(settings.top_k)
        self.repeat_penalty = QDoubleSpinBox(minimum=0.5, maximum=2.0, singleStep=0.05, decimals=2)
        self.repeat_penalty.setObjectName("repeatPenalty")
        self.repeat_penalty.setToolTip("1.00 = off; above 1 discourages repeating tokens")
        self.repeat_penalty.setValue(settings.repeat_penalty)
        self.system_prompt = QPlainTextEdit(settings.system_prompt)
        self.system_prompt.setObjectName("systemPrompt")
        self.system_prompt.setPlaceholderText("e.g. “Answer in French.” (a chat can set its own: right-click it)")
        self.system_prompt.setToolTip("Added to every chat's instructions; the memory instructions stay")
        self.system_prompt.setMaximumHeight(80)
        self.theme = QComboBox()
        self.theme.setObjectName("theme")
        for label, value in (("Follow the system", "system"), ("Light", "light"), ("Dark", "dark")):
            self.theme.addItem(label, value)
        self.theme.setCurrentIndex(max(0, self.theme.findData(settings.theme)))
        self.font_size = QSpinBox(minimum=0, maximum=36, suffix=" pt")
        self.font_size.setObjectName("fontSize")
        self.font_size.setSpecialValueText("System")
        self.font_size.setValue(settings.font_size)
        self.max_tokens = QSpinBox(minimum=1, maximum=32768, singleStep=64)
        self.max_tokens.setValue(settings.max_tokens)
        self.n_ctx = QSpinBox(minimum=256, maximum=131072, singleStep=512)
        self.n_ctx.setValue(settings.answer_model.n_ctx)
        self.threads = QSpinBox(minimum=0, maximum=256)
        self.threads.setSpecialValueText("Automatic")
        self.threads.setValue(settings.answer_model.n_threads or 0)
        self.trash_days = QSpinBox(minimum=0, maximum=3650, suffix=" days")
        self.trash_days.setObjectName("trashDays")
        self.trash_days.setSpecialValueText("Until the next start")
        self.trash_days.setToolTip("Deleted chats are purged for good (with their messages) after this long")
        self.trash_days.setValue(settings.trash_days)
        self.prefill = QCheckBox("Prepare the reply while I type (it starts sooner)")
        self.prefill.setObjectName("prefillWhileTyping")
        self.prefill.setToolTip("When typing pauses, the model reads the chat and the memories found for the "
                                "draft in the background. Nothing is stored; it uses some CPU while you type.")
        self.prefill.setChecked(settings.prefill_while_typing)
        self.user_name = QLineEdit(settings.user_name, placeholderText="User", maxLength=60)
        self.user_name.setObjectName("userName")
        self.user_name.setToolTip("The name memories are written about (“Sam likes tea”)")
        self.error_label = QLabel()
        self.error_label.setObjectName("settingsError")
        self.error_label.setStyleSheet("color: #d04040")
        self.error_label.hide()
        self.data_folder = data_folder
        self.other_apps = OtherAppsBox(server)
        self._build(data_folder)

    def _build(self, data_folder: Path) -> None:
        general = QGroupBox("Generation")
        form = QFormLayout(general)
        form.addRow("Temperature:", self.temperature)
        form.addRow("Top-p:", self.top_p)
        form.addRow("Top-k:", self.top_k)
        form.addRow("Repeat penalty:", self.repeat_penalty)
        form.addRow("Max reply tokens:", self.max_tokens)
        form.addRow("Context size (tokens):", self.n_ctx)
        form.addRow("CPU threads:", self.threads)
        chats = QGroupBox("Chats")
        chats_form = QFormLayout(chats)
        chats_form.addRow("Your name:", self.user_name)
        chats_form.addRow("System prompt:", self.system_prompt)
        chats_form.addRow("Theme:", self.theme)
        chats_form.addRow("Font size:", self.font_size)
        chats_form.addRow("Keep deleted chats:", self.trash_days)
        chats_form.addRow(self.prefill)
        folder = QLabel(str(data_folder))
        folder.setObjectName("dataFolder")
        folder.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        open_folder = QPushButton("Open")
        open_folder.clicked.connect(lambda: QDesktopServices.openUrl(QUrl.fromLocalFile(str(data_folder))))
        data_row = QHBoxLayout()
        data_row.addWidget(QLabel("Data folder:"))
        data_row.addWidget(folder, 1)
        data_row.addWidget(open_folder)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self._ok)
        buttons.rejected.connect(self.reject)
        box = QVBoxLayout(self)
        for widget in (self.answer, self.manager, self.shipped, self.fast_embedded, general, chats):
            box.addWidget(widget)
        box.addLayout(data_row)
        box.addWidget(self.other_apps)
        box.addWidget(self.error_label)
        box.addWidget(buttons)

    def _spec(self, box: ModelBox, old: ModelSpec) -> ModelSpec:
        return ModelSpec(path=box.model.value(), adapter=box.adapter.value(), n_ctx=self.n_ctx.value(),
                         n_threads=self.threads.value() or None, n_gpu_layers=old.n_gpu_layers)

    def result_settings(self) -> Settings:
        """The edited copy (not yet validated)."""
        new = copy.deepcopy(self._original)
        new.answer_model = self._spec(self.answer, self._original.answer_model)
        new.manager_model = self._spec(self.manager, self._original.manager_model)
        new.use_shipped_adapters = self.shipped.isChecked()
        new.fast_embedded_model = self.fast_embedded.isChecked()
        new.temperature = round(self.temperature.value(), 2)
        new.max_tokens = self.max_tokens.value()
        new.top_p = round(self.top_p.value(), 2)
        new.top_k = self.top_k.value()
        new.repeat_penalty = round(self.repeat_penalty.value(), 2)
        new.system_prompt = self.system_prompt.toPlainText().strip()
        new.theme = str(self.theme.currentData())
        new.font_size = self.font_size.value() if self.font_size.value() >= 6 else 0
        new.trash_days = self.trash_days.value()
        new.prefill_while_typing = self.prefill.isChecked()
        new.user_name = " ".join(self.user_name.text().split())
        return new

    def _ok(self) -> None:
        new = self.result_settings()
        try:
            new.validate()
        except InvalidInputError as exc:
            self.error_label.setText(str(exc))
            self.error_label.show()
            return
        self.applied.emit(new)
        self.accept()
