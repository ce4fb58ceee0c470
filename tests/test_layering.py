"""Import rules, checked mechanically: core never imports Qt/app/training; training never
imports Qt/app; importing the chat path never loads trl or peft."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _imports(pkg: str):
    for path in (ROOT / pkg).rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield path, alias.name.split(".")[0]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                yield path, node.module.split(".")[0]


def test_core_imports_no_qt_app_or_training():
    bad = [(str(p), m) for p, m in _imports("core") if m in {"PySide6", "app", "training"}]
    assert not bad, bad


def test_training_imports_no_qt_or_app():
    bad = [(str(p), m) for p, m in _imports("training") if m in {"PySide6", "app"}]
    assert not bad, bad


def test_chat_path_does_not_load_training_stack():
    code = (
        "import sys, app.cli; app.cli.build_parser();"
        "import core.types, core.config, core.embeddings;"
        "bad=[m for m in ('trl','peft','training','PySide6') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
