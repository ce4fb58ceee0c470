"""Model manager: the curated catalog, downloads, imports, fit estimates and role choice.

- `catalog`: the models shipped in `assets/catalog.json` (pinned revisions, sha256, sources).
- `download`: resumable, verified HTTP Range download from the hub or `HF_ENDPOINT`.
- `store`: `ModelStore`, the user's models (embedded + downloaded + imported).
- `fit`: "fits / slow / won't fit" from GGUF metadata and the machine's memory.
- `roles`: which model and adapter each role uses; adapters only for their base model.

Importing this package imports no network, llama.cpp or Qt code.
"""

from core.catalog.catalog import CatalogEntry, find_entry, load_catalog
from core.catalog.fit import FitEstimate, estimate_fit, fit_for_entry, fit_for_gguf
from core.catalog.roles import ROLES, AdapterCheck, adapters_for, assign_role, check_adapter, release_model
from core.catalog.store import AlreadyInstalledError, ModelRecord, ModelStore

__all__ = [
    "CatalogEntry", "find_entry", "load_catalog", "FitEstimate", "estimate_fit", "fit_for_entry",
    "fit_for_gguf", "ROLES", "AdapterCheck", "adapters_for", "assign_role", "check_adapter",
    "release_model", "AlreadyInstalledError", "ModelRecord", "ModelStore",
]
