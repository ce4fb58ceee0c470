"""Trained adapters shipped with the app, used by default (`Settings.use_shipped_adapters`).

Layout: `assets/adapters/<role>/**/<name>.gguf` with its `<name>.meta.json` (or a `meta.json`
in its folder), as `memory-r1 export` writes them; role is `answer` or `manager`. The folder
decides the role (exports of answer adapters do not record one); a meta.json whose `role` key
names the other role is skipped. An adapter is used only when its meta says `kind: "lora"` (a
merged export is a whole model, not an adapter) and `roles.check_adapter` accepts it for the
role's base model: the embedded SmolLM2 when the spec has no path.

With `Settings.fast_embedded_model` on, `effective_spec` then points a spec without a path at
the embedded model's derived Q8_0 variant (`core.llm.variant`), falling back to the shipped file.

Precedence: an adapter the user chose always wins; the setting off means no shipped adapter.
The base model's sha256 comes from the catalog (same file name and size) or the model store's
record: a model file is never hashed here, so an unknown file gets no sha256 and only a
meta.json without one (name-only, unverified) could match it.

Reads small files only (directory listing, meta.json, catalog.json, the model registry); any
thread. Never raises for a missing or unreadable assets folder; InvalidInputError for an
unknown role.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

from core.config import ModelSpec, Settings
from core.errors import InvalidInputError, UserError
from core.catalog.roles import ROLES, check_adapter, read_adapter_meta, role_spec

log = logging.getLogger(__name__)

SHIPPED_DIR = "adapters"
LORA_KIND = "lora"


def shipped_root() -> Path:
    """`assets/adapters` (inside the bundle when frozen); it may not exist."""
    from core import paths

    return paths.assets_dir() / SHIPPED_DIR


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise InvalidInputError(f"Unknown role {role!r}; use one of: {', '.join(ROLES)}.")


def _candidates(role: str) -> list[Path]:
    """Every `*.gguf` under `assets/adapters/<role>/`, sorted; [] when there is none."""
    _check_role(role)
    folder = shipped_root() / role
    try:
        return sorted(p for p in folder.rglob("*.gguf") if p.is_file()) if folder.is_dir() else []
    except OSError as exc:
        log.warning("shipped adapters in %s unreadable (%s)", folder, exc)
        return []


def _unusable(adapter: Path, role: str, base_path: Path, base_sha256: str | None) -> str | None:
    """Why this shipped adapter may not run `role` on the base model; None when it may."""
    check = check_adapter(adapter, base_path, base_sha256)
    if not check.ok:
        return check.reason
    meta = read_adapter_meta(adapter) or {}
    if meta.get("kind") != LORA_KIND:
        return f"its meta.json kind is {meta.get('kind')!r}, not {LORA_KIND!r}"
    if meta.get("role", role) != role:
        return f"it was trained for the {meta.get('role')} role"
    return None


def shipped_adapter(role: str, base_path: str | os.PathLike,
                    base_sha256: str | None) -> Path | None:
    """The first shipped LoRA adapter for `role` trained on this base model, or None.

    Raises InvalidInputError for an unknown role only; a missing folder gives None.
    """
    for adapter in _candidates(role):
        reason = _unusable(adapter, role, Path(base_path), base_sha256)
        if reason is None:
            return adapter
        log.info("shipped %s adapter %s not used with %s: %s", role, adapter.name,
                 Path(base_path).name, reason)
    return None


def base_sha256(base_path: str | os.PathLike) -> str | None:
    """The model file's sha256 without hashing it: the catalog's when an entry has the same file
    name and exact size (the embedded model), else the model store's record; None otherwise."""
    from core.catalog.catalog import load_catalog
    from core.catalog.store import ModelStore

    path = Path(base_path)
    try:
        size = path.stat().st_size
        for entry in load_catalog():
            if entry.sha256 and entry.filename == path.name and entry.size_bytes == size:
                return entry.sha256
    except (OSError, UserError) as exc:
        log.info("no catalog sha256 for %s (%s)", path.name, exc)
    try:
        record = ModelStore().find_by_path(path)
    except (OSError, UserError) as exc:
        log.info("model store unreadable (%s)", exc)
        return None
    return record.sha256 if record else None


def _base_path(spec: ModelSpec) -> Path | None:
    if spec.path:
        return Path(spec.path).expanduser()
    from core.paths import embedded_gguf

    try:
        return embedded_gguf()
    except UserError:
        return None


def with_shipped_adapter(spec: ModelSpec, role: str, enabled: bool = True) -> ModelSpec:
    """A copy of `spec`, its adapter set to the one shipped for `role` when `enabled`, the spec
    has no adapter of its own and a shipped adapter matches its base model. `spec` is unchanged.
    Raises InvalidInputError for an unknown role only."""
    _check_role(role)
    out = dataclasses.replace(spec)
    if not enabled or spec.adapter or not _candidates(role):
        return out
    base = _base_path(spec)
    if base is None:
        return out
    found = shipped_adapter(role, base, base_sha256(base))
    if found is not None:
        out.adapter = str(found)
        log.info("using the shipped %s adapter %s on %s", role, found, base.name)
    return out


def with_embedded_variant(spec: ModelSpec, enabled: bool) -> ModelSpec:
    """A copy of `spec` whose path is the embedded model's faster derived variant
    (`core.llm.variant.resolve_embedded`) when `enabled` and the spec names no model of its own
    (the embedded one); a missing or damaged variant leaves the path empty (the shipped file)
    and is re-derived in the background. Never raises: no embedded model means no change."""
    out = dataclasses.replace(spec)
    if not enabled or spec.path:
        return out
    from core.llm.variant import resolve_embedded
    from core.paths import embedded_gguf

    try:
        path = resolve_embedded(True)
        if path != embedded_gguf():
            out.path = str(path)
    except UserError as exc:
        log.info("no embedded model variant (%s)", exc)
    return out


def effective_spec(settings: Settings, role: str) -> ModelSpec:
    """The ModelSpec to load for `role` ("answer" or "manager"): a copy of the settings' spec
    with the shipped adapter filled in as `with_shipped_adapter` decides, when
    `settings.use_shipped_adapters` is on, then the embedded model's derived variant as
    `with_embedded_variant` decides, when `settings.fast_embedded_model` is on (the adapter is
    matched against the shipped file: a LoRA applies to either format). Settings are not
    changed."""
    spec = with_shipped_adapter(role_spec(settings, role), role, settings.use_shipped_adapters)
    return with_embedded_variant(spec, settings.fast_embedded_model)


def is_shipped(adapter: str | os.PathLike | None) -> bool:
    """Whether `adapter` is a file under `assets/adapters/` (for status text)."""
    if not adapter:
        return False
    try:
        return Path(adapter).resolve().is_relative_to(shipped_root().resolve())
    except OSError:
        return False
