"""What other apps need to connect: the MCP configuration JSON (Claude Desktop, Cursor).

Light on purpose (the Settings dialog imports it): no SDK, no bank. `memory_r1_command()` is
the absolute command that starts `memory-r1 mcp`: the running executable when it is the
`memory-r1` script or the packaged app, else `memory-r1` on PATH, else this Python with
`-m app` (a checkout). A data folder set through MEMORY_R1_HOME is passed as `--data-dir`
so the MCP server opens the same bank as this app.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path


def memory_r1_command() -> tuple[str, list[str], dict[str, str]]:
    """(command, leading args, extra env) that run the `memory-r1` command line."""
    argv0 = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0] else None
    if argv0 is not None and argv0.name.lower().startswith("memory-r1") and argv0.is_file():
        return str(argv0), [], {}
    found = shutil.which("memory-r1")
    if found:
        return str(Path(found).resolve()), [], {}
    root = Path(__file__).resolve().parents[2]
    return str(Path(sys.executable).resolve()), ["-m", "app"], {"PYTHONPATH": str(root)}


def mcp_config(data_folder: str | os.PathLike | None = None) -> dict:
    """`{"mcpServers": {"memory-r1": {"command": ..., "args": [..., "mcp"]}}}` for this install;
    `data_folder` (default: $MEMORY_R1_HOME when set) is passed as `--data-dir`."""
    command, args, env = memory_r1_command()
    folder = data_folder if data_folder is not None else os.environ.get("MEMORY_R1_HOME")
    if folder:
        args = args + ["--data-dir", str(Path(folder).resolve())]
    entry: dict = {"command": command, "args": args + ["mcp"]}
    if env:
        entry["env"] = env
    return {"mcpServers": {"memory-r1": entry}}


def mcp_config_json(data_folder: str | os.PathLike | None = None) -> str:
    return json.dumps(mcp_config(data_folder), indent=2)
