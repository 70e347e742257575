"""The catalog store: versioned catalogs with history and an audit log (`CatalogStore`), seeded and
re-applied from the catalog directory. `FileCatalogStore` keeps it in the data directory (embedded mode),
`RedisCatalogStore` in Redis (Redis mode: every replica and the learner).
"""

from ._directory import CatalogDirectory, served_catalogs
from ._files import FileCatalogStore
from ._redis import RedisCatalogStore, catalog_keys
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
    "CatalogDirectory",
    "CatalogStore",
    "CatalogVersion",
    "FileCatalogStore",
    "Origin",
    "RedisCatalogStore",
    "UnknownVersion",
    "VersionConflict",
    "catalog_diff",
    "catalog_keys",
    "content_hash",
    "served_catalogs",
]
