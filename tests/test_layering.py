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


def _from_imports(pkg: str):
    """(path, module, name) of every absolute `from module import name` under `pkg`."""
    for path in (ROOT / pkg).rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    yield path, node.module, alias.name


def test_gui_does_not_import_the_command_line():
    bad = []
    for path in (ROOT / "app" / "gui").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
                     else [])
            bad += [(str(path), n) for n in names if n == "app.cli" or n.startswith("app.cli.")]
    assert not bad, bad


def test_training_uses_no_core_fakes():
    """Fakes are for tests and benchmarks: training code gets its stand-ins injected."""
    bad = [(str(p), m, n) for p, m, n in _from_imports("training")
           if m == "core.fakes" or (m == "core" and n == "fakes") or n == "HashEmbedder"]
    for path in (ROOT / "training").rglob("*.py"):  # `import core.fakes` (the whole dotted name)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                bad += [(str(path), a.name) for a in node.names if a.name.startswith("core.fakes")]
    assert not bad, bad


def test_no_module_imports_another_modules_private_names():
    """`from x import _y` across project modules is a private reach-through: make `_y` public
    (or move it) instead."""
    ours = ("core", "training", "app", "benchmarks")
    bad = [(str(p.relative_to(ROOT)), m, n) for pkg in ours for p, m, n in _from_imports(pkg)
           if m.split(".")[0] in ours and n.startswith("_") and not n.startswith("__")]
    assert not bad, bad
