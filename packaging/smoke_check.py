"""Smoke check of the desktop bundle: it starts, opens a chat, gets a reply, exits cleanly.

    .venv/bin/python packaging/smoke_check.py [--bundle dist/memory-r1-*.tar.gz] [--venv]

The tarball is unpacked into a fresh temporary folder outside the source tree and its launcher
is run as `memory-r1 gui --smoke-test` (app/devtools/smoke.py) with `env -i` (no PATH, so no Python
on it; only HOME, MEMORY_R1_HOME = temporary folders and QT_QPA_PLATFORM=offscreen; the data
folder holds a settings.json with greedy sampling and a 96-token reply cap), inside a
new network namespace (`unshare -rn`: no network at all) where the kernel allows it; otherwise
the process's inet sockets are polled and any one fails the check. While it runs, its memory
maps are checked: nothing may be loaded from the source tree or its .venv.

`--venv` also runs the venv entry point that `make run` starts (.venv/bin/memory-r1) the same
way, for comparison. For each run it prints the time from launch to the window on screen and
to a usable window (models loaded, input enabled), the resident memory after the first reply,
and the bundle's size. Exit status 0 only if every run passed.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def network_isolation() -> list[str]:
    """The command prefix giving a process no network (`unshare -rn`), or [] where not allowed."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return []
    probe = subprocess.run([unshare, "-rn", "true"], capture_output=True)
    return [unshare, "-rn"] if probe.returncode == 0 else []


def unpack(tarball: Path, dest: Path) -> Path:
    """Unpack the tarball into `dest`; returns the launcher's path."""
    with tarfile.open(tarball) as tar:
        tar.extractall(dest, filter="tar")  # the bundle's own relative symlinks are kept
    launchers = list(dest.glob("*/memory-r1"))
    if len(launchers) != 1:
        raise SystemExit(f"expected one */memory-r1 launcher in {tarball}, found {launchers}")
    return launchers[0]


# The smoke run's settings (written to its empty data dir, read by the app as a user's would be):
# greedy sampling so the bundle and the venv generate the same reply, and a short reply cap so
# the check's duration depends little on what the small model chooses to say.
SMOKE_SETTINGS = {"temperature": 0.0, "max_tokens": 96}


def make_home(work: Path) -> dict:
    """Fresh HOME and MEMORY_R1_HOME under `work` (settings.json in the latter); the env for env -i."""
    env = {"HOME": str(work / "home"), "MEMORY_R1_HOME": str(work / "data"), "QT_QPA_PLATFORM": "offscreen"}
    for key in ("HOME", "MEMORY_R1_HOME"):
        Path(env[key]).mkdir(parents=True)
    (work / "data" / "settings.json").write_text(json.dumps(SMOKE_SETTINGS), encoding="utf-8")
    return env


def du_mb(path: Path) -> float:
    total = sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    return total / 2**20


class Watch(threading.Thread):
    """Polls the process: inet sockets (none allowed) and mapped files (none from the tree)."""

    def __init__(self, pid: int, forbidden_roots: list[Path]) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.forbidden = [str(p) for p in forbidden_roots]
        self.sockets: set[str] = set()
        self.tree_files: set[str] = set()
        self.stop = threading.Event()

    def run(self) -> None:
        import psutil

        try:
            proc = psutil.Process(self.pid)
            while not self.stop.is_set():
                for conn in proc.net_connections(kind="inet"):
                    self.sockets.add(f"{conn.laddr} -> {conn.raddr} {conn.status}")
                for mm in proc.memory_maps(grouped=True):
                    if any(mm.path.startswith(root + os.sep) for root in self.forbidden):
                        self.tree_files.add(mm.path)
                self.stop.wait(0.5)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            return


def run_smoke(label: str, argv: list[str], env: dict, forbidden_roots: list[Path], timeout_s: float) -> dict:
    """Run one smoke-test process; returns its figures and whether it passed."""
    isolation = network_isolation()
    cmd = isolation + [shutil.which("env") or "/usr/bin/env", "-i"] + [f"{k}={v}" for k, v in env.items()] + argv
    print(f"== {label}: {' '.join(cmd)}", flush=True)
    load = os.getloadavg()[0]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    watch = Watch(proc.pid, forbidden_roots)
    watch.start()
    events: dict[str, dict] = {}
    tail: list[str] = []
    killer = threading.Timer(timeout_s, proc.kill)
    killer.start()
    try:
        for line in proc.stdout:
            line = line.rstrip("\n")
            if line.startswith("SMOKE "):
                event = json.loads(line[6:])
                event["wall_s"] = round(time.monotonic() - t0, 2)
                events[event["event"]] = event
                print(f"   {event['event']:<13} +{event['wall_s']:7.2f} s  {json.dumps(event)}", flush=True)
            else:
                tail = (tail + [line])[-40:]
        code = proc.wait()
    finally:
        killer.cancel()
        watch.stop.set()
        watch.join(5)
    result = {
        "label": label, "exit_code": code, "load_avg": round(load, 1),
        "network": "unshare -rn" if isolation else "socket poll",
        "window_s": events.get("window_shown", {}).get("wall_s"),
        "usable_s": events.get("ready", {}).get("wall_s"),
        "reply_s": events.get("reply", {}).get("wall_s"),
        "rss_mb": events.get("reply", {}).get("rss_mb"),
        "reply": events.get("reply", {}).get("text"),
        "sockets": sorted(watch.sockets), "tree_files": sorted(watch.tree_files),
    }
    problems = []
    if code != 0:
        problems.append(f"exit code {code}")
    if not events.get("done", {}).get("ok"):
        problems.append(f"smoke events incomplete or failed: {sorted(events)} {events.get('done')}")
    if watch.sockets:
        problems.append(f"inet sockets opened: {sorted(watch.sockets)}")
    if watch.tree_files:
        problems.append(f"files mapped from the source tree: {sorted(watch.tree_files)[:5]}")
    result["problems"] = problems
    if problems:
        print("   output tail:\n      " + "\n      ".join(tail), flush=True)
    return result


def bundle_run(tarball: Path, timeout_s: float) -> tuple[dict, dict]:
    work = Path(tempfile.mkdtemp(prefix="memory-r1-smoke-"))
    if work.resolve().is_relative_to(ROOT):
        raise SystemExit(f"the temporary folder {work} is inside the source tree; set TMPDIR elsewhere")
    try:
        launcher = unpack(tarball, work / "unpacked")
        sizes = {"tarball_mb": tarball.stat().st_size / 2**20, "unpacked_mb": du_mb(launcher.parent)}
        env = make_home(work)
        result = run_smoke("bundle", [str(launcher), "gui", "--smoke-test"], env, [ROOT], timeout_s)
        result["db_exists"] = (work / "data" / "memory.sqlite3").exists()
        if not result["db_exists"]:
            result["problems"].append("no memory.sqlite3 in MEMORY_R1_HOME")
        return result, sizes
    finally:
        shutil.rmtree(work, ignore_errors=True)


def venv_run(timeout_s: float) -> dict:
    """The entry point `make run` starts, with the same isolation (PATH kept minimal)."""
    entry = ROOT / ".venv" / "bin" / "memory-r1"
    if not entry.exists():
        return {"label": "venv", "problems": [f"{entry} missing (run `make run` once)"]}
    work = Path(tempfile.mkdtemp(prefix="memory-r1-smoke-venv-"))
    try:
        env = make_home(work)
        return run_smoke("venv (make run)", [str(entry), "gui", "--smoke-test"], env, [], timeout_s)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def latest_tarball() -> Path:
    hits = sorted(glob.glob(str(ROOT / "dist" / "memory-r1-*-linux-*.tar.gz")), key=os.path.getmtime)
    if not hits:
        raise SystemExit("no dist/memory-r1-*-linux-*.tar.gz: run `bash packaging/build.sh` first")
    return Path(hits[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", type=Path, help="the tarball (default: the newest in dist/)")
    parser.add_argument("--venv", action="store_true", help="also run the venv entry point (`make run`)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per run (default 900)")
    args = parser.parse_args(argv)
    tarball = (args.bundle or latest_tarball()).resolve()
    results = []
    bundle, sizes = bundle_run(tarball, args.timeout)
    results.append(bundle)
    if args.venv:
        results.append(venv_run(args.timeout))
    print("\n== summary (times from launch; RSS = resident memory after the first reply)")
    print(f"   bundle size: tarball {sizes['tarball_mb']:.0f} MiB, "
          f"unpacked {sizes['unpacked_mb']:.0f} MiB ({tarball.name})")
    for r in results:
        if "exit_code" in r:
            print(f"   {r['label']:<16} window {r['window_s']} s, usable {r['usable_s']} s, first reply "
                  f"{r['reply_s']} s, RSS {r['rss_mb']} MiB, exit {r['exit_code']}, network: {r['network']}, "
                  f"load average at start {r['load_avg']} ({os.cpu_count()} CPUs)")
        for p in r["problems"]:
            print(f"   {r['label']}: FAIL: {p}")
    ok = all(not r["problems"] for r in results)
    print("SMOKE CHECK " + ("PASSED" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
