"""The Makefile's set-up logic, on a copy of it with a stand-in venv (no real pip, no rebuild):
`make run` without a display exits 0 after the app's one line, pip is quiet unless it fails
(then its log is shown), and a fresh clone's `make test` creates the venv, installs and tests."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
MAKE = shutil.which("make")
pytestmark = pytest.mark.skipif(MAKE is None, reason="make is not installed")

FAKE_PY = """#!/bin/sh
# a stand-in venv python: `-m pip install ...` succeeds quietly unless FAIL_PIP is set
if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then
  echo "pip noise: Collecting things" ; echo "$@" >> "$(dirname "$0")/../pip-calls"
  if [ -n "$FAIL_PIP" ]; then echo "ERROR: No matching distribution found for torch"; exit 1; fi
  exit 0
fi
exit 0
"""

# a stand-in for packaging/install_llama_cpp.sh (the real one compiles llama.cpp): one line, then
# the stand-in pip, so FAIL_PIP fails it too
FAKE_LLAMA = """#!/bin/sh
echo "pip install llama-cpp-python (stand-in)"
"$1" -m pip wheel llama-cpp-python >>"$2" 2>&1
"""

FAKE_APP = """#!/bin/sh
echo "memory-r1: no display found (neither DISPLAY nor WAYLAND_DISPLAY is set)" >&2
exit 2
"""


def _copy_project(tmp_path: Path) -> None:
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "packaging").mkdir()
    (tmp_path / "packaging" / "install_llama_cpp.sh").write_text(FAKE_LLAMA)


def _tree(tmp_path: Path, *, installed: bool) -> Path:
    _copy_project(tmp_path)
    bindir = tmp_path / ".venv" / "bin"
    bindir.mkdir(parents=True)
    for name, text in (("python", FAKE_PY), ("memory-r1", FAKE_APP)):
        (bindir / name).write_text(text)
        (bindir / name).chmod(0o755)
    if installed:
        for dep in ("pyproject.toml", "packaging/install_llama_cpp.sh"):
            earlier = (tmp_path / dep).stat().st_mtime - 10
            os.utime(tmp_path / dep, (earlier, earlier))
        (tmp_path / ".venv" / ".stamp-run").touch()
    return tmp_path


def _make(tree: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([MAKE, "--no-print-directory", *args], cwd=tree, capture_output=True, text=True,
                          timeout=60, env={**os.environ, **env})


def test_make_run_without_a_display_is_a_clean_exit_with_one_line(tmp_path):
    tree = _tree(tmp_path, installed=True)
    res = _make(tree, "run")
    assert res.returncode == 0, res.stderr
    assert res.stderr.strip().splitlines() == [
        "memory-r1: no display found (neither DISPLAY nor WAYLAND_DISPLAY is set)"]
    assert "Error" not in res.stdout + res.stderr
    # another command's exit code 2 (argparse's usage error) is not swallowed
    res = _make(tree, "run", "ARGS=memory list")
    assert res.returncode != 0 and "Error 2" in res.stderr


def test_pip_is_quiet_when_it_works_and_shows_its_log_when_it_fails(tmp_path):
    tree = _tree(tmp_path, installed=False)
    res = _make(tree, ".venv/.stamp-run")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "pip noise" not in res.stdout + res.stderr
    assert [line for line in res.stdout.splitlines() if line.startswith("pip install")] == [
        "pip install torch==2.13.0", "pip install llama-cpp-python (stand-in)", "pip install -e ."]
    (tree / ".venv" / ".stamp-run").unlink()
    res = _make(tree, ".venv/.stamp-run", FAIL_PIP="1")
    assert res.returncode != 0
    assert "No matching distribution found for torch" in res.stdout
    assert "pip install failed; the full log is .venv/pip.log" in res.stdout
    assert not (tree / ".venv" / ".stamp-run").exists()


def test_make_test_from_a_fresh_clone_creates_the_venv_installs_and_tests(tmp_path):
    _copy_project(tmp_path)
    res = _make(tmp_path, "-n", "test")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    steps = ["-m venv .venv", "install -q --upgrade pip", "install -q torch==", "install_llama_cpp.sh",
             "install -q -e '.[test,train,eval]'",
             "ruff check", "mypy", "-m pytest"]
    at = [next(i for i, line in enumerate(lines) if step in line) for step in steps]
    assert at == sorted(at), lines
