"""The `memory-r1` command line.

Each command group lives in its own module with `register(subparsers)`; registration
imports nothing heavy (torch, llama.cpp, trl, Qt are imported inside the command functions).
A command line that opens the desktop app (`gui`, or no command) without asking for help
registers the gui command alone: the other modules cost ~20 ms of CPU on the app's start-up
path (issue 17), and they change nothing in how that line parses.
A command function takes the parsed `args` and returns an exit code. `UserError`s print one
line on stderr and exit non-zero; anything else is a bug and gets a traceback in the log.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

# llama.cpp's OpenMP threads spin while idle unless told not to: on a busy 2-core machine that
# made generation ~10x slower (measured in benchmarks/runtime.py). Must be set before
# llama_cpp or torch is first imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from core.errors import UserError  # noqa: E402

log = logging.getLogger("app.cli")

# command-group modules, in help order; one that cannot be imported is skipped (the desktop
# bundle leaves the eval and train commands out: packaging/memory_r1.spec)
COMMAND_MODULES = [
    "app.cli.gui_cmd",
    "app.cli.memory_cmd",
    "app.cli.chat_cmd",
    "app.cli.eval_cmd",
    "app.cli.train_cmd",
    "app.cli.models_cmd",
    "app.cli.mcp_cmd",
    "app.cli.serve_cmd",
]


GUI_MODULE = "app.cli.gui_cmd"
_GLOBAL_FLAGS = ("-v", "--verbose")
_GLOBAL_VALUED = ("--data-dir",)


def opens_the_app(argv: list[str]) -> bool:
    """Whether `argv` is the desktop app's command line: the global options, then `gui` and
    its options, or no command at all, with no -h/--help before the command."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in _GLOBAL_FLAGS or arg.startswith(tuple(f"{o}=" for o in _GLOBAL_VALUED)):
            i += 1
        elif arg in _GLOBAL_VALUED:
            i += 2
        else:
            break
    return i >= len(argv) or argv[i] == "gui"


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The whole command line, or, for an `argv` that `opens_the_app`, the same parser with the
    gui command alone."""
    modules = [GUI_MODULE] if argv is not None and opens_the_app(list(argv)) else COMMAND_MODULES
    parser = argparse.ArgumentParser(
        prog="memory-r1",
        description="Memory-R1 Desktop: a private, local-first assistant that remembers.",
    )
    parser.add_argument("--data-dir", metavar="DIR",
                        help="data folder (default: $MEMORY_R1_HOME or the platform's user data dir)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug output to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.data_dir:
        os.environ["MEMORY_R1_HOME"] = os.path.abspath(args.data_dir)
    from core.paths import private_umask

    previous = private_umask()  # everything the command writes is owner-only
    try:
        return _run(args)
    finally:
        os.umask(previous)  # main() also runs in-process (tests, the GUI smoke run)


def _run(args) -> int:
    from app.logs import setup_logging
    from core.paths import make_private

    try:
        make_private()  # an install from before modes were set
    except UserError:
        pass  # an unusable data dir is reported by the command that needs it
    setup_logging(verbose=args.verbose)
    func = getattr(args, "func", None)
    if func is None:
        # no command: open the desktop app
        from app.cli import gui_cmd  # imported lazily: Qt

        func = gui_cmd.run_gui
    try:
        return int(func(args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
