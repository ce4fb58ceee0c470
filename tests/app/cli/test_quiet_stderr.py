"""A command that embeds with the real model writes nothing on stderr when stderr is not a
terminal (no "Loading weights" progress bars)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_memory_add_with_the_real_embedder_is_silent_on_a_piped_stderr(data_home):
    env = dict(os.environ, PYTHONPATH=str(ROOT), MEMORY_R1_HOME=str(data_home))
    env.pop("TQDM_DISABLE", None)
    proc = subprocess.run([sys.executable, "-m", "app", "memory", "add", "Maya has a dog called Rex"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "added #1" in proc.stdout
    assert proc.stderr == ""


def test_progress_bars_stay_on_for_a_terminal(monkeypatch):
    from core.embeddings import quiet_progress_bars

    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    quiet_progress_bars(interactive=True)
    assert "HF_HUB_DISABLE_PROGRESS_BARS" not in os.environ
