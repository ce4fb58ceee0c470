"""Entry script of the frozen app (PyInstaller): the same `memory-r1` command line as the venv.

With no command it opens the desktop app (app.cli.main); `memory-r1 gui --smoke-test` is the
packaging smoke check (packaging/smoke_check.py).
"""

import multiprocessing
import sys

if __name__ == "__main__":
    multiprocessing.freeze_support()  # a frozen child process must not re-run the app
    from app.cli import main

    sys.exit(main())
