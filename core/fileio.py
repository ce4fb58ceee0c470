"""Small file helpers used everywhere: atomic writes, JSONL checkpoints, folder locks, hashing.

- `atomic_write_text/bytes/json(path, ...)`: the new content appears whole or not at all (a
  temp file in the same folder, flushed, fsynced, then `os.replace`d over the target).
- `atomic_path(path)`: the same for writers that want a path (numpy, the GGUF writer): the
  block writes the yielded temp path; it replaces `path` only when the block succeeds.
- `read_jsonl(path, repair=...)` / `append_jsonl(path, record)`: append-only checkpoints that
  survive a crash mid-write (a torn last line is left out, and with `repair` cut off).
- `read_json(path)`: a JSON file, or InvalidInputError naming the file (missing / not JSON).
- `folder_lock(folder)`: an exclusive advisory lock on `folder/lock` for one writer process.
- `sha256_file(path)` (the whole file) and `file_fingerprint(path)` (name, size, first and
  last MiB: a cheap content id of a large model file).

Pure functions over files; any thread. A full disk (ENOSPC, EDQUOT) raises
`core.errors.DiskFullError` naming the file (the old content stays); any other OSError
propagates to the caller, which knows what the file is for and turns it into a sentence.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from core.errors import DiskFullError

log = logging.getLogger(__name__)

PathLike = str | os.PathLike
_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def as_disk_full(exc: OSError, path: PathLike) -> DiskFullError | None:
    """The DiskFullError naming `path` when `exc` is a full disk (ENOSPC, EDQUOT), else None."""
    if exc.errno not in _FULL:
        return None
    return DiskFullError(f"The disk is full: {path} was not written; free some space and try again.")


@contextlib.contextmanager
def disk_full_as_user_error(path: PathLike) -> Iterator[None]:
    """Re-raise an OSError of a full disk (ENOSPC, EDQUOT) as DiskFullError naming `path`."""
    try:
        yield
    except OSError as exc:
        full = as_disk_full(exc, path)
        if full is not None:
            raise full from exc
        raise


@contextlib.contextmanager
def atomic_path(path: PathLike, *, suffix: str = ".tmp", make_parents: bool = True) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success it replaces `path`, on error it is removed.
    The folder is created unless `make_parents` is False (then a missing folder is an OSError).

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_path(d / "x.txt") as tmp:
    ...     _ = tmp.write_text("hi")
    >>> (d / "x.txt").read_text(), sorted(p.name for p in d.iterdir())
    ('hi', ['x.txt'])
    """
    target = Path(path)
    with disk_full_as_user_error(target):
        if make_parents:
            target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}-", suffix=suffix)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            yield tmp
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise


def atomic_write_bytes(path: PathLike, data: bytes, *, mode: int | None = None) -> None:
    """Write `data` to `path` atomically; `mode` (e.g. 0o600) is set before the rename."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
        if mode is not None:
            os.chmod(tmp, mode)


def atomic_write_text(path: PathLike, text: str, *, mode: int | None = None) -> None:
    """Write UTF-8 `text` to `path` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"), mode=mode)


def atomic_write_json(path: PathLike, obj: Any, *, indent: int | None = 1, mode: int | None = None) -> None:
    """Write `obj` as JSON (UTF-8, non-ASCII kept) to `path` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False), mode=mode)


def read_json(path: PathLike, *, missing: str | None = None) -> Any:
    """The JSON value in `path`. Raises InvalidInputError "<path>: no such file" (or `missing`)
    when it does not exist, "<path>: not valid JSON (...)" when it does not parse."""
    from core.errors import InvalidInputError

    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InvalidInputError(missing or f"{p}: no such file") from exc
    except ValueError as exc:
        raise InvalidInputError(f"{p}: not valid JSON ({exc})") from exc


# --------------------------------------------------------------------------- JSONL checkpoints

def read_jsonl(path: PathLike, *, repair: bool = True) -> list[dict]:
    """The complete lines of a JSONL checkpoint; a torn last line (crash mid-write) is left
    out, and with `repair` also cut off the file (readers that only look pass repair=False).
    Lines that are not JSON are skipped with a warning. A missing file is empty.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "log.jsonl"
    >>> append_jsonl(p, {"a": 1}); _ = open(p, "a").write('{"b": ')
    >>> read_jsonl(p, repair=False), read_jsonl(p), p.read_text()
    ([{'a': 1}], [{'a': 1}], '{"a": 1}\\n')
    """
    p = Path(path)
    if not p.exists():
        return []
    data = p.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        log.warning("%s: dropping a torn last line from an interrupted run", p)
        if repair:
            with open(p, "r+b") as fh:
                fh.truncate(cut)
        data = data[:cut]
    out = []
    for line in data.decode("utf-8").splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except ValueError:
                log.warning("%s: skipping a line that is not JSON", p)
    return out


def append_jsonl(path: PathLike, record: dict) -> None:
    """Append one record as a line and fsync it (the line is durable when this returns)."""
    with disk_full_as_user_error(path), open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def jsonl_values(text: str, bad_line: Callable[[int, ValueError], Exception]) -> list[tuple[int, Any]]:
    """(line number, value) of each non-blank line of JSONL `text`; the first line that is not
    JSON raises `bad_line(line_no, error)` (the caller's own error, naming its file).

    >>> jsonl_values('{"a": 1}\\n\\n[2]', ValueError)
    [(1, {'a': 1}), (3, [2])]
    """
    out = []
    for no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append((no, json.loads(line)))
        except ValueError as exc:
            raise bad_line(no, exc) from exc
    return out


@contextlib.contextmanager
def folder_lock(folder: PathLike) -> Iterator[None]:
    """An exclusive advisory lock on `folder/lock` (blocks); a no-op where fcntl is missing."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(folder / "lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- hashing

def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    """The sha256 hex digest of a whole file, read in `chunk`-byte blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def file_fingerprint(path: PathLike | None) -> str | None:
    """A cheap, content-based id of a (possibly large) model file: name, size, and the sha256
    of its first and last MiB. None for None.

    >>> file_fingerprint(None) is None
    True
    """
    if path is None:
        return None
    p = Path(path)
    size = p.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(p, "rb") as fh:
        h.update(fh.read(1 << 20))
        if size > 2 << 20:
            fh.seek(-(1 << 20), os.SEEK_END)
            h.update(fh.read(1 << 20))
    return f"{p.name}:{size}:{h.hexdigest()[:16]}"
