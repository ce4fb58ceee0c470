"""The user's models: the embedded one, downloads from the catalog, and imported GGUFs.

Layout in the data dir: `models/` holds downloaded and copied files plus `models.json` (the
registry, rewritten atomically); `downloads/` holds partial downloads (`<file>.part` and its
`.part.json`). A file enters `models/` and the registry only after its size, sha256 and GGUF
header were checked, so a cancelled, interrupted or corrupt download is never listed.

Threading: every method may block (disk, network, hashing gigabytes): call from a worker
thread. One lock serialises registry writes within a process. Errors are UserErrors with one
sentence (ModelLoadError for a bad GGUF, NotFoundError for an unknown id, AlreadyInstalledError
for an import of a model that is already there, download errors from `core.catalog.download`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import ConflictError, InvalidInputError, ModelLoadError, NotFoundError
from core.fileio import atomic_write_json, sha256_file
from core.types import CancelToken
from core.catalog.catalog import CatalogEntry, find_entry, load_catalog

if TYPE_CHECKING:  # the downloader (urllib, http, ssl) is imported by the methods that use it
    from core.catalog import download as dl

log = logging.getLogger(__name__)

REGISTRY_NAME = "models.json"
EMBEDDED_ID = "smollm2-135m-instruct-q4_1"


@dataclass
class ModelRecord:
    """One usable model. `managed` files live in our models folder and are deleted on removal;
    an imported-by-reference file is only forgotten."""

    id: str
    name: str
    path: str
    source: str  # "embedded" | "download" | "import"
    managed: bool = False
    sha256: str | None = None
    size_bytes: int = 0
    verified: bool = False  # sha256 equals a published catalog hash
    catalog_id: str | None = None
    repo_id: str | None = None
    revision: str | None = None
    architecture: str | None = None
    parameter_count: int | None = None
    quantization: str | None = None
    context_length: int | None = None
    chat_template: str | None = None  # template family guessed from the GGUF's template
    license: str | None = None
    added_at: float = 0.0

    @property
    def available(self) -> bool:
        return Path(self.path).is_file()

    def to_dict(self) -> dict:
        out = asdict(self)
        out["available"] = self.available
        return out

    @classmethod
    def from_dict(cls, raw: dict) -> "ModelRecord":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names})


class AlreadyInstalledError(ConflictError):
    """An import of a file that is already one of the models: the same file (path), or the
    same content (size and sha256) under another name, e.g. a copy of the embedded model.
    `record` is the installed model; nothing was copied or added."""

    def __init__(self, message: str, record: ModelRecord) -> None:
        super().__init__(message)
        self.record = record


@dataclass(frozen=True)
class PendingDownload:
    """A paused or interrupted download that can resume."""

    catalog_id: str | None
    filename: str
    downloaded: int
    total: int | None


def template_family(template: str | None) -> str | None:
    """'chatml', 'llama3', 'gemma', 'mistral' or 'other' from a Jinja chat template."""
    if not template:
        return None
    if "<|im_start|>" in template:
        return "chatml"
    if "<|start_header_id|>" in template:
        return "llama3"
    if "<start_of_turn>" in template:
        return "gemma"
    if "[INST]" in template:
        return "mistral"
    return "other"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-.") or "model"


class ModelStore:
    """Lists, downloads, imports and removes models under one data dir."""

    def __init__(self, base: Path | None = None, catalog: list[CatalogEntry] | None = None):
        from core.paths import data_dir

        self.base = Path(base) if base else data_dir()
        self.models_dir = self.base / "models"
        self.downloads_dir = self.base / "downloads"
        self.registry_path = self.models_dir / REGISTRY_NAME
        self._catalog = catalog
        self._lock = threading.RLock()
        self._embedded: ModelRecord | None = None

    # --- registry --------------------------------------------------------------------------
    @property
    def catalog(self) -> list[CatalogEntry]:
        if self._catalog is None:
            self._catalog = load_catalog()
        return self._catalog

    def _read(self) -> dict:
        try:
            raw = json.loads(self.registry_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"schema": 1, "models": [], "hashes": {}}
        except (OSError, ValueError) as exc:
            log.warning("model registry %s unreadable (%s); starting empty", self.registry_path, exc)
            return {"schema": 1, "models": [], "hashes": {}}
        raw.setdefault("models", [])
        raw.setdefault("hashes", {})
        return raw

    def _write(self, data: dict) -> None:
        atomic_write_json(self.registry_path, data)

    def _records(self) -> list[ModelRecord]:
        return [ModelRecord.from_dict(r) for r in self._read()["models"]]

    def _add(self, record: ModelRecord) -> ModelRecord:
        with self._lock:
            data = self._read()
            data["models"] = [r for r in data["models"] if r.get("id") != record.id]
            data["models"].append(asdict(record))
            self._write(data)
        return record

    # --- listing ---------------------------------------------------------------------------
    def embedded(self) -> ModelRecord:
        """The model shipped with the app (always listed, never removed)."""
        from core.llm.gguf_info import read_gguf_info
        from core.paths import embedded_gguf

        if self._embedded is None:
            path = embedded_gguf()
            info = read_gguf_info(path)
            entry = next((e for e in self.catalog if e.embedded), None)
            same = entry is not None and entry.size_bytes == info.file_size
            record = self._record_from_info(
                info, path, source="embedded", managed=False,
                sha=entry.sha256 if same and entry else None, entry=entry if same else None,
                verified=bool(same and entry and entry.verified), reserve_id=False)
            record.id = entry.id if entry else EMBEDDED_ID
            self._embedded = record
        return ModelRecord.from_dict(asdict(self._embedded))

    def list_models(self) -> list[ModelRecord]:
        """The embedded model first, then downloaded/imported ones in the order added."""
        return [self.embedded()] + self._records()

    def get(self, model_id: str) -> ModelRecord:
        """By id, catalog id, file name or path; NotFoundError otherwise."""
        for record in self.list_models():
            if model_id in (record.id, record.catalog_id, Path(record.path).name, record.path):
                return record
        raise NotFoundError(f"No installed model is called {model_id!r}; "
                            "see `memory-r1 models list`.")

    def find_by_path(self, path: str | os.PathLike) -> ModelRecord | None:
        target = os.path.realpath(path)
        for record in self.list_models():
            if os.path.realpath(record.path) == target:
                return record
        return None

    def find_same_content(self, path: str | os.PathLike, size: int | None = None
                          ) -> tuple[ModelRecord | None, str | None]:
        """(the installed model whose file has the same size and sha256 as `path`, or None;
        `path`'s sha256 when it had to be computed, else None). Only models of exactly that
        size are hashed (each once: `sha256_of` caches), and `path` only when one exists."""
        size = Path(path).stat().st_size if size is None else size
        candidates = [r for r in self.list_models() if r.size_bytes == size and r.available]
        if not candidates:
            return None, None
        sha = sha256_file(path)
        for record in candidates:
            try:
                if self.sha256_of(record) == sha:
                    return record, sha
            except OSError:  # a file gone or unreadable since listing: not a duplicate
                continue
        return None, sha

    def sha256_of(self, record: ModelRecord) -> str:
        """The record's sha256, hashing the file once and caching it by (size, mtime)."""
        if record.sha256:
            return record.sha256
        path = Path(record.path)
        stat = path.stat()
        key = f"{os.path.realpath(path)}|{stat.st_size}|{int(stat.st_mtime)}"
        with self._lock:
            cached = self._read()["hashes"].get(key)
        if cached:
            return cached
        sha = sha256_file(path)
        with self._lock:
            data = self._read()
            data["hashes"][key] = sha
            self._write(data)
        return sha

    def pending_downloads(self) -> list[PendingDownload]:
        """Partial downloads that a later `download()` of the same entry resumes."""
        from core.catalog import download as dl

        out = []
        for meta_path in sorted(self.downloads_dir.glob("*.part.json")):
            meta = dl.read_partial_meta(meta_path) or {}
            part = meta_path.with_name(meta_path.name.removesuffix(".json"))
            out.append(PendingDownload(meta.get("catalog_id"), meta_path.name.removesuffix(".part.json"),
                                       part.stat().st_size if part.exists() else 0, meta.get("size")))
        return out

    # --- download --------------------------------------------------------------------------
    def download(self, catalog_id: str, *, progress: dl.ProgressCallback | None = None,
                 cancel: CancelToken | None = None, endpoint: str | None = None,
                 retries: int = 2) -> ModelRecord:
        """Fetch a catalog model, verify it and add it; returns its record.

        Order: HEAD (fails fast offline), size/hash sanity against the catalog, disk-space
        check, resumable transfer, sha256, GGUF header check, atomic move into `models/`.
        A cancel (CancelToken) raises Cancelled and keeps the partial for a later resume;
        `discard_download()` deletes it.
        """
        from core.catalog import download as dl

        entry = find_entry(catalog_id, self.catalog)
        if entry.embedded:
            return self.embedded()
        existing = next((r for r in self._records() if r.catalog_id == entry.id and r.available), None)
        if existing:
            return existing
        assert entry.repo_id is not None  # load_catalog requires one for every downloadable entry
        url = dl.resolve_url(entry.repo_id, entry.filename, entry.revision, endpoint)
        remote = dl.probe(url)
        total = self._check_remote(entry, remote)
        part, meta = dl.partial_paths(self.downloads_dir, entry.filename)
        have = part.stat().st_size if part.exists() else 0
        dl.check_disk_space(self.downloads_dir, max((total or entry.planning_size or 0) - have, 0))
        identity = {"catalog_id": entry.id, "url": url, "etag": remote.etag, "size": total,
                    "revision": entry.revision}
        expected = entry.sha256 or remote.sha256
        sha = dl.download_file(url, part, meta, identity=identity, total=total,
                               expected_sha256=expected, progress=progress, cancel=cancel,
                               retries=retries)
        return self._install_download(entry, part, meta, sha, remote)

    def _check_remote(self, entry: CatalogEntry, remote: dl.RemoteFile) -> int | None:
        from core.catalog import download as dl

        if entry.sha256 and remote.sha256 and remote.sha256 != entry.sha256:
            raise dl.ChecksumMismatchError(
                f"The server offers a different {entry.filename} (sha256 {remote.sha256[:12]}…) "
                f"than the catalog pins ({entry.sha256[:12]}…); nothing was downloaded.")
        if entry.size_bytes and remote.size and remote.size != entry.size_bytes:
            raise dl.ChecksumMismatchError(
                f"The server reports {remote.size} bytes for {entry.filename}, the catalog "
                f"{entry.size_bytes}; nothing was downloaded.")
        return remote.size or entry.size_bytes

    def _install_download(self, entry: CatalogEntry, part: Path, meta: Path, sha: str,
                          remote: dl.RemoteFile) -> ModelRecord:
        from core.catalog import download as dl

        from core.llm.gguf_info import validate_gguf

        try:
            info = validate_gguf(part)
        except ModelLoadError as exc:
            dl.discard_partial(part, meta)
            raise ModelLoadError(f"The downloaded {entry.filename} is not a usable GGUF ({exc}); "
                                 "it was deleted.") from None
        target = self._free_name(entry.filename)
        os.replace(part, target)
        dl.discard_partial(part, meta)
        record = self._record_from_info(
            info, target, source="download", managed=True, sha=sha, entry=entry,
            verified=bool(entry.sha256 and entry.verified and sha == entry.sha256))
        record.repo_id, record.revision = entry.repo_id, remote.commit or entry.revision
        return self._add(record)

    def discard_download(self, catalog_id: str) -> bool:
        """Delete the partial download of a catalog entry (a cancel, as opposed to a pause)."""
        from core.catalog import download as dl

        entry = find_entry(catalog_id, self.catalog)
        part, meta = dl.partial_paths(self.downloads_dir, entry.filename)
        existed = part.exists() or meta.exists()
        dl.discard_partial(part, meta)
        return existed

    # --- import / remove -------------------------------------------------------------------
    def import_gguf(self, path: str | os.PathLike, *, copy: bool = True) -> ModelRecord:
        """Add a local .gguf after reading its header; copy it into `models/` or reference it.

        Raises ModelLoadError (missing, not GGUF, truncated), InvalidInputError (a LoRA
        adapter, not a model), AlreadyInstalledError (a ConflictError: the same file, or a file
        of the same size and sha256 as an installed model, the embedded one included; nothing is
        copied or added), disk-space errors. The file is hashed before copying only when an
        installed model has its exact size.
        """
        from core.catalog import download as dl

        from core.llm.gguf_info import validate_gguf

        src = Path(path).expanduser().resolve()
        info = validate_gguf(src)
        if info.is_adapter:
            raise InvalidInputError(f"{src.name} is a LoRA adapter, not a model; "
                                    "adapters are chosen per role, next to their base model.")
        existing = self.find_by_path(src)
        src_sha = None
        if existing is None:
            existing, src_sha = self.find_same_content(src, info.file_size)
        if existing is not None:
            raise AlreadyInstalledError(f"{src.name} is already installed as {existing.id!r} "
                                        f"({existing.name}); nothing was copied.", existing)
        if copy:
            dl.check_disk_space(self.models_dir, info.file_size)
            target = self._free_name(src.name)
            sha = self._copy(src, target)
        else:
            target, sha = src, src_sha or sha256_file(src)
        entry = next((e for e in self.catalog if e.sha256 == sha), None)
        record = self._record_from_info(info, target, source="import", managed=copy, sha=sha,
                                        entry=entry, verified=bool(entry and entry.verified))
        return self._add(record)

    def _copy(self, src: Path, target: Path) -> str:
        """Copy through a temp file in the target folder, hashing on the way; atomic rename."""
        digest = hashlib.sha256()
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".import-", suffix=".gguf.part")
        try:
            with os.fdopen(fd, "wb") as out, open(src, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    out.write(block)
                    digest.update(block)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest.hexdigest()

    def remove(self, model_id: str) -> ModelRecord:
        """Forget a model; delete its file when it is ours (downloaded or copied).

        The embedded model cannot be removed (InvalidInputError). Callers must move roles
        that used it back to another model (see `core.catalog.roles.release_model`).
        """
        record = self.get(model_id)
        if record.source == "embedded":
            raise InvalidInputError("The embedded model ships with the app and cannot be removed.")
        with self._lock:
            data = self._read()
            data["models"] = [r for r in data["models"] if r.get("id") != record.id]
            self._write(data)
        if record.managed:
            Path(record.path).unlink(missing_ok=True)
        return record

    # --- helpers ---------------------------------------------------------------------------
    def _free_name(self, filename: str) -> Path:
        self.models_dir.mkdir(parents=True, exist_ok=True)
        target = self.models_dir / filename
        stem, n = target.stem, 2
        while target.exists():
            target = self.models_dir / f"{stem}-{n}.gguf"
            n += 1
        return target

    def _free_id(self, wanted: str) -> str:
        taken = {r.id for r in self.list_models()}
        candidate, n = wanted, 2
        while candidate in taken:
            candidate = f"{wanted}-{n}"
            n += 1
        return candidate

    def _record_from_info(self, info, path: Path, *, source: str, managed: bool,
                          sha: str | None, entry: CatalogEntry | None, verified: bool,
                          reserve_id: bool = True) -> ModelRecord:
        wanted = entry.id if entry and source == "download" else _slug(Path(path).stem)
        return ModelRecord(
            id=self._free_id(wanted) if reserve_id else wanted,
            name=(entry.name if entry else info.name) or Path(path).stem,
            path=str(path), source=source, managed=managed, sha256=sha,
            size_bytes=info.file_size, verified=verified, catalog_id=entry.id if entry else None,
            architecture=info.architecture, parameter_count=info.parameter_count,
            quantization=info.quantization, context_length=info.context_length,
            chat_template=template_family(info.chat_template),
            license=entry.license if entry else info.metadata.get("general.license"),
            added_at=time.time())
