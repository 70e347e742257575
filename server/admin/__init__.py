"""Administration: catalog changes through the catalog store, served at once, and the models behind them
(export, import, reset), each audited with the caller's key name. AdminService's gRPC face is in `server.api`.

Imports: `server.decisions` (the catalogs served), `server.state`, `server.catalogs`, `server.core`.
"""

from ._admin import CatalogAdmin, Change, ModelEffect, served_catalogs

__all__ = ["CatalogAdmin", "Change", "ModelEffect", "served_catalogs"]
