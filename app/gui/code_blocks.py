"""Code blocks of a rendered reply: syntax highlighting and a "Copy code" link above each.

`decorate_code(document)` runs on a QTextDocument just filled by `setMarkdown`: each fenced or
indented code block gets Pygments colours (when Pygments is installed; plain monospace
otherwise) and a header line "python · Copy code" whose link is "copy:<n>"; it returns the
blocks' texts in order, for the link to copy. Colours are mid-tones readable on light and dark
backgrounds. Pygments is imported with the first code block (not on the window's start-up
path). GUI thread only.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtGui import QColor, QFont, QTextBlockFormat, QTextCharFormat, QTextCursor, QTextDocument, QTextFormat

COPY_SCHEME = "copy"
_PYGMENTS: dict[str, Any] = {}  # filled by `_pygments()` on first use


def _pygments() -> dict[str, Any]:
    """Pygments' lexer lookups and the token colours, imported once; empty when it is absent."""
    if not _PYGMENTS:
        try:  # optional: highlighting only
            from pygments.lexers import get_lexer_by_name, guess_lexer
            from pygments.token import Comment, Keyword, Name, Number, Operator, String
            from pygments.util import ClassNotFound
        except ImportError:  # pragma: no cover - Pygments absent
            _PYGMENTS["colours"] = None
        else:
            _PYGMENTS.update(get_lexer_by_name=get_lexer_by_name, guess_lexer=guess_lexer,
                             ClassNotFound=ClassNotFound, colours=(
                (Comment, "#7c8593"), (Keyword, "#b04dd6"), (String, "#3f9f4f"), (Number, "#d9822b"),
                (Name.Function, "#3b82f6"), (Name.Class, "#3b82f6"), (Name.Builtin, "#0f9fb5"),
                (Operator, "#c2410c")))
    return _PYGMENTS


def _code_blocks(document: QTextDocument) -> list[list]:
    """Runs of consecutive code blocks, each a list of QTextBlocks."""
    runs: list[list] = []
    block, previous = document.begin(), False
    while block.isValid():
        fmt = block.blockFormat()
        code = fmt.hasProperty(QTextFormat.Property.BlockCodeFence) or fmt.hasProperty(
            QTextFormat.Property.BlockCodeLanguage)
        if code:
            if previous:
                runs[-1].append(block)
            else:
                runs.append([block])
        previous = code
        block = block.next()
    return runs


def _language(block) -> str:
    value = block.blockFormat().property(QTextFormat.Property.BlockCodeLanguage)
    return str(value or "").strip()


def _highlight(document: QTextDocument, start: int, code: str, language: str) -> None:
    if not code.strip():
        return
    pyg = _pygments()
    colours = pyg["colours"]
    if colours is None:
        return
    try:
        lexer = pyg["get_lexer_by_name"](language) if language else pyg["guess_lexer"](code)
    except pyg["ClassNotFound"]:
        return
    cursor = QTextCursor(document)
    offset = 0
    for token, value in lexer.get_tokens(code):
        colour = next((c for t, c in colours if token in t), None)
        if colour is not None and value.strip():
            cursor.setPosition(start + offset)
            cursor.setPosition(start + offset + len(value), QTextCursor.MoveMode.KeepAnchor)
            fmt = QTextCharFormat()
            fmt.setForeground(QColor(colour))
            cursor.mergeCharFormat(fmt)
        offset += len(value)


def decorate_code(document: QTextDocument) -> list[str]:
    """Highlight every code block and put a "Copy code" link above it; returns their texts."""
    runs = _code_blocks(document)
    codes = ["\n".join(b.text() for b in run) for run in runs]
    starts = [run[0].position() for run in runs]
    formats = [(run[0].blockFormat(), run[0].charFormat()) for run in runs]
    languages = [_language(run[0]) for run in runs]
    for start, code, language in zip(starts, codes, languages):
        _highlight(document, start, code, language)
    for n in range(len(runs) - 1, -1, -1):  # from the end: earlier positions stay valid
        cursor = QTextCursor(document)
        cursor.setPosition(starts[n])
        cursor.insertBlock(*formats[n])  # the code moves down into a block of its own format
        cursor.movePosition(QTextCursor.MoveOperation.PreviousBlock)
        cursor.setBlockFormat(QTextBlockFormat())
        label = QTextCharFormat()
        label.setFontWeight(QFont.Weight.Bold)
        label.setFontPointSize(max(1.0, document.defaultFont().pointSizeF() * 0.85))
        cursor.insertText(f"{languages[n] or 'code'} · ", label)
        link = QTextCharFormat(label)
        link.setAnchor(True)
        link.setAnchorHref(f"{COPY_SCHEME}:{n}")
        link.setFontUnderline(True)
        link.setForeground(QColor("#3b82f6"))
        cursor.insertText("Copy code", link)
    return codes
