"""Administration: catalog changes through the catalog store, served at once, and the models behind them
(export, import, reset), each audited with the caller's key name. AdminService's gRPC face is in `server.api`.

- `_admin.py`: `CatalogAdmin`, the catalog changes and reads.
- `_models.py`: model export/import/reset: on the served model (embedded), or as commands to the learner.

Imports: `server.decisions` (the catalogs served), `server.state`, `server.catalogs`, `server.core`.
"""

from ._admin import CatalogAdmin, Change, ModelEffect
from ._models import ExportedModel, LocalModels, ModelAdmin, SharedModels

__all__ = [
    "CatalogAdmin",
    "Change",
    "ExportedModel",
    "LocalModels",
    "ModelAdmin",
    "ModelEffect",
    "SharedModels",
]
