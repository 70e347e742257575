"""The catalog store: versioned catalogs with history and an audit log (`CatalogStore`), seeded and
re-applied from the catalog directory. `FileCatalogStore` keeps it in the data directory (embedded mode).
"""

from ._files import FileCatalogStore
from ._store import (
    DIRECTORY_ACTOR,
    STORE_FORMAT,
    AuditEvent,
    CatalogStore,
    CatalogVersion,
    Origin,
    UnknownVersion,
    VersionConflict,
    content_hash,
)
from ._store import diff as catalog_diff

__all__ = [
    "DIRECTORY_ACTOR",
    "STORE_FORMAT",
    "AuditEvent",
    "CatalogStore",
    "CatalogVersion",
    "FileCatalogStore",
    "Origin",
    "UnknownVersion",
    "VersionConflict",
    "catalog_diff",
    "content_hash",
]
