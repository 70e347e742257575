"""The catalog directory, applied to the catalog store by a process that mounts it (see `_store.py` for the
precedence): at start every file whose content differs from what was last applied of it; afterwards only
the files that changed under this process, and the ones removed. And the store's catalogs, compiled."""

from __future__ import annotations

from pathlib import Path

from server.catalogs import Catalog, load_catalog_document

from ._store import AuditEvent, CatalogStore, CatalogVersion, content_hash


class CatalogDirectory:
    def __init__(self, store: CatalogStore) -> None:
        self.store = store
        self._seen: dict[str, str] | None = None  # content hash of each file as this process last read it

    def forget(self) -> None:
        """The store lost its state (Redis restarted without persistence, or flushed): the next `apply` seeds it
        again with every file, as at start."""
        self._seen = None

    async def apply(self, catalogs: dict[str, Catalog]) -> list[AuditEvent]:
        """Apply the directory as read now (validated); the changes it made to the store."""
        documents = {name: catalog.document() for name, catalog in catalogs.items()}
        hashes = {name: content_hash(doc) for name, doc in documents.items()}
        if self._seen is None:
            changed, removed = documents, set(await self.store.directory()) - set(documents)
        else:
            changed = {name: doc for name, doc in documents.items() if self._seen.get(name) != hashes[name]}
            removed = set(self._seen) - set(documents)
        events = await self.store.apply_directory(changed, removed)
        self._seen = hashes
        return events


def served_catalogs(current: dict[str, CatalogVersion]) -> dict[str, Catalog]:
    """The store's current catalogs, compiled: what is served (and learned)."""
    return {
        name: load_catalog_document(v.document, Path("catalog-store") / name / f"version-{v.version}")
        for name, v in current.items()
        if v.document is not None
    }
