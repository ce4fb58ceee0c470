"""The curated model catalog shipped in `assets/catalog.json`.

Each entry names one GGUF file on the Hugging Face hub pinned to a commit (`revision`), so its
sha256 cannot drift when a publisher re-uploads the file. Values we could not establish from a
published source are `null` and the entry is `"verified": false`; nothing is guessed. The
`source` object of each entry says where each value came from.

Pure data and parsing: no network, no Qt; any thread may call these functions.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import InvalidInputError, NotFoundError

CATALOG_NAME = "catalog.json"
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


@dataclass(frozen=True)
class KVShape:
    """What the KV cache of one token costs: from the model's config.json or GGUF header."""

    n_layers: int
    n_kv_heads: int
    head_dim: int

    def bytes_per_token(self, bytes_per_value: int = 2) -> int:
        """K and V, f16 by default (llama.cpp's default cache type)."""
        return 2 * self.n_layers * self.n_kv_heads * self.head_dim * bytes_per_value


@dataclass(frozen=True)
class CatalogEntry:
    """One downloadable (or embedded) model."""

    id: str
    name: str
    filename: str
    repo_id: str | None = None
    revision: str | None = None
    size_bytes: int | None = None  # exact, or None when no source gave the exact figure
    size_approx_bytes: int | None = None  # as a hub page rounds it ("986 MB"); for planning only
    sha256: str | None = None
    verified: bool = False
    quantization: str | None = None
    license: str | None = None
    context_length: int | None = None
    chat_template: str | None = None  # template family: "chatml", "llama3", ...
    parameters: str | None = None  # as published, e.g. "1.5B"
    embedded: bool = False
    description: str = ""
    kv: KVShape | None = None
    source: dict[str, str] = field(default_factory=dict)

    @property
    def planning_size(self) -> int | None:
        """The best size we know before downloading: exact if known, else the rounded one."""
        return self.size_bytes or self.size_approx_bytes

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in (
            "id", "name", "filename", "repo_id", "revision", "size_bytes", "size_approx_bytes",
            "sha256", "verified", "quantization", "license", "context_length", "chat_template",
            "parameters", "embedded", "description")}
        out["kv"] = None if self.kv is None else {
            "n_layers": self.kv.n_layers, "n_kv_heads": self.kv.n_kv_heads,
            "head_dim": self.kv.head_dim}
        out["source"] = dict(self.source)
        return out


def _opt_int(raw: dict, key: str) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise InvalidInputError(f"Catalog entry {raw.get('id')!r}: {key} must be a positive integer.")
    return value


def _parse_entry(raw: dict) -> CatalogEntry:
    if not isinstance(raw, dict):
        raise InvalidInputError("Catalog entries must be JSON objects.")
    entry_id = raw.get("id")
    if not isinstance(entry_id, str) or not _ID_RE.match(entry_id):
        raise InvalidInputError(f"Catalog entry id {entry_id!r} is not a valid id.")
    filename = raw.get("filename")
    if not isinstance(filename, str) or not filename.endswith(".gguf") or "/" in filename:
        raise InvalidInputError(f"Catalog entry {entry_id!r}: filename must be a .gguf file name.")
    sha = raw.get("sha256")
    if sha is not None and (not isinstance(sha, str) or not _SHA256_RE.match(sha)):
        raise InvalidInputError(f"Catalog entry {entry_id!r}: sha256 must be 64 lowercase hex digits.")
    verified = bool(raw.get("verified", False))
    if verified and sha is None:
        raise InvalidInputError(f"Catalog entry {entry_id!r} is marked verified without a sha256.")
    embedded = bool(raw.get("embedded", False))
    if not embedded and not raw.get("repo_id"):
        raise InvalidInputError(f"Catalog entry {entry_id!r} needs a repo_id.")
    kv_raw = raw.get("kv")
    kv = None
    if kv_raw:
        try:
            kv = KVShape(int(kv_raw["n_layers"]), int(kv_raw["n_kv_heads"]), int(kv_raw["head_dim"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(f"Catalog entry {entry_id!r}: kv needs n_layers, n_kv_heads, head_dim.") from exc
    source = raw.get("source") or {}
    return CatalogEntry(
        id=entry_id, name=str(raw.get("name") or entry_id), filename=filename,
        repo_id=raw.get("repo_id"), revision=raw.get("revision"),
        size_bytes=_opt_int(raw, "size_bytes"), size_approx_bytes=_opt_int(raw, "size_approx_bytes"),
        sha256=sha, verified=verified, quantization=raw.get("quantization"),
        license=raw.get("license"), context_length=_opt_int(raw, "context_length"),
        chat_template=raw.get("chat_template"), parameters=raw.get("parameters"),
        embedded=embedded, description=str(raw.get("description") or ""), kv=kv,
        source={str(k): str(v) for k, v in source.items()} if isinstance(source, dict) else {},
    )


def catalog_path() -> Path:
    from core.paths import assets_dir

    return assets_dir() / CATALOG_NAME


def load_catalog(path: str | Path | None = None) -> list[CatalogEntry]:
    """Parse the catalog JSON; raises InvalidInputError for a malformed file or duplicate ids."""
    path = Path(path) if path else catalog_path()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotFoundError(f"The model catalog {path} is missing.") from None
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"The model catalog {path} cannot be read ({exc}).") from None
    models = raw.get("models") if isinstance(raw, dict) else None
    if not isinstance(models, list):
        raise InvalidInputError(f"The model catalog {path} has no 'models' list.")
    entries = [_parse_entry(item) for item in models]
    seen: set[str] = set()
    for entry in entries:
        if entry.id in seen:
            raise InvalidInputError(f"The model catalog lists {entry.id!r} twice.")
        seen.add(entry.id)
    return entries


def find_entry(entry_id: str, entries: list[CatalogEntry] | None = None) -> CatalogEntry:
    """The catalog entry with this id (or file name); NotFoundError otherwise."""
    entries = load_catalog() if entries is None else entries
    for entry in entries:
        if entry.id == entry_id or entry.filename == entry_id:
            return entry
    ids = ", ".join(e.id for e in entries if not e.embedded)
    raise NotFoundError(f"No catalog model is called {entry_id!r}; choose one of: {ids}.")
