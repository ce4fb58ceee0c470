"""The Models page widget, offscreen: listing with fit, import, roles, remove with confirmation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core import fakes
from core.config import Settings, settings_path
from core.catalog.store import ModelStore
from core.paths import embedded_gguf

pytest.importorskip("PySide6")


def write_gguf(path: Path) -> Path:
    return fakes.write_gguf(path, {"token_embd.weight": np.zeros(1000, dtype=np.float32)},
                            name="Page Test", context_length=4096)


@pytest.fixture
def page(qtbot, data_home):
    from app.gui.models_page import ModelsPage

    widget = ModelsPage(ModelStore(data_home), Settings())
    qtbot.addWidget(widget)
    qtbot.waitUntil(lambda: widget.installed.rowCount() == 1 and widget.catalog.rowCount() > 0,
                    timeout=10_000)
    return widget


def cells(table, row):
    return [table.item(row, c).text() for c in range(table.columnCount())]


def test_page_lists_embedded_model_with_fit_and_roles_and_the_catalog(page):
    name, size, quant, ctx, fit, roles = cells(page.installed, 0)
    assert "SmolLM2 135M" in name and fit == "fits" and roles == "answers, memory"
    assert ctx == "8192" and quant
    catalog_names = [cells(page.catalog, r)[0] for r in range(page.catalog.rowCount())]
    assert any("Qwen2.5 3B" in n for n in catalog_names) and len(catalog_names) == 6
    assert all(cells(page.catalog, r)[4] == "verified sha256" for r in range(page.catalog.rowCount()))
    assert "fits: needs about" in page.installed.item(0, 0).toolTip()


def test_import_use_for_a_role_and_remove(page, qtbot, tmp_path, data_home):
    src = write_gguf(tmp_path / "Local-Model.gguf")
    with qtbot.waitSignal(page.refreshed, timeout=10_000):
        page.import_path(src)
    qtbot.waitUntil(lambda: page.installed.rowCount() == 2, timeout=10_000)
    assert "Imported" in page.status.text()
    page.installed.selectRow(1)
    with qtbot.waitSignal(page.settings_changed, timeout=5_000) as changed:
        page.use_selected("manager")
    saved = Settings.load(settings_path(data_home))
    assert changed.args[0].manager_model.path == saved.manager_model.path
    assert Path(saved.manager_model.path).parent == data_home / "models"
    assert saved.answer_model.path is None
    qtbot.waitUntil(lambda: cells(page.installed, 1)[5] == "memory", timeout=10_000)

    # remove asks first; cancelling keeps the model
    from PySide6.QtWidgets import QApplication, QMessageBox

    page.installed.selectRow(1)
    page.remove_selected()
    box = QApplication.activeModalWidget() or page.findChild(QMessageBox, "confirmRemoveModel")
    assert box is not None and box.objectName() == "confirmRemoveModel"
    box.button(QMessageBox.StandardButton.Cancel).click()
    assert len(page.store.list_models()) == 2
    page.remove_selected()
    [box] = [b for b in page.findChildren(QMessageBox, "confirmRemoveModel") if b.isVisible()]
    with qtbot.waitSignal(page.refreshed, timeout=10_000):
        [b for b in box.buttons() if b.text() == "Remove"][0].click()
    qtbot.waitUntil(lambda: page.installed.rowCount() == 1, timeout=10_000)
    assert Settings.load(settings_path(data_home)).manager_model.path is None
    assert len(page.store.list_models()) == 1


def test_importing_a_bad_file_shows_the_sentence(page, qtbot, tmp_path):
    from PySide6.QtWidgets import QMessageBox

    bad = tmp_path / "broken.gguf"
    bad.write_text("nope")
    page.import_path(bad)
    qtbot.waitUntil(lambda: page.findChild(QMessageBox, "userError") is not None, timeout=10_000)
    box = page.findChild(QMessageBox, "userError")
    assert "not a GGUF model file" in box.text() and "not a GGUF" in page.status.text()
    box.close()
    assert page.installed.rowCount() == 1


def test_embedded_model_cannot_be_removed_from_the_page(page):
    page.installed.selectRow(0)
    page.remove_selected()
    assert "cannot be removed" in page.status.text()
    assert Path(page.store.list_models()[0].path) == embedded_gguf()


def test_remove_is_disabled_on_the_embedded_model_with_a_tooltip(page, qtbot, tmp_path):
    page.installed.selectRow(0)
    assert not page.remove_btn.isEnabled()
    assert page.remove_btn.toolTip() == "The embedded model ships with the app and cannot be removed."
    page.remove_selected()  # even called directly: nothing asked, nothing removed
    assert "cannot be removed" in page.status.text() and len(page.store.list_models()) == 1
    src = write_gguf(tmp_path / "Removable.gguf")
    with qtbot.waitSignal(page.refreshed, timeout=10_000):
        page.import_path(src)
    qtbot.waitUntil(lambda: page.installed.rowCount() == 2, timeout=10_000)
    page.installed.selectRow(1)
    assert page.remove_btn.isEnabled() and page.remove_btn.toolTip() == "Remove Page Test and delete its file."
    page.installed.selectRow(0)
    assert not page.remove_btn.isEnabled()


def test_importing_a_model_that_is_there_selects_it_instead_of_listing_it_twice(page, qtbot, tmp_path):
    from PySide6.QtWidgets import QMessageBox

    copy = tmp_path / "my-smollm.gguf"
    copy.write_bytes(embedded_gguf().read_bytes())
    with qtbot.waitSignal(page.refreshed, timeout=20_000):
        page.import_path(copy)
    assert page.installed.rowCount() == 1
    assert "already installed as 'smollm2-135m-instruct-q4_1'" in page.status.text()
    assert page.installed.selectionModel().selectedRows()[0].row() == 0
    assert not [b for b in page.findChildren(QMessageBox) if b.isVisible()]  # a status line, no error box
    assert not list(page.store.models_dir.glob("*.gguf"))

    src = write_gguf(tmp_path / "Once.gguf")
    with qtbot.waitSignal(page.refreshed, timeout=10_000):
        page.import_path(src)
    qtbot.waitUntil(lambda: page.installed.rowCount() == 2, timeout=10_000)
    page.installed.clearSelection()
    with qtbot.waitSignal(page.refreshed, timeout=10_000):
        page.import_path(src)
    assert page.installed.rowCount() == 2 and "already installed as" in page.status.text()
    assert page.installed.selectionModel().selectedRows()[0].row() == 1


def test_sizes_are_right_aligned(page):
    from PySide6.QtCore import Qt

    for table in (page.installed, page.catalog):
        align = Qt.AlignmentFlag(table.item(0, page.SIZE_COL).textAlignment())
        assert align & Qt.AlignmentFlag.AlignRight
