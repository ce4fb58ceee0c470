"""Packaging files (packaging/): fast checks only, PyInstaller itself is never run here.

The spec is evaluated with stand-in PyInstaller build classes (when PyInstaller is installed) to
check what it collects; the .desktop file and AppStream metadata are validated with
desktop-file-validate / appstreamcli where installed, and structurally always; the launcher and
install.sh are run for real on a stand-in bundle. The bundle itself is proven by
`make package` (packaging/smoke_check.py).
"""

from __future__ import annotations

import ast
import configparser
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "packaging"
SPEC = PKG / "memory_r1.spec"
DESKTOP = PKG / "memory-r1.desktop"
METAINFO = PKG / "io.github.memory_r1.MemoryR1.metainfo.xml"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


# --- the spec -------------------------------------------------------------------------------
def _spec_literal(name: str):
    tree = ast.parse(SPEC.read_text(encoding="utf-8"), filename=str(SPEC))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{name} not found in the spec")


def test_spec_parses_and_names_existing_files():
    ast.parse(SPEC.read_text(encoding="utf-8"))
    assert (PKG / "entry_point.py").is_file()
    assert (ROOT / "assets" / "icons" / "memory-r1.svg").is_file()
    from core.paths import embedded_embedder_dir, embedded_gguf

    assert embedded_gguf().is_file()
    for rel in _spec_literal("EMBEDDER_FILES"):
        if rel != "README.md":
            assert (embedded_embedder_dir() / rel).is_file(), rel


def test_spec_excludes_training_and_unused_qt():
    excludes = set(_spec_literal("excludes"))
    assert {"training", "trl", "peft", "datasets", "accelerate", "matplotlib"} <= excludes
    assert {"PySide6.QtWebEngineCore", "PySide6.QtQml", "PySide6.QtQuick"} <= excludes
    assert not excludes & {"torch", "sentence_transformers", "transformers", "llama_cpp", "sqlite_vec",
                           "sqlean", "PySide6.QtWidgets", "PySide6.QtGui", "PySide6.QtSvg", "sklearn", "scipy"}


def test_entry_point_runs_the_cli():
    tree = ast.parse((PKG / "entry_point.py").read_text(encoding="utf-8"))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "app.cli" in imported


class _Recorder:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs
        for key in ("pure", "scripts", "binaries", "datas"):
            setattr(self, key, list(kwargs.get(key, [])))


def test_spec_collects_models_libraries_and_app_modules(tmp_path):
    if importlib.util.find_spec("PyInstaller") is None:
        pytest.skip("PyInstaller is not installed (the `package` extra): the static checks above still ran")
    recorded = {}

    def builder(name):
        def make(*args, **kwargs):
            recorded[name] = _Recorder(*args, **kwargs)
            return recorded[name]
        return make

    namespace = {name: builder(name) for name in ("Analysis", "PYZ", "EXE", "COLLECT", "BUNDLE")}
    namespace.update(SPECPATH=str(PKG), __file__=str(SPEC), __name__="__spec__")
    saved_path = list(sys.path)
    try:
        exec(compile(SPEC.read_text(encoding="utf-8"), str(SPEC), "exec"), namespace)
    finally:
        sys.path[:] = saved_path
    analysis = recorded["Analysis"].kwargs
    datas = {(Path(src).name, dest.replace(os.sep, "/")) for src, dest in analysis["datas"]}
    assert ("SmolLM2-135M-Instruct.Q4_1.gguf", "models") in datas
    assert ("model.safetensors", "models/all-MiniLM-L6-v2") in datas
    assert ("config.json", "models/all-MiniLM-L6-v2/1_Pooling") in datas
    assert any(Path(src).name == "assets" and dest == "assets" for src, dest in analysis["datas"])
    binaries = {(Path(src).name, dest.replace(os.sep, "/")) for src, dest in analysis["binaries"]}
    if sys.platform.startswith("linux"):
        for lib in ("libllama.so", "libmtmd.so", "libggml.so.0", "libggml-base.so.0", "libggml-cpu.so.0"):
            assert (lib, "llama_cpp/lib") in binaries, lib
        assert not any(name.count(".") > 2 for name, _ in binaries if name.startswith("libggml")), \
            "the fully versioned copies of the llama.cpp libraries are not needed"
        assert ("vec0.so", "sqlite_vec") in binaries
    hidden = set(analysis["hiddenimports"])
    assert {"app.cli.gui_cmd", "app.cli.chat_cmd", "app.gui.app", "app.devtools.smoke",
            "core.assistant.pipeline"} <= hidden
    assert not any(m.startswith("training") or m.endswith(("train_cmd", "eval_cmd")) for m in hidden)
    assert recorded["COLLECT"].kwargs["name"] == "memory-r1"


# --- the .desktop file and AppStream metadata ------------------------------------------------
def test_desktop_file_is_valid():
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # keys are case-sensitive
    parser.read_string(DESKTOP.read_text(encoding="utf-8"))
    entry = parser["Desktop Entry"]
    assert entry["Type"] == "Application"
    assert entry["Name"] == "Memory-R1"
    assert entry["Exec"].split()[0] == "memory-r1"
    assert entry["Icon"] == "memory-r1"  # the file is assets/icons/memory-r1.svg
    assert entry["Terminal"] == "false"
    assert entry["Categories"].endswith(";")
    assert entry["StartupWMClass"] == "memory-r1"
    validator = shutil.which("desktop-file-validate")
    if validator:
        res = subprocess.run([validator, str(DESKTOP)], capture_output=True, text=True)
        assert res.returncode == 0 and "error" not in res.stdout, res.stdout + res.stderr


def test_desktop_file_id_matches_the_app():
    # Wayland/X11 match windows to the entry by this name (QGuiApplication.setDesktopFileName)
    source = (ROOT / "app" / "gui" / "app.py").read_text(encoding="utf-8")
    assert f'setDesktopFileName("{DESKTOP.stem}")' in source


def test_metainfo_is_valid():
    root = ET.parse(METAINFO).getroot()
    assert root.tag == "component" and root.get("type") == "desktop-application"
    assert root.findtext("id") == METAINFO.name.removesuffix(".metainfo.xml")
    assert root.findtext("metadata_license") == "CC0-1.0"
    assert root.findtext("project_license") == PYPROJECT["project"]["license"]["text"]
    assert root.find("launchable").text == DESKTOP.name
    assert root.find("provides/binary").text == "memory-r1"
    versions = [r.get("version") for r in root.iter("release")]
    assert versions and versions[0] == PYPROJECT["project"]["version"]
    assert root.find("description/p") is not None and root.findtext("summary")
    cli = shutil.which("appstreamcli")
    if cli:
        res = subprocess.run([cli, "validate", "--no-net", str(METAINFO)], capture_output=True, text=True)
        assert res.returncode == 0, res.stdout + res.stderr


# --- launcher, install.sh, smoke-check helpers ------------------------------------------------
def _fake_unpacked(tmp_path: Path) -> Path:
    """The tarball's layout with a stand-in bundle that prints its arguments and environment."""
    top = tmp_path / "memory-r1-0.0-linux-x"
    (top / "bundle").mkdir(parents=True)
    fake = top / "bundle" / "memory-r1"
    fake.write_text('#!/bin/sh\necho "args:$#:$1:$2"\necho "pythonpath:${PYTHONPATH-unset}"\n'
                    'echo "lang:${LANG-unset}"\n')
    fake.chmod(0o755)
    shutil.copy(PKG / "memory-r1.sh", top / "memory-r1")
    shutil.copy(PKG / "install.sh", top / "install.sh")
    for sub, src in (("share/applications", DESKTOP), ("share/metainfo", METAINFO),
                     ("share/icons/hicolor/scalable/apps", ROOT / "assets" / "icons" / "memory-r1.svg")):
        (top / sub).mkdir(parents=True)
        shutil.copy(src, top / sub)
    return top


@pytest.mark.skipif(not Path("/bin/sh").exists(), reason="POSIX shell scripts")
def test_launcher_runs_the_bundle_with_no_path(tmp_path):
    top = _fake_unpacked(tmp_path)
    res = subprocess.run(["/usr/bin/env", "-i", "PYTHONPATH=/somewhere", "/bin/sh", str(top / "memory-r1"),
                          "gui", "two words"], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["args:2:gui:two words", "pythonpath:unset", "lang:C.UTF-8"]
    res = subprocess.run(["/usr/bin/env", "-i", "LANG=de_DE.UTF-8", "/bin/sh", str(top / "memory-r1")],
                         capture_output=True, text=True, timeout=30)
    assert res.stdout.splitlines()[-1] == "lang:de_DE.UTF-8"  # the user's locale is kept


@pytest.mark.skipif(not Path("/bin/sh").exists(), reason="POSIX shell scripts")
def test_install_script_adds_and_removes_the_menu_entry(tmp_path):
    top = _fake_unpacked(tmp_path)
    home = tmp_path / "home"
    env = {"HOME": str(home), "XDG_DATA_HOME": str(home / "data"), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    res = subprocess.run(["/bin/sh", str(top / "install.sh")], env=env, capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    desktop = home / "data" / "applications" / "memory-r1.desktop"
    text = desktop.read_text(encoding="utf-8")
    assert f'Exec="{top}/memory-r1"' in text and f"TryExec={top}/memory-r1" in text
    assert (home / "data" / "icons/hicolor/scalable/apps/memory-r1.svg").is_file()
    assert (home / "data" / "metainfo" / METAINFO.name).is_file()
    wrapper = home / ".local" / "bin" / "memory-r1"
    out = subprocess.run([str(wrapper), "x", "y"], capture_output=True, text=True, timeout=30)
    assert out.stdout.splitlines()[0] == "args:2:x:y"
    if shutil.which("desktop-file-validate"):
        check = subprocess.run(["desktop-file-validate", str(desktop)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout
    res = subprocess.run(["/bin/sh", str(top / "install.sh"), "--uninstall"], env=env, capture_output=True,
                         text=True, timeout=30)
    assert res.returncode == 0 and not desktop.exists() and not wrapper.exists()


def _smoke_check_module():
    spec = importlib.util.spec_from_file_location("smoke_check", PKG / "smoke_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_smoke_check_unpacks_a_tarball_and_finds_the_launcher(tmp_path):
    smoke = _smoke_check_module()
    top = _fake_unpacked(tmp_path / "src")
    tarball = tmp_path / "b.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(top, arcname=top.name)
    launcher = smoke.unpack(tarball, tmp_path / "out")
    assert launcher == tmp_path / "out" / top.name / "memory-r1"
    assert os.access(launcher, os.X_OK)
    assert isinstance(smoke.network_isolation(), list)


def test_gui_command_has_a_hidden_smoke_test_option(capsys):
    from app.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["gui", "--smoke-test"]).smoke_test is True
    assert parser.parse_args(["gui"]).smoke_test is False
    with pytest.raises(SystemExit):
        parser.parse_args(["gui", "--help"])
    assert "--smoke-test" not in capsys.readouterr().out


def test_makefile_package_target_builds_and_smoke_checks():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "\npackage:" in makefile
    body = makefile.split("\npackage:", 1)[1].split("\n\n", 1)[0]
    assert "packaging/build.sh" in body and "packaging/smoke_check.py" in body
    assert "[package]" in makefile
