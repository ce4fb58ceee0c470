"""Which model (and adapter) runs each role: the answer agent and the memory manager.

A LoRA adapter only works on the base model it was trained on, so one is offered for a model
only when the `meta.json` written beside it at export names that model. The base model's
sha256 decides when the meta carries it (`verified`); without a hash, the base file name is
accepted as a weaker match (`verified=False`, and the reason says so). Keys read, tolerantly
(the exporter's exact spelling is not fixed yet): `base_model_sha256` / `base_sha256` /
`base_model.sha256` / `base.sha256`, and `base_model_path` / `base_model` (a string) /
`base_model.{path,filename,name}` / `base.{path,filename,name}`.

`<adapter>.meta.json` beside `<adapter>.gguf` is preferred, else `meta.json` in its folder.
Pure functions over files; any thread. Settings are changed in memory: the caller saves them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from core.config import ModelSpec, Settings
from core.errors import InvalidInputError

ROLES = ("answer", "manager")
_ROLE_FIELD = {"answer": "answer_model", "manager": "manager_model"}


@dataclass(frozen=True)
class AdapterCheck:
    """Whether an adapter may be offered for a base model, and why."""

    ok: bool
    reason: str
    verified: bool = False


def adapter_meta_path(adapter: str | os.PathLike) -> Path | None:
    adapter = Path(adapter)
    for candidate in (adapter.with_suffix(".meta.json"), adapter.parent / "meta.json"):
        if candidate.is_file():
            return candidate
    return None


def read_adapter_meta(adapter: str | os.PathLike) -> dict | None:
    """The adapter's meta.json as a dict, or None when missing or unreadable."""
    path = adapter_meta_path(adapter)
    if path is None:
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _base_fields(meta: dict) -> tuple[str | None, str | None]:
    """(sha256, file name) of the base model as the meta states them."""
    sha = meta.get("base_model_sha256") or meta.get("base_sha256")
    names = [meta.get("base_model_path")]
    for key in ("base_model", "base"):
        value = meta.get(key)
        if isinstance(value, dict):
            sha = sha or value.get("sha256")
            names += [value.get("path"), value.get("filename"), value.get("name")]
        elif isinstance(value, str):
            names.append(value)
    name = next((Path(n).name for n in names if isinstance(n, str) and n.strip()), None)
    return (sha.lower() if isinstance(sha, str) else None), name


def adapter_matches(meta: dict | None, base_path: str | os.PathLike,
                    base_sha256: str | None) -> AdapterCheck:
    """May an adapter with this meta.json be offered for the base model at `base_path`?

    >>> adapter_matches({"base_model": {"sha256": "ab" * 32}}, "m.gguf", "ab" * 32).ok
    True
    >>> adapter_matches({"base_model_sha256": "ab" * 32}, "m.gguf", "cd" * 32).reason
    'trained on another base model (sha256 abababababab…)'
    >>> adapter_matches({"base_model_path": "/x/m.gguf"}, "/y/m.gguf", None).verified
    False
    """
    if not meta:
        return AdapterCheck(False, "no meta.json says which base model it was trained on")
    sha, name = _base_fields(meta)
    if sha:
        if base_sha256 and sha == base_sha256.lower():
            return AdapterCheck(True, "trained on this model (sha256 matches)", verified=True)
        return AdapterCheck(False, f"trained on another base model (sha256 {sha[:12]}…)")
    if name and name == Path(base_path).name:
        return AdapterCheck(True, "meta.json names this model's file (no sha256 to check)")
    if name:
        return AdapterCheck(False, f"trained on {name}")
    return AdapterCheck(False, "meta.json does not say which base model it was trained on")


def check_adapter(adapter: str | os.PathLike, base_path: str | os.PathLike,
                  base_sha256: str | None) -> AdapterCheck:
    """`adapter_matches` for an adapter file on disk (reads its meta.json)."""
    if not Path(adapter).is_file():
        return AdapterCheck(False, f"the adapter file {adapter} does not exist")
    return adapter_matches(read_adapter_meta(adapter), base_path, base_sha256)


def default_adapter_dirs() -> list[Path]:
    """Where adapters live: the user's trained ones, then the ones shipped in assets/."""
    from core.paths import assets_dir, data_dir

    return [data_dir() / "adapters", assets_dir() / "adapters"]


def adapters_for(base_path: str | os.PathLike, base_sha256: str | None,
                 dirs: list[Path] | None = None) -> list[tuple[Path, AdapterCheck]]:
    """Adapters (`*.gguf` under `dirs`, recursively) that may be used with this base model."""
    found = []
    for folder in dirs if dirs is not None else default_adapter_dirs():
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*.gguf")):
            check = check_adapter(path, base_path, base_sha256)
            if check.ok:
                found.append((path, check))
    return found


def role_spec(settings: Settings, role: str) -> ModelSpec:
    """The settings' own ModelSpec for `role` (the object itself, not a copy). Raises
    InvalidInputError for an unknown role."""
    if role not in _ROLE_FIELD:
        raise InvalidInputError(f"Unknown role {role!r}; use one of: {', '.join(ROLES)}.")
    return getattr(settings, _ROLE_FIELD[role])


def assign_role(settings: Settings, role: str, model_path: str | os.PathLike | None, *,
                model_sha256: str | None = None, adapter: str | os.PathLike | None = None,
                embedded: bool = False) -> Settings:
    """Point `role` at a model (None or `embedded=True`: the embedded one) and an adapter.

    Raises InvalidInputError for an unknown role or an adapter not trained on that model
    (nothing is changed then). A model change drops the role's old adapter. Returns
    `settings`, changed in place; the caller saves them.
    """
    spec = role_spec(settings, role)
    if adapter is not None:
        check = check_adapter(adapter, model_path or "", model_sha256)
        if not check.ok:
            raise InvalidInputError(f"The adapter {Path(adapter).name} cannot be used with this "
                                    f"model: {check.reason}.")
    new_path = None if embedded or model_path is None else str(model_path)
    if new_path != spec.path:
        spec.adapter = None
    spec.path = new_path
    if adapter is not None:
        spec.adapter = str(adapter)
    return settings


def release_model(settings: Settings, model_path: str | os.PathLike) -> list[str]:
    """Move every role that uses `model_path` back to the embedded model; returns those roles."""
    target = os.path.realpath(model_path)
    released = []
    for role in ROLES:
        spec = role_spec(settings, role)
        if spec.path and os.path.realpath(spec.path) == target:
            spec.path, spec.adapter = None, None
            released.append(role)
    return released
