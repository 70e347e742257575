"""The Tailor server, one room per stage of the data flow (docs/architecture.md has the full map).

`_cli` (the `tailor` command) and `_app` (wiring, lifecycle) sit on top of `api` (the gRPC face),
`decisions`, `sessions`, `learning`, `state` (memory and Redis backends side by side), `catalogs` and
`core`; each imports only the rooms below it (checked by import-linter in the gate). `tools` (launcher,
simulator, local cluster) drives the server from outside and is never imported by serving code.
"""

from server.catalogs import Catalog, CatalogError, load_catalog_dir
from server.core import Limits, ServeConfig

from ._app import TailorServer

__all__ = ["Catalog", "CatalogError", "Limits", "ServeConfig", "TailorServer", "load_catalog_dir"]
