"""Action catalogs: what each decision point may show and how it learns, validated from YAML.

A `Catalog` is one decision point: its actions (features, payload, VW text rendered once per load) and
its policy (reward window, default reward and range, aggregation, reward rules, exploration, learning
flags). `load_catalog_dir` reads a directory; every error names the file, the field and the fix.

Imports: `server.core` and `policies` (a catalog's exploration and learning flags are policy objects).
"""

from ._catalog import (
    DECISION_POINT_PATTERN,
    MAX_CATALOG_ACTIONS,
    Catalog,
    CatalogError,
    LearningParams,
    NewActionFloor,
    PolicyConfig,
    catalog_dir_fingerprint,
    load_catalog_dir,
    load_catalog_document,
    load_catalog_file,
)

__all__ = [
    "DECISION_POINT_PATTERN",
    "MAX_CATALOG_ACTIONS",
    "Catalog",
    "CatalogError",
    "LearningParams",
    "NewActionFloor",
    "PolicyConfig",
    "catalog_dir_fingerprint",
    "load_catalog_dir",
    "load_catalog_document",
    "load_catalog_file",
]
